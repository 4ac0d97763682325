"""The run configuration both suites share, and the command line generated from it.

:class:`RunConfig` holds the settings of one experiment that mean the same in both suites (data,
weights, bits, methods, device, sizes, evaluation arithmetic, outputs) and the QwT settings as one
nested :class:`qwt_core.QwTConfig` (treated as an opaque dataclass: its fields can change). Each
suite subclasses it with its own fields (``ClassificationConfig``, ``DetectionConfig``).

:func:`build_parser` turns a config class into an argparse parser: one flag per field, its help
the comment on the field (``x: int = 0  # help``, or the comment lines just above it), QwT fields
as ``--qwt-<field>``. Old flag names keep working through :data:`DEPRECATED` with one line on
stderr. :func:`config_from_args` builds the config back; :func:`record_config` is how both suites
write it into a record (``qwt`` nested, from ``dataclasses.asdict``).
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

from qwt_core import QwTConfig
from qwt_core.qwt.arithmetic import EvalArithmetic
from qwt_core.qwt.config import SOLVER_PRESETS

from .errors import EXIT_BAD_INPUT, BadInput
from .preflight import default_workers
from .records import RECORDS_DIR

DEFAULT_CHECKPOINT_DIR = "checkpoints"
QWT_PREFIX = "qwt_"
#: old flag -> canonical flag (both CLIs; the old one still works, with one line on stderr)
DEPRECATED: dict[str, str] = {
    "--data-root": "--data-dir",
    "--ckpt-dir": "--checkpoint-dir",
    "--start-block": "--qwt-start-block",
    "--kernel-size": "--qwt-kernel-size",
    "--factor": "--qwt-factor",
    "--random-init": "--no-pretrained",
}


@dataclass
class RunConfig:
    """One experiment, the settings both suites share (every default is the reference's)."""

    SUITE: ClassVar[str] = ""
    WORKERS: ClassVar[int] = 2  # the suite's default loader workers (capped at the CPUs available)
    FP16_EVAL: ClassVar[bool] = True  # the suite's reference evaluation arithmetic for the compensation

    # dataset root (ImageNet: train/ and val/ class folders; COCO 2017: annotations/, val2017/, train2017/)
    data_dir: str | None = None
    checkpoint: str | None = None  # weights file replacing the default (pretrained / release) weights
    # folder of the release checkpoints and local weights (make: CKPT_DIR)
    checkpoint_dir: str = DEFAULT_CHECKPOINT_DIR
    w_bits: int = 4  # weight bits, 2..8
    a_bits: int = 4  # activation bits, 2..8
    methods: tuple[str, ...] | None = None  # comma list (default: the model's fp, <method>, <method>+qwt)
    device: str | None = None  # cpu, cuda or cuda:N (default: cuda when torch sees a GPU, else cpu)
    seed: int = 0  # calibration sampling seed, >= 0
    workers: int | None = None  # loader workers, >= 0 (default: the suite's, at most the CPUs available)
    val_limit: int | None = None  # evaluate only N >= 1 val images (recorded as partial; default: all)
    qwt_size: int = 512  # QwT regression images (reference 512)
    # QwT compensation in fp16 at evaluation (default: the suite's reference: classification on, detection off)
    eval_fp16: bool | None = None
    # fp16 evaluation arithmetic: native fp16 (the reference, bit for bit) or emulated (fp16 operands and
    # result, fp32 product: fast on CPUs)
    half_arith: Literal["native", "emulated"] = "native"
    save_state: str | None = None  # write the calibrated state to this file (with a fingerprint of the FP weights)
    # load a calibrated state instead of calibrating (same model, method, bits and FP weights)
    load_state: str | None = None
    results_dir: str | None = str(RECORDS_DIR)  # record root (default results/records)
    progress: bool = True  # progress bars on stderr
    command: str | None = field(default=None, metadata={"flag": False})  # recorded command line
    qwt: QwTConfig = field(default_factory=QwTConfig)  # QwT settings (flags --qwt-<field>)

    def __post_init__(self) -> None:
        if self.workers is None:
            self.workers = default_workers(self.WORKERS)
        if self.methods is not None:
            self.methods = tuple(self.methods)

    @property
    def fp16_eval(self) -> bool:
        """The evaluation arithmetic of the compensation (the suite's reference unless set)."""
        return self.FP16_EVAL if self.eval_fp16 is None else self.eval_fp16

    def arithmetic(self) -> EvalArithmetic:
        """The run's evaluation arithmetic of the compensation (ValueError on a bad half_arith)."""
        return EvalArithmetic(self.fp16_eval, self.half_arith)

    def check_shared(self) -> None:
        """The checks of the settings both suites share (BadInput, one line)."""
        if self.val_limit is not None and self.val_limit < 1:
            raise BadInput("--val-limit must be >= 1 (omit it to evaluate every val image), "
                           f"got {self.val_limit}")
        try:
            self.arithmetic()
        except ValueError as e:
            raise BadInput(f"QwT options: {e}") from None



def record_config(cfg: RunConfig) -> dict[str, Any]:
    """The config as both suites write it into a record: every field, ``qwt`` nested."""
    out = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "qwt" and f.metadata.get("record", True)}
    out["methods"] = list(cfg.methods) if cfg.methods is not None else None
    out["eval_fp16"] = cfg.fp16_eval
    out["qwt"] = dataclasses.asdict(cfg.qwt)
    return json.loads(json.dumps(out, default=str))


def field_help(cls: type) -> dict[str, str]:
    """The comment of each field of a dataclass and its bases: the inline ``# ...`` after the
    field, preceded by the comment lines just above it."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):
            continue
        above: list[str] = []
        for line in lines:
            s = line.strip()
            if s.startswith("#"):
                above.append(s.lstrip("#").strip())
                continue
            m = re.match(r"^(\w+)\s*:[^#]*?(?:#\s*(.*))?$", s)
            if m and not s.startswith(("def ", "class ", "return")):
                text = " ".join([*above, m.group(2) or ""]).strip()
                if text:
                    out[m.group(1)] = text
            above = []
    return out


def flag_of(name: str, qwt: bool = False) -> str:
    """The canonical flag of a config field (``--qwt-<field>`` for a QwT field)."""
    return "--" + ((QWT_PREFIX if qwt else "") + name).replace("_", "-")


def _bits(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bits must be an integer in 2..8, got {text!r}") from None
    check_bits_value(value, "bits")
    return value


def check_bits_value(value: Any, what: str) -> int:
    """Bits are an integer in 2..8 (the one check of both suites)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= 8:
        err = argparse.ArgumentTypeError if what == "bits" else BadInput
        raise err(f"{what} must be an integer in 2..8, got {value!r}")
    return value


def _methods(text: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in text.split(",") if m.strip())


def _json_object(name: str):
    def parse(text: str) -> dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(f"{name} must be a JSON object: {e}") from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"{name} must be a JSON object")
        return value
    return parse


def _strip_optional(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)) \
        and len(args) == 1 else tp


def _add_field(p: argparse.ArgumentParser, f: dataclasses.Field, tp: Any, help_text: str, dest: str,
               flag: str) -> None:
    tp = _strip_optional(tp)
    default = f.default if f.default is not dataclasses.MISSING else None
    kw: dict[str, Any] = {"dest": dest, "help": help_text}
    origin = typing.get_origin(tp)
    if tp is bool:
        if default is True:
            kw["help"] = f"turn off (default on): {help_text}"
            p.add_argument("--no-" + flag[2:], action="store_false", default=True, **kw)
        elif default is None:  # a tri-state: unset means the suite's default
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, **kw)
        else:
            p.add_argument(flag, action="store_true", default=default, **kw)
        return
    if origin is Literal:
        kw["choices"] = typing.get_args(tp)
    elif dest.endswith("_bits"):
        kw["type"] = _bits
    elif origin is tuple:
        kw["type"] = _methods
    elif origin is dict or tp is dict:
        kw["type"] = _json_object(flag)
    elif tp in (int, float, str):
        kw["type"] = tp
    p.add_argument(flag, default=f.default_factory() if f.default_factory is not dataclasses.MISSING
                   else default, **kw)


class Parser(argparse.ArgumentParser):
    error_prefix = "error: "

    def error(self, message: str) -> typing.NoReturn:  # one line, exit 2 (argparse prints the usage too)
        self.exit(EXIT_BAD_INPUT, f"{self.error_prefix}{message}\n")


def build_parser(cls: type[RunConfig], prog: str, description: str,
                 required: Sequence[str] = (), extra_help: dict[str, str] | None = None,
                 error_prefix: str = "error: ") -> argparse.ArgumentParser:
    """One flag per field of ``cls`` (help from the field comments, ``extra_help`` overriding),
    then one per QwTConfig field as ``--qwt-<field>``; ``required`` fields must be given."""
    p = Parser(prog=prog, description=description)
    p.error_prefix = error_prefix
    hints = typing.get_type_hints(cls)
    helps = {**field_help(cls), **(extra_help or {})}
    for f in fields(cls):
        if f.name == "qwt" or f.metadata.get("flag") is False:
            continue
        _add_field(p, f, hints[f.name], helps.get(f.name, ""), f.name, flag_of(f.name))
        if f.name in required:
            p._option_string_actions[flag_of(f.name)].required = True
    qhints = typing.get_type_hints(QwTConfig)
    qhelps = field_help(QwTConfig)
    for f in fields(QwTConfig):
        _add_field(p, f, qhints[f.name], "QwT: " + qhelps.get(f.name, ""), QWT_PREFIX + f.name,
                   flag_of(f.name, qwt=True))
    if "--qwt-solver" not in p._option_string_actions:  # named presets of QwT fields
        p.add_argument("--qwt-solver", choices=sorted(SOLVER_PRESETS), default=None, dest="qwt_solver_preset",
                       help="QwT: a named preset of "
                       + ", ".join(sorted({k for v in SOLVER_PRESETS.values() for k in v})))
    return p


def undeprecate(argv: Sequence[str], known: Sequence[str], warn: Any = None) -> list[str]:
    """``argv`` with every deprecated flag (``--data-root x`` or ``--data-root=x``) renamed to its
    canonical flag, one line on stderr per renamed flag. Flags in ``known`` are left alone (a
    suite that still has its own flag of that name)."""
    out = []
    for a in argv:
        name, eq, value = a.partition("=")
        if name in DEPRECATED and name not in known:
            new = DEPRECATED[name]
            print(f"warning: {name} is deprecated, use {new}", file=warn or sys.stderr)
            a = new + eq + value
        out.append(a)
    return out


def config_from_args(cls: type[RunConfig], args: argparse.Namespace, **extra: Any) -> RunConfig:
    """The config of parsed ``args`` (QwT fields nested; ValueError from QwTConfig becomes BadInput)."""
    ns = vars(args)
    qwt_kwargs = {f.name: ns[QWT_PREFIX + f.name] for f in fields(QwTConfig) if QWT_PREFIX + f.name in ns}
    preset = ns.get("qwt_solver_preset")
    if preset:
        qwt_kwargs.update(SOLVER_PRESETS[preset])
    try:
        qwt = QwTConfig(**qwt_kwargs)
    except ValueError as e:
        raise BadInput(f"QwT options: {e}") from None
    kwargs = {f.name: ns[f.name] for f in fields(cls) if f.name in ns}
    return cls(**kwargs, qwt=qwt, **extra)
