"""save -> load gives bit-identical outputs; wrong files give clear errors; size report."""
from __future__ import annotations

import pytest
import torch

from qwt_core import QwTConfig, calibrate_repq, fit_qwt, load_state, model_size, quant_state, save_state

from .toy import TinyTransformer, TransformerAdapter, quantize_transformer


def _calibrated() -> TinyTransformer:
    model = TinyTransformer(qkv_bias=False).eval()
    calibrate_repq(model, torch.randn(8, 20, 12), quantize_transformer(model, 4))
    fit_qwt(TransformerAdapter(model), [torch.randn(8, 20, 12)], QwTConfig())
    return model


def test_save_load_bit_identical(tmp_path) -> None:
    torch.manual_seed(3)
    model = _calibrated()
    path = tmp_path / "state.pt"
    save_state(model, path, meta={"w_bits": 4})
    torch.manual_seed(99)  # a differently initialised float model of the same architecture
    fresh = TinyTransformer(qkv_bias=False).eval()
    quantize_transformer(fresh, 4)
    assert load_state(fresh, path) == {"w_bits": 4}
    x = torch.randn(5, 20, 12)
    with torch.no_grad(), quant_state(model), quant_state(fresh):
        assert torch.equal(model(x), fresh(x))
    assert not list(tmp_path.glob("*.tmp"))


def test_load_errors_name_the_file(tmp_path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"hello": 1}, bad)
    with pytest.raises(ValueError, match="bad.pt.*not a QwT calibrated state"):
        load_state(TinyTransformer(), bad)
    model = _calibrated()
    path = tmp_path / "s.pt"
    save_state(model, path)
    other = TinyTransformer(dim=16)
    quantize_transformer(other, 4)
    with pytest.raises(ValueError, match="s.pt.*does not match"):
        load_state(other, path)


def test_model_size_report() -> None:
    model = _calibrated()
    rep = model_size(model)
    lin = [m for m in model.modules() if type(m).__name__ == "QuantLinear"]
    n_w = sum(m.weight.numel() for m in lin)
    assert rep.quantized_params == n_w and rep.bits_per_weight == 4.0
    assert rep.qwt_params == 3 * (32 * 32 + 32)
    assert rep.quantized_mb == pytest.approx(n_w * 4 / 8 / 2**20)
    assert rep.qwt_mb == pytest.approx(rep.qwt_params * 2 / 2**20)
    total = sum(p.numel() for p in model.parameters())
    assert rep.quantized_params + rep.float_params + rep.qwt_params == total


def test_weights_fingerprint_tells_weights_apart() -> None:
    torch.manual_seed(0)
    a = TinyTransformer(qkv_bias=False)
    b = TinyTransformer(qkv_bias=False)
    b.load_state_dict(a.state_dict())
    from qwt_core import weights_fingerprint
    assert weights_fingerprint(a) == weights_fingerprint(b) == weights_fingerprint(a.state_dict())
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-6  # one weight, one ulp-scale change
    assert weights_fingerprint(a) != weights_fingerprint(b)
