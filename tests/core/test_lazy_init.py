"""Quantizers that no calibration pass reaches: an error by default (classification), or, with
``calibrate_repq(..., unreached="lazy")``, initialised on the first data that reaches them later,
as the reference's quantizers are (detection: mask heads when the calibration image yields no
detection)."""
from __future__ import annotations

import logging

import pytest
import torch
from torch import Tensor, nn

from qwt_core import LayerSpec, calibrate_repq, quantize_layers, quantizers, set_quant_state, uncalibrated
from qwt_core.quant.quantizers import UniformQuantizer


class Branchy(nn.Module):
    """``trunk`` always runs; ``branch`` only when ``use_branch`` (like a mask head)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk, self.branch = nn.Linear(8, 16), nn.Linear(16, 4)
        self.use_branch = False

    def forward(self, x: Tensor) -> Tensor:
        y = self.trunk(x)
        return self.branch(y) if self.use_branch else y


def _model() -> Branchy:
    torch.manual_seed(0)
    return quantize_layers(Branchy(), {"trunk": LayerSpec(4, 4), "branch": LayerSpec(4, 4)})


BRANCH = {"branch.weight_quantizer", "branch.input_quantizer"}


def test_unreached_quantizers_raise_by_default():
    m = _model()
    with pytest.raises(RuntimeError, match="2 quantizers saw no data during calibration"):
        calibrate_repq(m, torch.randn(32, 8))
    with pytest.raises(ValueError, match="unreached"):
        calibrate_repq(_model(), torch.randn(32, 8), unreached="skip")  # type: ignore[arg-type]


def test_lazy_quantizers_initialise_on_first_use_and_log_once(caplog):
    m = _model()
    with caplog.at_level(logging.WARNING, logger="qwt_core"):
        lazy = calibrate_repq(m, torch.randn(32, 8), unreached="lazy")
    assert set(lazy) == BRANCH == set(uncalibrated(m))
    (msg,) = [r.getMessage() for r in caplog.records if r.name == "qwt_core.calibrate"]
    assert msg.startswith("2 quantizers saw no data during calibration") and "branch." in msg
    caplog.clear()

    set_quant_state(m, weight=True, act=True)
    m.use_branch = True
    x = torch.randn(24, 8)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="qwt_core"):
        y1 = m(x)
        y2 = m(x)  # initialised now: no second initialisation, no second log line
    assert uncalibrated(m) == []
    logged = [r.getMessage() for r in caplog.records if r.name == "qwt_core.quant"]
    assert len(logged) == 2 and {s.split()[1] for s in logged} == BRANCH
    assert all("saw no data during calibration" in s for s in logged)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    # the lazily initialised input range is the one a calibration pass would give on that data
    with torch.no_grad():
        branch_in = m.trunk(x)
    ref = UniformQuantizer(4)
    ref.initialise(branch_in)
    assert torch.equal(m.branch.input_quantizer.delta, ref.delta)
    assert torch.equal(m.branch.input_quantizer.zero_point, ref.zero_point)
    with torch.no_grad():  # and the branch output is the quantized product with those ranges
        want = nn.functional.linear(ref.quantize(branch_in),
                                    m.branch.weight_quantizer.quantize(m.branch.weight), m.branch.bias)
    torch.testing.assert_close(y1, want, rtol=0, atol=0)


def test_lazy_flag_survives_a_state_dict_round_trip():
    m = _model()
    calibrate_repq(m, torch.randn(32, 8), unreached="lazy")
    again = _model()
    again.load_state_dict(m.state_dict())
    flags = {n: q.init_on_first_use for n, q in quantizers(again)}
    assert {n for n, f in flags.items() if f} == BRANCH
    set_quant_state(again, weight=True, act=True)
    again.use_branch = True
    with torch.no_grad():
        again(torch.randn(4, 8))  # initialises instead of raising
    assert uncalibrated(again) == []
    strict = _model()  # without the flag an uninitialised quantizer still refuses to run
    calibrate_repq(strict, torch.randn(32, 8), unreached="lazy")
    for _, q in quantizers(strict):
        q.init_on_first_use = False
    set_quant_state(strict, weight=True, act=True)
    strict.use_branch = True
    with pytest.raises(RuntimeError, match="not calibrated"):
        strict(torch.randn(4, 8))
