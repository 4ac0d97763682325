"""runtime.experiment.run end to end with a toy Task (pure torch, no timm / mmdet): the ten steps,
records, save / load of the calibrated state, and the compensation lowering the error."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from qwt_core import QwTConfig, calibrate_repq
from qwt_core.qwt.config import SOLVER_PRESETS
from runtime import distributed as dist_mod
from runtime.config import RunConfig
from runtime.errors import BadInput, CheckpointError
from runtime.experiment import CalibrationData, Context, Evaluation, Plan, run
from runtime.records import load_records
from tests.core.toy import TinyTransformer, TransformerAdapter, quantize_transformer

VAL = 8


@dataclass
class ToyConfig(RunConfig):
    SUITE: ClassVar[str] = "toy"
    FP16_EVAL: ClassVar[bool] = False  # fp32 compensation at evaluation (fast on CPU)


class ToyTask:
    """A 3-block toy transformer on random tokens; the metric is the MSE to the FP logits."""

    suite = "toy"

    def __init__(self) -> None:
        self.steps: list[str] = []

    def plan(self, cfg: RunConfig) -> Plan:
        self.steps.append("plan")
        if cfg.w_bits > 8:
            raise BadInput(f"--w-bits must be an integer in 2..8, got {cfg.w_bits}")
        methods = list(cfg.methods or ("fp", "repq", "repq+qwt"))
        return Plan("toy_transformer", methods, ["repq"] if methods != ["fp"] else [], "cpu")

    def check_state(self, ctx: Context) -> None:
        self.steps.append("check_state")
        if ctx.state.meta.get("model") != "toy":  # type: ignore[union-attr]
            raise CheckpointError("not a toy state")

    def check_inputs(self, ctx: Context) -> None:
        self.steps.append("check_inputs")

    def open_group(self, ctx: Context) -> dist_mod.DistInfo:
        return dist_mod.init_from_env("cpu")

    def build(self, ctx: Context) -> nn.Module:
        self.steps.append("build")
        torch.manual_seed(0)
        return TinyTransformer().eval()

    def check_model(self, ctx: Context, model: nn.Module) -> None:
        ctx.extra["val"] = torch.randn(VAL, 5, 12, generator=torch.Generator().manual_seed(2))

    def data(self, ctx: Context, model: nn.Module) -> CalibrationData:
        self.steps.append("data")
        x = torch.randn(256, 5, 12, generator=torch.Generator().manual_seed(1))
        return CalibrationData(x[:8], list(x.split(64)), {"calib_images": 8, "qwt_images": len(x)})

    @torch.no_grad()
    def evaluate(self, ctx: Context, net: nn.Module, method: str, ref: Any) -> Evaluation:
        self.steps.append(f"evaluate {method}")
        logits = net(ctx.extra["val"])
        mse = 0.0 if ref is None else float((logits - ref).pow(2).mean())
        return Evaluation({"mse_fp": mse}, VAL, 0.0, reference=logits if method == "fp" else None)

    def quantize(self, ctx: Context, model: nn.Module, variant: str) -> dict[str, Any]:
        self.steps.append("quantize")
        ctx.extra["pairs"] = quantize_transformer(model, ctx.cfg.w_bits)  # type: ignore[arg-type]
        return {"layers": len(ctx.extra["pairs"])}

    def calibrate(self, ctx: Context, model: nn.Module, calib: Any) -> None:
        self.steps.append("calibrate")
        calibrate_repq(model, calib, ctx.extra["pairs"])

    def blockwise(self, ctx: Context, model: nn.Module) -> TransformerAdapter:
        return TransformerAdapter(model)  # type: ignore[arg-type]

    def state_meta(self, ctx: Context, variant: str) -> dict[str, Any]:
        return {"model": "toy"}

    def after_calibration(self, ctx: Context, model: nn.Module) -> dict[str, Any]:
        return {}


def test_toy_task_runs_the_ten_steps_end_to_end(tmp_path: Path) -> None:
    task = ToyTask()
    cfg = ToyConfig(w_bits=4, a_bits=4, results_dir=str(tmp_path / "a"), save_state=str(tmp_path / "s.pt"),
                    qwt=QwTConfig(**SOLVER_PRESETS["streaming"]))
    recs = run(task, cfg)
    assert [r["method"] for r in recs] == ["fp", "repq", "repq+qwt"]
    assert task.steps == ["plan", "check_inputs", "build", "data", "evaluate fp", "quantize", "calibrate",
                          "evaluate repq", "evaluate repq+qwt"]
    fp, repq, qwt = (r["metrics"]["mse_fp"] for r in recs)
    assert fp == 0.0 and 0.0 < qwt < repq  # the compensation lowers the error to FP
    assert len(recs[2]["blocks"]) == 3 and recs[2]["times"]["qwt_s"] >= 0
    written = load_records(tmp_path / "a", "toy")
    assert sorted(r["method"] for r in written) == ["fp", "repq", "repq+qwt"]
    for r in written:  # the config as both suites record it: every field, qwt nested
        assert r["config"]["qwt"] == dataclasses.asdict(cfg.qwt) and r["config"]["eval_fp16"] is False
        assert "start_block" not in r["config"]

    again = ToyTask()
    loaded = run(again, dataclasses.replace(cfg, save_state=None, load_state=str(tmp_path / "s.pt"),
                                            results_dir=str(tmp_path / "b"), methods=("fp", "repq+qwt")))
    assert "calibrate" not in again.steps and "check_state" in again.steps
    assert loaded[1]["metrics"] == recs[2]["metrics"] and loaded[1]["config"]["loaded_state"]


def test_bad_input_writes_nothing(tmp_path: Path) -> None:
    task = ToyTask()
    with pytest.raises(BadInput, match="--w-bits"):
        run(task, ToyConfig(w_bits=9, results_dir=str(tmp_path / "r")))
    assert task.steps == ["plan"] and not (tmp_path / "r").exists()
    (tmp_path / "not_a_state.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="--load-state .*not a readable calibrated state"):
        run(ToyTask(), ToyConfig(results_dir=str(tmp_path / "r"), load_state=str(tmp_path / "not_a_state.pt")))
    assert not (tmp_path / "r").exists()
