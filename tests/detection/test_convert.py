"""Checkpoint conversion: official Swin (Swin-Transformer-Object-Detection, mmdet 2.x) -> mmdet 3.x.

The reference is a minimal re-implementation of the *official* Swin forward working directly on
old-format weights (PatchMerging concatenating x0, x1, x2, x3 as the official code does, its own
relative-position index), so a wrong channel permutation or key mapping changes the features.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from detection.convert import CheckpointError, convert_legacy, is_legacy, load_detector_weights, to_legacy

pytestmark = pytest.mark.detection


# ---------------------------------------------------------------- official Swin (reference) ----
def _ln(x, sd, p):
    return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], 1e-5)


def _lin(x, sd, p):
    return F.linear(x, sd[p + ".weight"], sd.get(p + ".bias"))


def _official_rel_index(ws: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij"))
    flat = torch.flatten(coords, 1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


def _windows(x, ws):  # (B, H, W, C) -> (nW*B, ws, ws, C)
    B, H, W, C = x.shape
    return x.reshape(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, C)


def _unwindows(w, ws, H, W):
    B = int(w.shape[0] / (H * W / ws / ws))
    return w.reshape(B, H // ws, W // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, -1)


def _attention(x, sd, p, heads, ws, mask):
    B_, N, C = x.shape
    qkv = _lin(x, sd, p + ".qkv").reshape(B_, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * (C // heads) ** -0.5, qkv[1], qkv[2]
    attn = q @ k.transpose(-2, -1)
    table = sd[p + ".relative_position_bias_table"]
    bias = table[_official_rel_index(ws).view(-1)].view(N, N, -1).permute(2, 0, 1)
    attn = attn + bias.unsqueeze(0)
    if mask is not None:
        nW = mask.shape[0]
        attn = attn.view(B_ // nW, nW, heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, N, N)
    x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(B_, N, C)
    return _lin(x, sd, p + ".proj")


def _block(x, sd, p, H, W, heads, ws, shift, mask):
    B, L, C = x.shape
    shortcut = x
    x = _ln(x, sd, p + ".norm1").reshape(B, H, W, C)
    pad_r, pad_b = (ws - W % ws) % ws, (ws - H % ws) % ws
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    Hp, Wp = x.shape[1:3]
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    w = _attention(_windows(x, ws).reshape(-1, ws * ws, C), sd, p + ".attn", heads, ws, mask if shift else None)
    x = _unwindows(w.view(-1, ws, ws, C), ws, Hp, Wp)
    if shift:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    x = shortcut + x[:, :H, :W, :].reshape(B, H * W, C)
    h = _lin(F.gelu(_lin(_ln(x, sd, p + ".norm2"), sd, p + ".mlp.fc1")), sd, p + ".mlp.fc2")
    return x + h


def _merge(x, sd, p, H, W):  # the official PatchMerging: cat of x0, x1, x2, x3
    B, L, C = x.shape
    x = x.reshape(B, H, W, C)
    x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
    x0, x1, x2 = x[:, 0::2, 0::2, :], x[:, 1::2, 0::2, :], x[:, 0::2, 1::2, :]
    x3 = x[:, 1::2, 1::2, :]
    x = torch.cat([x0, x1, x2, x3], -1).view(B, -1, 4 * C)
    return _lin(_ln(x, sd, p + ".norm"), sd, p + ".reduction")


def official_swin_forward(sd, img, depths, heads, ws=7, patch=4):
    """Swin-Transformer-Object-Detection's SwinTransformer.forward on old-format weights."""
    sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    _, _, H, W = img.shape
    img = F.pad(img, (0, (patch - W % patch) % patch, 0, (patch - H % patch) % patch))
    x = F.conv2d(img, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=patch)
    Wh, Ww = x.shape[2:]
    x = _ln(x.flatten(2).transpose(1, 2), sd, "patch_embed.norm")
    outs = []
    for i, depth in enumerate(depths):
        Hp, Wp = math.ceil(Wh / ws) * ws, math.ceil(Ww / ws) * ws
        shift = ws // 2
        img_mask = torch.zeros((1, Hp, Wp, 1))
        cnt = 0
        for h in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            for w in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                img_mask[:, h, w, :] = cnt
                cnt += 1
        mw = _windows(img_mask, ws).reshape(-1, ws * ws)
        mask = (mw.unsqueeze(1) - mw.unsqueeze(2))
        mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        for j in range(depth):
            x = _block(x, sd, f"layers.{i}.blocks.{j}", Wh, Ww, heads[i], ws, shift if j % 2 else 0, mask)
        out = _ln(x, sd, f"norm{i}")
        outs.append(out.reshape(-1, Wh, Ww, out.shape[-1]).permute(0, 3, 1, 2))
        if i < len(depths) - 1:
            x = _merge(x, sd, f"layers.{i}.downsample", Wh, Ww)
            Wh, Ww = (Wh + 1) // 2, (Ww + 1) // 2
    return outs


# ------------------------------------------------------------------------------------ tests ----
def _tiny_backbone_detector(tiny, name="mask_rcnn_swin_t"):
    from .helpers import build

    return build(tiny[name][0], seed=1)


def test_convert_then_invert_round_trips(tiny):
    model = _tiny_backbone_detector(tiny)
    sd = model.state_dict()
    old = to_legacy(sd)
    assert is_legacy(old) and not is_legacy(sd)
    assert any(".downsample.reduction." in k for k in old)
    assert "backbone.layers.0.blocks.0.attn.qkv.weight" in old
    assert "backbone.layers.0.blocks.0.mlp.fc1.weight" in old
    assert "backbone.patch_embed.proj.weight" in old
    back = convert_legacy(old)
    assert list(back) == list(sd)
    for k in sd:
        assert torch.equal(back[k], sd[k]), k
    # the merging permutation is not the identity (so the check above is not vacuous)
    k = "backbone.stages.0.downsample.reduction.weight"
    assert not torch.equal(old[k.replace("stages", "layers")], sd[k])


@pytest.mark.parametrize("hw", [(100, 76), (64, 64), (92, 124)])
def test_converted_backbone_matches_official_swin(tiny, hw):
    """Old-format weights through the official forward == converted weights through mmdet."""
    model = _tiny_backbone_detector(tiny)
    old = to_legacy(model.state_dict())
    # make sure every merged-channel slot matters: distinct norm weights / biases per slot
    g = torch.Generator().manual_seed(3)
    for k in list(old):
        if ".downsample.norm." in k:
            old[k] = torch.randn(old[k].shape, generator=g)
    new = convert_legacy(old)
    model.load_state_dict(new, strict=True)
    torch.manual_seed(0)
    img = torch.randn(2, 3, *hw)
    bb = model.backbone
    with torch.no_grad():
        ref = official_swin_forward(old, img, bb_depths(bb), [s.blocks[0].attn.w_msa.num_heads for s in bb.stages])
        got = bb(img)
    assert len(ref) == len(got) == 4
    for r, o in zip(ref, got):
        assert r.shape == o.shape
        torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-4)
    # and the permutation is needed: loading the old merging weights unpermuted breaks stage 2+
    wrong = dict(new)
    for k in new:
        if ".downsample." in k:
            wrong[k] = old[k.replace("backbone.stages.", "backbone.layers.")]
    model.load_state_dict(wrong, strict=True)
    with torch.no_grad():
        bad = bb(img)
    torch.testing.assert_close(bad[0], ref[0], rtol=1e-4, atol=1e-4)
    assert (bad[1] - ref[1]).abs().max() > 1e-2


def bb_depths(bb):
    return [len(s.blocks) for s in bb.stages]


@pytest.mark.parametrize("name", ["mask_rcnn_swin_t", "cascade_mask_rcnn_swin_b"])
def test_release_layout_checkpoint_loads_strictly(tiny, tmp_path, name):
    """A release-format checkpoint (pickled meta, official keys, no attn_mask) auto-converts and
    loads with strict=True into the mmdet 3.x detector; an mmdet 3.x one loads as it is."""
    from .helpers import build, tiny_checkpoint

    cfg, legacy_ckpt = tiny[name]
    ref = build(cfg, seed=0).state_dict()
    model = build(cfg, seed=5)
    info = load_detector_weights(model, legacy_ckpt, name)
    assert info == {"format": "legacy", "converted": True}
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref[k]), k
    new_ckpt = tiny_checkpoint(cfg, tmp_path / "new.pth", legacy=False, seed=0)
    model = build(cfg, seed=5)
    assert load_detector_weights(model, new_ckpt, name)["format"] == "mmdet3"
    # a release file without the relative_position_index buffers loads too (they are recomputed)
    sd = torch.load(legacy_ckpt, weights_only=False)["state_dict"]
    sd = {k: v for k, v in sd.items() if not k.endswith("relative_position_index")}
    torch.save({"state_dict": sd}, tmp_path / "noidx.pth")
    load_detector_weights(build(cfg, seed=5), tmp_path / "noidx.pth", name)


def test_wrong_detector_checkpoint_is_refused(tiny):
    from .helpers import build

    model = build(tiny["cascade_mask_rcnn_swin_t"][0])
    with pytest.raises(CheckpointError, match="does not match detector cascade_mask_rcnn_swin_t.*looks like mask_rcnn"):
        load_detector_weights(model, tiny["mask_rcnn_swin_t"][1], "cascade_mask_rcnn_swin_t")


@pytest.mark.slow
def test_full_size_configs_match_the_release_architectures():
    """The five configs at full size: parameter counts of the release table (48M, 69M, 86M,
    107M, 145M) and the backbone of the registry entry."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    from detection.registry import DETECTORS

    register_all_modules()
    for d in DETECTORS.values():
        cfg = Config.fromfile(str(d.config_path))
        assert cfg.model.backbone.init_cfg is None  # nothing is downloaded
        assert (cfg.model.backbone.embed_dims, tuple(cfg.model.backbone.depths)) == (d.embed_dims, d.depths)
        model = MODELS.build(cfg.model)
        n = sum(p.numel() for p in model.parameters()) / 1e6
        assert abs(n - d.params_m) < 0.6, (d.name, n)
        assert (type(model).__name__ == "CascadeRCNN") == (d.kind == "cascade_mask_rcnn")
        del model
