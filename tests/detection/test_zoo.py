"""Any mmdet 3.x detector with a Swin or ResNet backbone: mmdet's own configs (random-init, tiny
images) through the CLI to records, the ResNet plan, save/load of the calibrated state, and the
one-line refusal of other backbones."""
from __future__ import annotations

import pytest
import torch

from detection.registry import ZOO_DETECTORS
from runtime.records import load_records

from .zoo_helpers import build_random, tiny_zoo_config, zoo_checkpoint

pytestmark = [pytest.mark.detection]

MASK_R50 = "mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py"


def _cli(args):
    from detection.cli import main

    return main([str(a) for a in args])


class _Zoo(dict):
    """registry name -> (tiny config, random-init openmmlab-layout checkpoint), built on first use."""

    def __init__(self, folder) -> None:
        super().__init__()
        self.folder = folder

    def __missing__(self, name: str):
        cfg = tiny_zoo_config(ZOO_DETECTORS[name].config, self.folder / f"tiny_{name}.py")
        self[name] = (cfg, zoo_checkpoint(cfg, self.folder / f"{name}.pth"))
        return self[name]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return _Zoo(tmp_path_factory.mktemp("zoo"))


def _one_line_refusal(capsys, args, results):
    try:
        rc = _cli([*args, "--results-dir", results, "--device", "cpu", "--workers", 0])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("qwt-detect: error: "), err
    assert not results.exists() or not any(results.rglob("*.json"))
    return err


# --- configs and refusal -------------------------------------------------------------------------

def test_mmdet_configs_resolve_from_the_installed_package(tmp_path):
    from detection.mmdet_configs import ConfigNotFound, mmdet_config_dir, resolve_config

    p = resolve_config(MASK_R50)
    assert p.is_file() and p.is_relative_to(mmdet_config_dir())
    assert resolve_config("configs/retinanet/retinanet_r50_fpn_1x_coco.py").is_file()
    local = tmp_path / "x.py"
    local.write_text("a = 1\n")
    assert resolve_config(str(local)) == local
    with pytest.raises(ConfigNotFound, match="mask_rcnn/nope.py"):
        resolve_config("mmdet::mask_rcnn/nope.py")
    for det in ZOO_DETECTORS.values():
        assert det.config_path.is_file() and det.checkpoint.endswith(".pth")


def test_backbone_kinds_of_the_registered_and_other_configs():
    from mmengine.config import Config

    from detection.backbones import BackboneError, backbone_kind
    from detection.mmdet_configs import resolve_config

    for det in ZOO_DETECTORS.values():
        assert backbone_kind(Config.fromfile(str(det.config_path)).model) == det.backbone
    cases = {"mmdet::hrnet/faster-rcnn_hrnetv2p-w18-1x_coco.py": "HRNet",
             "mmdet::regnet/cascade-mask-rcnn_regnetx-1.6GF_fpn_ms-3x_coco.py": "RegNet",
             "mmdet::dcn/mask-rcnn_r50-dconv-c3-c5_fpn_1x_coco.py": "dcn",
             "mmdet::mask_rcnn/mask-rcnn_x101-32x4d_fpn_1x_coco.py": None,
             "mmdet::resnet_strikes_back/mask-rcnn_r50-rsb-pre_fpn_1x_coco.py": None}
    for spec, refused in cases.items():
        model = Config.fromfile(str(resolve_config(spec))).model
        if refused is None:
            assert backbone_kind(model) == "resnet"
        else:
            with pytest.raises(BackboneError, match=refused):
                backbone_kind(model)


def test_unsupported_backbone_is_refused_in_one_line_before_any_work(capsys, tmp_path, coco_root):
    # no checkpoint exists: the refusal comes before the checkpoint (and data) checks
    err = _one_line_refusal(capsys, ["--config", "mmdet::hrnet/faster-rcnn_hrnetv2p-w18-1x_coco.py",
                                     "--data-dir", coco_root, "--checkpoint", tmp_path / "none.pth"],
                            tmp_path / "r")
    assert "backbone HRNet is not supported" in err and "ResNet, ResNetV1d, ResNeXt" in err
    assert "SwinTransformer" in err


def test_methods_of_the_other_backbone_are_refused(capsys, tmp_path, coco_root, zoo):
    cfg, ckpt = zoo["mask_rcnn_r50_fpn_1x"]
    err = _one_line_refusal(capsys, ["--config", cfg, "--data-dir", coco_root, "--checkpoint", ckpt,
                                     "--methods", "fp,repq"], tmp_path / "r")
    assert "ResNet backbone" in err and "percentile+qwt" in err
    err = _one_line_refusal(capsys, ["--config", cfg, "--data-dir", coco_root, "--checkpoint", ckpt,
                                     "--methods", "percentile,percentile+qwt", "--qwt-img-size", 100],
                            tmp_path / "r")
    assert "multiple of 32" in err


# --- the ResNet plan ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["percentile", "percentile_strict"])
def test_resnet_detector_plan(zoo, method):
    from detection import cnn

    model = build_random(zoo["mask_rcnn_r50_fpn_1x"][0])
    plan = cnn.build_plan(model, 4, 4, method)
    convs = {n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    assert set(plan) == convs  # every Conv2d / Linear, the mask head's ConvTranspose2d is not one
    assert not any(isinstance(model.get_submodule(n), torch.nn.ConvTranspose2d) for n in plan)
    assert (plan["backbone.conv1"].w_bits, plan["backbone.conv1"].a_bits) == (8, 8)
    conv_a = 8 if method == "percentile" else 4
    backbone = [s for n, s in plan.items() if n.startswith("backbone.") and n != "backbone.conv1"]
    # R50: 3*16 + 4 downsample
    assert len(backbone) == 52 and all((s.w_bits, s.a_bits) == (4, conv_a) for s in backbone)
    rest = [s for n, s in plan.items() if not n.startswith("backbone.")]
    assert rest and all((s.w_bits, s.a_bits, s.act_channel_wise) == (4, 4, False) for s in rest)
    adapter = cnn.ResNetBackboneAdapter(model)
    assert [s.name for s in adapter.steps()][:4] == ["backbone.layer1.0", "backbone.layer1.1",
                                                     "backbone.layer1.2", "backbone.layer2.0"]
    assert len(adapter.steps()) == 16 and all(s.kind == "conv" for s in adapter.steps())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # embed + every block = the backbone's last output
        h = adapter.embed(x)
        for s in adapter.steps():
            h = model.get_submodule(s.name)(h)
        assert torch.equal(h, model.backbone(x)[-1])


def _identical(a, b) -> bool:
    """Nested dicts / lists of tensors and plain values, equal bit for bit (same dtypes)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_identical(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b))
    return a == b


# --- end to end ----------------------------------------------------------------------------------

QUANT = {"mask_rcnn_r50_fpn_1x": "percentile", "retinanet_r50_fpn_1x": "percentile",
         "mmdet_mask_rcnn_swin_t_3x": "repq"}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO_DETECTORS))
def test_zoo_detector_runs_to_records_and_reloads_bit_identically(zoo, coco_root, tmp_path, name):
    cfg, ckpt = zoo[name]
    base = QUANT[name]
    methods = f"fp,{base},{base}+qwt"
    results, state = tmp_path / "records", tmp_path / "state.pth"
    common = ["--config", cfg, "--data-dir", coco_root, "--device", "cpu", "--val-limit", 2, "--workers", 0,
              "--work-dir", tmp_path / "work", "--feature-probe", 1]
    if name == "retinanet_r50_fpn_1x":  # the checkpoint as a URL (downloaded into --ckpt-dir)
        common += ["--checkpoint", ckpt.as_uri(), "--checkpoint-dir", tmp_path / "ckpts"]
    else:
        common += ["--checkpoint", ckpt]
    rc = _cli([*common, "--methods", methods, "--qwt-size", 4, "--qwt-img-size", 96, "--qwt-batch-size", 2,
               "--results-dir", results, "--save-state", state])
    assert rc == 0
    if name == "retinanet_r50_fpn_1x":
        assert (tmp_path / "ckpts" / ckpt.name).read_bytes() == ckpt.read_bytes()
    recs = {r["method"]: r for r in load_records(results, "coco")}
    assert set(recs) == set(methods.split(","))
    masks = name != "retinanet_r50_fpn_1x"
    for r in recs.values():
        assert r["images"] == 2 and r["config"]["checkpoint_format"] == "mmdet3"
        assert 0.0 <= r["metrics"]["bbox_mAP"] <= 100.0 and "coco/bbox_mAP" in r["coco_raw"]
        assert ("segm_mAP" in r["metrics"]) == masks and ("coco/segm_mAP" in r["coco_raw"]) == masks
        assert r["config"]["backbone"] == ("swin" if base == "repq" else "resnet")
    assert recs[base]["metrics"]["feature_err"] > 0
    blocks = recs[f"{base}+qwt"]["blocks"]
    if base == "percentile":
        assert len(blocks) == 16 and recs[base]["config"]["backbone_conv_a_bits"] == 8
        assert {b["extra"]["stride"] for b in blocks} == {1, 2}  # the first block of layer2..4 strides
        assert any(b["applied"] for b in blocks)
        assert recs[base]["model_size"]["bits_per_weight"] < 8
    # reloading the calibrated state: the same tensors, bit for bit, and the same numbers
    again, state2 = tmp_path / "again", tmp_path / "state2.pth"
    rc = _cli([*common, "--methods", f"{base}+qwt", "--results-dir", again, "--load-state", state,
               "--save-state", state2])
    assert rc == 0
    a, b = torch.load(state, weights_only=False), torch.load(state2, weights_only=False)
    assert _identical(a["state_dict"], b["state_dict"]) and _identical(a.get("compensated"), b.get("compensated"))
    (r2,) = load_records(again, "coco")
    assert r2["metrics"] == recs[f"{base}+qwt"]["metrics"] and r2["coco_raw"] == recs[f"{base}+qwt"]["coco_raw"]


@pytest.mark.slow
def test_strict_variant_and_conv_options_on_basic_blocks(coco_root, tmp_path):
    """mmdet's Mask R-CNN config with a ResNet-18 (BasicBlocks), percentile_strict+qwt at W6A6 with
    a 3x3 grouped-conv compensation of 32 channels per group."""
    cfg = tiny_zoo_config(MASK_R50, tmp_path / "tiny_mask_rcnn_r18.py", resnet_depth=18)
    ckpt = zoo_checkpoint(cfg, tmp_path / "r18.pth")
    results = tmp_path / "records"
    rc = _cli(["--config", cfg, "--data-dir", coco_root, "--checkpoint", ckpt, "--device", "cpu",
               "--val-limit", 1, "--workers", 0, "--work-dir", tmp_path / "work", "--feature-probe", 0,
               "--methods", "percentile_strict+qwt", "--w-bits", 6, "--a-bits", 6, "--qwt-size", 2,
               "--qwt-img-size", 64, "--qwt-kernel-size", 3, "--qwt-factor", 32, "--results-dir", results])
    assert rc == 0
    (r,) = load_records(results, "coco")
    assert r["method"] == "percentile_strict+qwt" and r["config"]["backbone_conv_a_bits"] == 6
    assert (r["config"]["qwt"]["kernel_size"], r["config"]["qwt"]["factor"]) == (3, 32)
    assert r["blocks"][0]["extra"]["groups"] == 64 // 32 and len(r["blocks"]) == 8  # R18: 2-2-2-2 BasicBlocks
