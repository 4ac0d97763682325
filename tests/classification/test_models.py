"""Every ImageNet model of the experiment registry (benchmarks/registry.py), as a tiny random-init
model of the same classes: it has a constructor of the registry's family, builds and runs, its
adapter finds every residual block, an unknown name is refused with the list of registered names;
fp -> RepQ-ViT / Percentile -> + QwT end to end with records, RepQ-ViT's reparameterization keeps
the FP function, and QwT lowers the error of the final features on held-out images."""
from __future__ import annotations

import copy

import pytest
import torch
from timm.models.swin_transformer import SwinTransformerBlock
from timm.models.vision_transformer import Block
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from benchmarks import registry as experiments
from classification import registry
from classification.adapters import for_family
from classification.build import build_model
from classification.data import calibration_sets, val_loader
from classification.pipeline import ExperimentConfig, run_experiment
from qwt_core import QwTConfig, calibrate_repq, fit_qwt, full_precision, set_quant_state
from qwt_core.qwt.compensation import CompensatedBlock
from runtime.records import load_records

from .conftest import FAST, N_CLASSES, VAL_PER_CLASS

MODELS = [m.name for m in experiments.models("imagenet")]
RESNET_ALL = ("fp", "percentile", "percentile+qwt", "percentile_strict", "percentile_strict+qwt")
#: the residual blocks QwT compensates, by class (found here without the adapters)
BLOCK_TYPES = (Block, SwinTransformerBlock, BasicBlock, Bottleneck)


def test_constructors_are_the_registered_models() -> None:
    """No model is benchmarked without a constructor, and no constructor is left out of the tables."""
    assert {s.name for s in registry.TABLE} == set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_constructor_matches_the_registry(name: str) -> None:
    spec = registry.get(name)
    assert spec.family == experiments.model(name).family
    if spec.family == "resnet":
        assert spec.checkpoint_name and spec.checkpoint_source  # the paper's release checkpoint
    else:
        assert spec.pretrained_tag, name  # pinned timm 1.x tag


def _blocks(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, BLOCK_TYPES)]


@pytest.mark.parametrize("name", MODELS)
def test_tiny_model_builds_and_its_adapter_finds_every_block(name: str) -> None:
    model, spec = build_model(name, tiny=True)
    x = torch.randn(2, 3, spec.input_size, spec.input_size)  # (B, C, H, W)
    with torch.no_grad():
        logits = model.eval()(x)
    assert logits.shape == (2, spec.kwargs["num_classes"]) and torch.isfinite(logits).all()
    steps = for_family(spec.family).blockwise(model).steps()
    assert [s.name for s in steps] == _blocks(model) != []


def test_unknown_model_lists_the_registered_ones() -> None:
    with pytest.raises(registry.UnknownModelError) as err:
        build_model("deit_huge", tiny=True)
    message = str(err.value)
    assert "deit_huge" in message and all(name in message.split() for name in MODELS)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_end_to_end_records(name: str, imagenet_dir, tmp_path) -> None:
    family = registry.get(name).family
    if family == "resnet":  # both variants once (resnet18); the reference rows for the others
        methods = RESNET_ALL if name == "resnet18" else ("fp", "percentile", "percentile+qwt")
    else:
        methods = ("fp", "repq", "repq+qwt")
    cfg = ExperimentConfig(model=name, data_dir=str(imagenet_dir), tiny=True, methods=methods,
                           results_dir=str(tmp_path), qwt=QwTConfig(factor=16), **FAST)
    returned = run_experiment(cfg)
    records = load_records(tmp_path, "imagenet")
    assert sorted(r["method"] for r in records) == sorted(methods) == sorted(r["method"] for r in returned)
    n_blocks = len(for_family(family).blockwise(build_model(name, tiny=True)[0]).steps())
    for r in records:
        assert r["model"] == name and r["suite"] == "imagenet" and r["seed"] == 0
        assert r["images"] == N_CLASSES * VAL_PER_CLASS and r["partial"] is False
        assert 0 <= r["metrics"]["top1"] <= r["metrics"]["top5"] <= 100
        assert r["model_size"]["total_mb"] > 0
        assert r["config"]["tiny"] is True
        if r["method"] == "fp":
            assert r["w_bits"] is None and r["a_bits"] is None
            continue
        assert (r["w_bits"], r["a_bits"]) == (4, 4)
        assert 0 <= r["metrics"]["agreement_fp"] <= 100 and r["metrics"]["kl_fp"] >= 0
        assert r["times"]["calibration_s"] > 0 and r["times"]["eval_s"] > 0
        if r["method"].endswith("+qwt"):
            assert len(r["blocks"]) == n_blocks
            assert {"r2", "mse_before", "mse_after", "applied", "name"} <= set(r["blocks"][0])
            assert r["model_size"]["qwt_params"] > 0 and r["times"]["qwt_s"] > 0
        else:
            assert r["blocks"] == [] and r["model_size"]["qwt_params"] == 0
    if name == "resnet18":  # the reference quantizes conv inputs at 8 bits, strict at a_bits
        by = {r["method"]: r for r in records}
        layers = by["percentile"]["config"]["layers"]
        assert layers == {"w8a8": 2, "w4a8": sum(layers.values()) - 2}
        assert "w4a4" in by["percentile_strict"]["config"]["layers"]


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).mean())


@pytest.mark.parametrize("name", MODELS)
def test_reparam_keeps_fp_and_qwt_lowers_heldout_error(name: str, imagenet_dir) -> None:
    model, spec = build_model(name, tiny=True)
    adapter = for_family(spec.family)
    calib, qwt = calibration_sets(spec, imagenet_dir, 8, 32, seed=0, batch_size=8)
    heldout = next(iter(val_loader(spec, imagenet_dir, batch_size=16, workers=0)))[0]  # val: not in qwt
    ref = adapter.features(model, heldout)

    q = copy.deepcopy(model)
    adapter.quantize(q, 4, 4, adapter.methods[-1])
    calibrate_repq(q, calib, adapter.reparam_pairs(q))
    with full_precision(q):  # reparameterized, unquantized: the same function
        torch.testing.assert_close(adapter.features(q, heldout), ref, atol=2e-4, rtol=1e-4)
    set_quant_state(q, weight=True, act=True)
    before = _mse(adapter.features(q, heldout), ref)
    reports = fit_qwt(adapter.blockwise(q), qwt, QwTConfig(factor=16))
    after = _mse(adapter.features(q, heldout), ref)
    assert before > 0
    assert after < before, f"{name}: QwT raised the held-out feature error {before:.4g} -> {after:.4g}"
    assert all(isinstance(q.get_submodule(r.name), CompensatedBlock) for r in reports)
    assert any(r.applied for r in reports)
