"""mmdet SwinTransformer -> qwt_core's BlockwiseAdapter.

Blocks are called as ``block(x, hw_shape)`` with the (H, W) token grid of their stage; the last
block of a stage is followed by the stage's patch merging (mmdet's ``downsample(x, hw)`` returns
``(x, out_hw)``). The per-stage output norms (``norm0..3``) are not blocks. Grid sizes are fixed
by the calibration image size, recorded by :meth:`embed` (all calibration batches share a size).
"""
from __future__ import annotations

from collections.abc import Sequence

from mmdet.models.backbones.swin import SwinTransformer
from torch import Tensor, nn

from qwt_core import BlockStep


class _Root(nn.Module):
    """Holds a bare backbone: mmdet's ``SwinTransformer.train()`` returns None, so
    ``backbone.eval()`` (as qwt_core.fit_qwt calls it) cannot be chained; a container can."""

    def __init__(self, backbone: SwinTransformer) -> None:
        super().__init__()
        self.backbone = backbone


class SwinBackboneAdapter:
    """QwT over every SwinBlock of the mmdet ``SwinTransformer`` inside ``model`` (a detector, or
    the backbone itself). ``self.model`` is the detector (or a container of the backbone); block
    names are qualified from it, e.g. ``backbone.stages.2.blocks.5``."""

    def __init__(self, model: nn.Module) -> None:
        from .quantize import find_swin

        if isinstance(model, SwinTransformer):
            model = _Root(model)
        prefix, backbone = find_swin(model)
        self.model: nn.Module = model
        self.backbone: SwinTransformer = backbone
        self.prefix = prefix + "." if prefix else ""
        self.hw: list[tuple[int, int]] = []  # token grid of each stage, set by embed()

    def embed(self, images: Tensor) -> Tensor:
        """Patch embedding (+ absolute position, dropout) of images (B, 3, H, W) -> (B, L, C)."""
        bb = self.backbone
        x, hw = bb.patch_embed(images)
        if bb.use_abs_pos_embed:
            x = x + bb.absolute_pos_embed
        x = bb.drop_after_pos(x)
        grids = [tuple(hw)]
        for stage in bb.stages[:-1]:
            h, w = grids[-1]
            ds = stage.downsample
            k, s = ds.sampler.kernel_size, ds.sampler.stride
            # AdaptivePadding('corner') pads up to a multiple of the stride, then unfold
            grids.append(((h + (-h) % s[0] - k[0]) // s[0] + 1, (w + (-w) % s[1] - k[1]) // s[1] + 1))
        if self.hw and self.hw != grids:
            raise ValueError(f"calibration batches must share one size: grids {self.hw} vs {grids}")
        self.hw = grids
        return x

    def _call(self, stage: int):
        return lambda block, x: block(x, self.hw[stage])

    def _after(self, stage: int):
        ds = self.backbone.stages[stage].downsample
        return lambda x: ds(x, self.hw[stage])[0]

    def steps(self) -> Sequence[BlockStep]:
        out = []
        for i, stage in enumerate(self.backbone.stages):
            n = len(stage.blocks)
            for j in range(n):
                last = j == n - 1 and stage.downsample is not None
                out.append(BlockStep(f"{self.prefix}stages.{i}.blocks.{j}", call=self._call(i),
                                     after=self._after(i) if last else None))
        return out
