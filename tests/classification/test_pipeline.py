"""Pipeline features: custom registered specs (the embedded demo), --val-limit, save/load state,
--checkpoint for transformers, data sampling, and the qwt_core singular-solve fix."""
from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from classification import registry
from classification.build import build_model
from classification.data import calibration_indices, calibration_sets, eval_transform, strided_indices
from classification.pipeline import ExperimentConfig, run_experiment
from qwt_core import NormalEquations
from runtime.records import load_records

from .conftest import FAST


def test_unknown_name_lists_registry() -> None:
    with pytest.raises(registry.UnknownModelError, match="valid models: vit_small vit_base"):
        registry.get("vit_huge")


def test_eval_transforms_follow_the_reference() -> None:
    def sizes(name):
        t = eval_transform(registry.get(name)).transforms
        return t[0].size, t[1].size, tuple(round(float(m), 3) for m in t[-1].mean)
    assert sizes("deit_small") == (256, (224, 224), (0.485, 0.456, 0.406))  # 224 / 0.875
    assert sizes("vit_base") == (248, (224, 224), (0.5, 0.5, 0.5))  # 224 / 0.9
    assert sizes("swin_tiny")[0] == 248 and sizes("resnet50")[0] == 256


def test_calibration_sampling_is_seeded(imagenet_dir) -> None:
    spec = registry.get("deit_tiny").tiny()
    a = calibration_sets(spec, imagenet_dir, 4, 8, seed=3, batch_size=4)
    b = calibration_sets(spec, imagenet_dir, 4, 8, seed=3, batch_size=4)
    c = calibration_sets(spec, imagenet_dir, 4, 8, seed=4, batch_size=4)
    assert torch.equal(a[0], b[0]) and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
    assert not torch.equal(a[0], c[0])
    assert calibration_indices(100, 32, 0) == calibration_indices(100, 512, 0)[:32]
    assert strided_indices(10, 3) == [0, 3, 6] and strided_indices(5, None) == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_custom_spec_with_checkpoint_val_limit_and_state(imagenet_dir, tmp_path) -> None:
    """What the embedded demo does: register a small ViT (img 32, crop 1.0, own mean/std), train
    elsewhere, pass --checkpoint; then save and reload the calibrated state."""
    spec = registry.register(registry.ModelSpec(
        "test_digits_vit", family="vit", arch="vit_tiny_patch16_224",
        kwargs=dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=4),
        input_size=32, crop_pct=1.0, mean=(0.2, 0.2, 0.2), std=(0.3, 0.3, 0.3)), overwrite=True)
    net, _ = build_model(spec, pretrained=False)
    assert isinstance(net, VisionTransformer)
    ckpt = tmp_path / "digits.pth"
    torch.save({"state_dict": net.state_dict()}, ckpt)
    cfg = dict(model="test_digits_vit", data_dir=str(imagenet_dir), checkpoint=str(ckpt),
               val_limit=5, **FAST)
    first = run_experiment(ExperimentConfig(**cfg, results_dir=str(tmp_path / "a"), save_state=str(tmp_path / "s.pt")))
    assert [r["method"] for r in first] == ["fp", "repq", "repq+qwt"]
    assert all(r["partial"] and r["images"] == 5 for r in first)
    assert first[0]["config"]["checkpoint"] == str(ckpt) and first[0]["config"]["input_size"] == 32
    again = run_experiment(ExperimentConfig(**cfg, results_dir=str(tmp_path / "b"), load_state=str(tmp_path / "s.pt")))
    for r1, r2 in zip(first, again):
        assert r1["method"] == r2["method"] and r1["metrics"] == r2["metrics"]
    assert "calibration_s" not in again[1]["times"] and again[1]["config"]["loaded_state"]
    assert len(load_records(tmp_path / "a")) == 3 and len(load_records(tmp_path / "b")) == 3
    with pytest.raises(Exception, match="was calibrated for"):
        run_experiment(ExperimentConfig(**{**cfg, "w_bits": 6}, results_dir=str(tmp_path / "c"),
                                        load_state=str(tmp_path / "s.pt")))
    assert not (tmp_path / "c").exists()


@pytest.mark.machine_kernels
def test_singular_normal_equations_give_min_norm_solution() -> None:
    """Features that sum to a constant (a LayerNorm output, e.g. Swin's first block input) make XᵀX
    singular without linalg.solve raising: the float64 solution (solver "lstsq") must stay small
    and fit. The reference's fp32 inverse of a singular matrix is rounding noise (its value moves with
    the machine's LAPACK kernels), so of it only what holds everywhere is asserted: it cannot fit
    better than the float64 least-squares solution, which is optimal on these rows."""
    torch.manual_seed(0)
    x = torch.randn(512, 16)
    x = x - x.mean(dim=1, keepdim=True)  # rows sum to 0: collinear with the ones column
    w_true = torch.randn(16, 8) * 0.1
    y = x @ w_true + 0.01 * torch.randn(512, 8)
    acc = NormalEquations(16, 8)
    acc.update(x, y)
    sol = acc.solve()
    assert sol.r2_reference <= sol.r2 + 1e-6
    assert sol.weight.abs().max() < 10 * w_true.abs().max()
    fit = x @ sol.weight[0] + sol.bias[0]
    assert float((y - fit).pow(2).mean()) < 2e-4 and sol.r2 > 0.9
    half = (x.half() @ sol.weight[0].half()).float() + sol.bias[0]  # the fp16 eval path stays accurate
    assert float((half - fit).abs().max()) < 1e-2


def test_cli_imports_a_module_that_registers_a_model(imagenet_dir, tmp_path, monkeypatch) -> None:
    (tmp_path / "extra_models_for_test.py").write_text(
        "from classification.registry import ModelSpec, register\n"
        "register(ModelSpec('test_small_resnet', family='resnet', arch='resnet18', builder='torchvision',\n"
        "                   kwargs=dict(layers=[1, 1, 1, 1], num_classes=4), input_size=32, crop_pct=1.0,\n"
        "                   mean=(0.5,) * 3, std=(0.25,) * 3), overwrite=True)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from classification.cli import main
    code = main(["--import-module", "extra_models_for_test", "--model", "test_small_resnet", "--random-init",
                 "--methods", "fp,percentile", "--data-dir", str(imagenet_dir), "--results-dir",
                 str(tmp_path / "rec"), "--calib-size", "8", "--batch-size", "8", "--workers", "0",
                 "--no-progress"])
    assert code == 0
    assert sorted(r["method"] for r in load_records(tmp_path / "rec")) == ["fp", "percentile"]
    assert main(["--import-module", "no_such_module_here", "--model", "x", "--data-dir", "y"]) == 2
