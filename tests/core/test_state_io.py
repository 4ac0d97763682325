"""save -> load gives bit-identical outputs; wrong files give clear errors; size report."""
from __future__ import annotations

import pytest
import torch

from qwt_core import (
    CompensatedBlock,
    QwTConfig,
    calibrate_repq,
    eval_arithmetic,
    fit_qwt,
    load_state,
    model_size,
    quant_state,
    save_state,
)

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


def test_state_carries_no_evaluation_arithmetic_and_old_files_load(tmp_path) -> None:
    """The specs saved hold the geometry only; a file written before the evaluation arithmetic was
    a context (its specs carry ``fp16_eval`` / ``half_arith``) loads the same, and the reloaded
    model follows :func:`eval_arithmetic` whatever the file says."""
    torch.manual_seed(4)
    model = _calibrated()
    path = tmp_path / "state.pt"
    save_state(model, path)
    payload = torch.load(path, weights_only=False)
    assert all(set(spec) == {"kind", "in_dim", "out_dim"} for spec in payload["compensated"].values())
    for spec in payload["compensated"].values():  # as an older version wrote them
        spec.update(fp16_eval=False, half_arith="emulated")
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    fresh = TinyTransformer(qkv_bias=False).eval()
    quantize_transformer(fresh, 4)
    load_state(fresh, old)
    assert any(isinstance(m, CompensatedBlock) for m in fresh.modules())
    x = torch.randn(5, 20, 12)
    with torch.no_grad(), quant_state(model), quant_state(fresh):
        assert torch.equal(model(x), fresh(x))
        with eval_arithmetic(fp16=False):
            assert torch.equal(model(x), fresh(x))
    # each reloaded compensation evaluates the fp16 product by default, not the file's fp32 one
    comp = next(m.compensation for m in fresh.modules()
                if isinstance(m, CompensatedBlock) and m.compensation.weight.abs().sum() > 0)
    t = torch.randn(5, 20, comp.weight.shape[0])
    with torch.no_grad():
        assert torch.equal(comp(t), (t.half() @ comp.weight.half()).float() + comp.bias)
        with eval_arithmetic(fp16=False):
            assert torch.equal(comp(t), t @ comp.weight + comp.bias)


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


def test_read_state_info_without_a_model_and_one_line_errors(tmp_path) -> None:
    from qwt_core.state_io import StateFileError, read_state_info

    torch.manual_seed(3)
    path = tmp_path / "state.pt"
    save_state(_calibrated(), path, meta={"model": "toy", "weights_fingerprint": "abc"})
    info = read_state_info(path)
    assert info.meta == {"model": "toy", "weights_fingerprint": "abc"} and info.has_qwt
    (tmp_path / "text.pt").write_text("not a state\n")
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:300])
    torch.save({"a": torch.zeros(2)}, tmp_path / "other.pt")
    for name, needle in (("text.pt", "not a readable calibrated state"), ("cut.pt", "not a readable calibrated state"),
                         ("other.pt", "expected format qwt-state/1"), ("missing.pt", "does not exist"),
                         ("", "is a folder")):
        with pytest.raises(StateFileError, match=needle) as e:
            read_state_info(tmp_path / name)
        assert "\n" not in str(e.value)


def test_failed_save_leaves_no_partial_file(tmp_path, monkeypatch) -> None:
    import qwt_core.state_io as state_io

    def save_then_fail(obj, f) -> None:  # writes part of the file, then the disk is full
        open(f, "wb").write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state_io.torch, "save", save_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_state(TinyTransformer().eval(), tmp_path / "state.pt")
    assert list(tmp_path.iterdir()) == []
