"""Quant-state switches are context managers that restore state, also on errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from qwt_core import (
    LayerSpec,
    QuantLinear,
    calibration,
    full_precision,
    quant_state,
    quantize_layers,
    quantizers,
    set_quant_state,
    uncalibrated,
)
from qwt_core.quant.quantizers import UniformQuantizer, check_bits


def _model() -> nn.Module:
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    return quantize_layers(m, {"0": LayerSpec(4, 4), "2": LayerSpec(4, 4)})


def _states(m: nn.Module) -> list[bool]:
    return [q.enabled for _, q in quantizers(m)]


def test_quant_state_restores_on_exception() -> None:
    m = _model()
    set_quant_state(m, weight=True, act=False)
    before = _states(m)
    with pytest.raises(ZeroDivisionError):
        with quant_state(m, weight=False, act=True):
            assert _states(m) != before
            _ = 1 / 0
    assert _states(m) == before
    with pytest.raises(KeyError):
        with full_precision(m):
            assert not any(_states(m))
            raise KeyError("x")
    assert _states(m) == before


def test_calibration_restores_on_exception_and_initialises() -> None:
    m = _model()
    with pytest.raises(RuntimeError, match="not calibrated"):
        with quant_state(m):
            m(torch.randn(2, 8))
    with pytest.raises(ValueError):
        with calibration(m):
            raise ValueError
    assert not any(_states(m)) and all(not q.calibrating for _, q in quantizers(m))
    with calibration(m):
        m(torch.randn(32, 8))
    assert uncalibrated(m) == []
    assert not any(q.calibrating for _, q in quantizers(m))


def test_quantized_output_differs_and_fp_matches_float() -> None:
    ref = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    m = quantize_layers(ref, {"0": LayerSpec(3, 3), "2": LayerSpec(3, 3)})
    x = torch.randn(64, 8)
    with calibration(m):
        m(x)
    with full_precision(m):
        fp = m(x)
    plain = torch.nn.functional.linear(torch.relu(torch.nn.functional.linear(x, m[0].weight, m[0].bias)),
                                       m[2].weight, m[2].bias)
    torch.testing.assert_close(fp, plain)
    with quant_state(m):
        assert not torch.allclose(m(x), fp)
    assert isinstance(m[0], QuantLinear)


def test_bits_validation() -> None:
    for bad in (1, 9, 4.0, "4"):
        with pytest.raises(ValueError, match="2..8"):
            check_bits(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LayerSpec(4, 9)


def test_quantizer_state_dict_roundtrip_changes_shape() -> None:
    q = UniformQuantizer(4, channel_dim=-1)
    q.enabled = q.calibrating = True
    q(torch.randn(10, 6))
    q2 = UniformQuantizer(4)  # per tensor, delta shape ()
    q2.load_state_dict(q.state_dict())
    assert q2.channel_dim == -1 and q2.inited and q2.delta.shape == (6,)
    q2.enabled = True
    x = torch.randn(3, 6)
    q.calibrating = False
    torch.testing.assert_close(q(x), q2(x), rtol=0, atol=0)
