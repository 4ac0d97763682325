"""runtime.config: one flag vocabulary for both CLIs, generated from the run config's fields;
deprecated names map with one line; both suites record the QwT settings the same way."""
from __future__ import annotations

import dataclasses
import io

import pytest

from classification.cli import build_parser as classification_parser
from classification.config import ClassificationConfig
from detection.cli import parser as detection_parser
from detection.config import DetectionConfig
from qwt_core import QwTConfig
from runtime.config import (
    DEPRECATED,
    RunConfig,
    config_from_args,
    field_help,
    flag_of,
    record_config,
    undeprecate,
)


def _flags(p) -> set[str]:
    return {s for a in p._actions for s in a.option_strings}


def test_both_clis_share_the_run_config_flags() -> None:
    cls, det = _flags(classification_parser()), _flags(detection_parser())
    shared = {flag_of(f.name) for f in dataclasses.fields(RunConfig)
              if f.metadata.get("flag", True) and f.name not in ("qwt", "progress")}
    qwt = {flag_of(f.name, qwt=True) for f in dataclasses.fields(QwTConfig)}
    assert shared | qwt | {"--no-progress", "--qwt-store", "--half-arith", "--data-dir",
                           "--checkpoint-dir"} <= cls & det


def test_help_comes_from_the_field_comments() -> None:
    helps = field_help(QwTConfig)
    assert "grouped-conv" in helps["factor"]
    text = " ".join(classification_parser().format_help().split())
    assert "QwT: " + " ".join(helps["factor"].split()) in text  # one help string, from QwTConfig


@pytest.mark.parametrize("old, new", sorted(DEPRECATED.items()))
def test_deprecated_flags_map_with_one_line(old: str, new: str) -> None:
    err = io.StringIO()
    assert undeprecate([old, "3", "--w-bits", "4"], (), warn=err) == [new, "3", "--w-bits", "4"]
    assert err.getvalue() == f"warning: {old} is deprecated, use {new}\n"
    assert undeprecate([f"{old}=3"], (), warn=io.StringIO()) == [f"{new}=3"]


def test_old_names_parse_into_the_typed_config() -> None:
    err = io.StringIO()
    argv = undeprecate(["--data-root", "/coco", "--ckpt-dir", "/ck", "--start-block", "2", "--factor", "16",
                        "--config", "x.py", "--qwt-store", "cpu"], (), warn=err)
    cfg = config_from_args(DetectionConfig, detection_parser().parse_args(argv))
    assert isinstance(cfg, DetectionConfig) and (cfg.data_dir, cfg.checkpoint_dir) == ("/coco", "/ck")
    assert (cfg.qwt.start_block, cfg.qwt.factor, cfg.qwt.store) == (2, 16, "cpu")
    assert len(err.getvalue().splitlines()) == 4
    argv = undeprecate(["--model", "deit_tiny", "--data-dir", "d", "--random-init", "--half-arith", "emulated"], (),
                       warn=io.StringIO())
    cfg = config_from_args(ClassificationConfig, classification_parser().parse_args(argv))
    assert isinstance(cfg, ClassificationConfig) and cfg.pretrained is False and cfg.half_arith == "emulated"


def test_both_suites_record_the_qwt_settings_the_same_way() -> None:
    """Nested, from dataclasses.asdict of the QwT config; the evaluation arithmetic is run-level
    (classification: fp16 by default, detection: fp32)."""
    c, d = record_config(ClassificationConfig()), record_config(DetectionConfig())
    assert c["qwt"].keys() == d["qwt"].keys() == dataclasses.asdict(QwTConfig()).keys()
    assert (c["eval_fp16"], d["eval_fp16"]) == (True, False)

    assert not {k for k in c if k in ("start_block", "kernel_size", "factor", "qwt_solver", "qwt_store")}
    assert not {k for k in d if k in ("start_block", "kernel_size", "factor", "qwt_solver", "qwt_store")}
