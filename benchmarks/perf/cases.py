"""What the perf benchmark measures on: models (random weights), synthetic images, image counts.

Every model is the real architecture at its real input size, built with random weights through the
classification registry (``classification.build_model(..., pretrained=False)``) and quantized W4A4
by its family adapter, RepQ-ViT-calibrated with :func:`qwt_core.calibrate_repq` on synthetic
images. The Swin-T detector backbone (mmdet ``SwinTransformer``: embed_dims 96, depths 2-2-6-2)
is built the same way through ``detection.quantize`` when mmdet/mmcv import.

Images are seeded Gaussian noise, generated batch by batch (so that calibration sets of 1024
images never sit in memory as an input tensor).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

W_BITS = A_BITS = 4


@dataclass(frozen=True)
class Case:
    """One model of the benchmark.

    ``model`` is a classification registry name (``builder`` 'registry') or ``swin_t_det``
    (``builder`` 'mmdet'); ``overrides`` change constructor arguments (the small-width variant).
    """

    key: str  # name used in metrics and tables
    model: str
    size: tuple[int, int]  # (H, W) input
    builder: str = "registry"  # 'registry' | 'mmdet'
    overrides: dict[str, Any] = field(default_factory=dict)
    tiny: bool = False  # the registry's tiny variant (smoke test)
    label: str = ""  # how the table names it
    calib_size: tuple[int, int] | None = None  # RepQ-ViT calibration image size (None: ``size``)

    def describe(self) -> str:
        return self.label or f"{self.model} {self.size[0]}x{self.size[1]}"


@dataclass(frozen=True)
class Plan:
    """Image counts and repeats of one benchmark mode."""

    mode: str
    cases: tuple[Case, ...]  # figures 1 and 4
    images: int  # calibration images of figures 1 and 4
    batch: int  # batch size of every fit and forward of figures 1 and 4
    calib_images: int  # RepQ-ViT calibration batch
    repeats: int  # timed repeats of the fits (min of N, interleaved)
    forward_rounds: int  # extra interleaved rounds of the forward passes (cheap next to the fits)
    mem_case: Case  # figures 2 and 3: the cut-down model
    mem_counts: tuple[int, ...]  # figure 3 image counts
    mem_batch: int
    ref_images: int  # figure 2 (time): images of our fit and the reference-style fit on mem_case
    mem_images: int  # figure 2 (memory) of the real models (GPU / --full): images per fit
    det_case: Case | None  # detector backbone memory row
    det_images: int
    det_batch: int
    det_reference: bool  # also probe the reference-style fit on the detector (minutes on a CPU)
    init_repeats: int  # figure 5
    init_scale: float = 1.0  # figure 5 tensor sizes (1.0 = ViT-B fc1 as in bench_quantizer_init)
    threads: int = 0  # torch threads (0: torch's default); CPU runs use 1 (see docs/perf.md)
    # figure 2 (:mod:`benchmarks.perf.released`): the released code and our default path on ``cases``
    rel_calib_images: int = 32  # RepQ-ViT calibration batch (the reference's: 32)
    rel_images: int = 64  # QwT images (the reference's: 512, on a GPU)
    rel_batch: int = 32  # QwT batch (the reference's: 32)
    rel_repeats: int = 3  # fit rounds per contender, the first the memory round (0: the figure is not run)
    rel_timeout: float = 1800.0  # seconds one worker may take for its set-up or one round


CLS_CASES = (Case("deit_small", "deit_small", (224, 224)), Case("swin_tiny", "swin_tiny", (224, 224)),
             Case("resnet50", "resnet50", (224, 224)))
SMALL_VIT = Case("deit_small_w96_d2_p32", "deit_small", (224, 224),
                 overrides=dict(embed_dim=96, depth=2, num_heads=2, patch_size=32),
                 label="deit_small architecture, width 96, depth 2, patch 32 (50 tokens), 224x224")
# The detector backbone is RepQ-ViT-calibrated on a 224x224 image (every range is per tensor or per
# channel, so the calibrated state fits any input size; a fit's memory does not depend on the range
# values) and fitted at 800x1333: calibrating at 800x1333 would cost minutes of the CPU budget.
DET_CASE = Case("swin_t_det", "swin_t_det", (800, 1333), builder="mmdet", calib_size=(224, 224),
                label="Swin-T detector backbone (mmdet), 800x1333")
TINY_CASES = (Case("deit_small_tiny", "deit_small", (32, 32), tiny=True, label="deit_small tiny variant 32x32"),
              Case("swin_tiny_tiny", "swin_tiny", (32, 32), tiny=True, label="swin_tiny tiny variant 32x32"),
              Case("resnet50_tiny", "resnet50", (64, 64), tiny=True, label="resnet50 tiny variant 64x64"))


def plan_for(mode: str, device: str) -> Plan:
    """'tiny' (smoke test), 'quick', 'default' or 'full'. The reference fits 512 images in batches
    of 32: GPU plans use that; the CPU default fits 64 in batches of 32, on one torch thread, two
    rounds. Figure 2 (the released code, ``--ref``) fits 64 QwT images on a CPU (512 on a GPU),
    three rounds (the first is the memory round), after one calibration on the reference's batch of
    32 images on a GPU and in ``full``, on 8 in the CPU default: the released calibration of the
    three models on 32 images takes about 16 minutes of one core (its per-channel ``torch.quantile``
    loops), more than the 20 minutes ``make bench`` may take with the rest; 'quick' uses 8 and 16,
    one round; 'tiny' does not run it (the released code builds the real models only)."""
    gpu = device.startswith("cuda")
    if mode == "tiny":
        return Plan("tiny", TINY_CASES, images=8, batch=4, calib_images=4, repeats=1, forward_rounds=0,
                    mem_case=TINY_CASES[0], mem_counts=(8, 32), mem_batch=8, ref_images=16, mem_images=16,
                    det_case=None, det_images=0, det_batch=1, det_reference=False, init_repeats=1,
                    init_scale=0.05, threads=0 if gpu else 1, rel_repeats=0)
    if mode not in ("quick", "default", "full"):
        raise ValueError(f"unknown mode {mode!r} (expected tiny, quick, default or full)")
    if gpu:
        return Plan(mode, CLS_CASES, images=1024 if mode == "full" else 512, batch=32, calib_images=32,
                    repeats=1 if mode == "quick" else 3, forward_rounds=0 if mode == "quick" else 2,
                    mem_case=CLS_CASES[0], mem_counts=(128, 512, 1024), mem_batch=32, ref_images=512,
                    mem_images=512, det_case=DET_CASE, det_images=8, det_batch=2, det_reference=True,
                    init_repeats=3, rel_images=512, rel_repeats=1 if mode == "quick" else 3)
    if mode == "quick":
        return Plan("quick", CLS_CASES, images=32, batch=32, calib_images=4, repeats=1, forward_rounds=0,
                    mem_case=SMALL_VIT, mem_counts=(128, 512, 1024), mem_batch=64, ref_images=512,
                    mem_images=256, det_case=None, det_images=1, det_batch=1, det_reference=False,
                    init_repeats=1, threads=1, rel_calib_images=8, rel_images=16, rel_batch=8, rel_repeats=1)
    if mode == "full":
        return Plan("full", CLS_CASES, images=128, batch=32, calib_images=8, repeats=3, forward_rounds=2,
                    mem_case=SMALL_VIT, mem_counts=(128, 512, 1024), mem_batch=64, ref_images=512,
                    mem_images=512, det_case=DET_CASE, det_images=2, det_batch=1, det_reference=True,
                    init_repeats=3, threads=1, rel_images=128, rel_repeats=3)
    return Plan("default", CLS_CASES, images=64, batch=32, calib_images=4, repeats=2, forward_rounds=1,
                mem_case=SMALL_VIT, mem_counts=(128, 512, 1024), mem_batch=64, ref_images=512, mem_images=512,
                det_case=DET_CASE, det_images=2, det_batch=1, det_reference=True, init_repeats=2, threads=1,
                rel_calib_images=8)


def synthetic_batches(n: int, batch: int, size: tuple[int, int], seed: int = 0) -> Iterator[Tensor]:
    """``n`` seeded N(0, 1) images (B, 3, H, W) in batches of ``batch``, generated lazily."""
    for i, start in enumerate(range(0, n, batch)):
        g = torch.Generator().manual_seed(seed * 100_003 + i)
        yield torch.randn(min(batch, n - start), 3, *size, generator=g)


class Batches:
    """A re-iterable :func:`synthetic_batches` (each pass yields the same images)."""

    def __init__(self, n: int, batch: int, size: tuple[int, int], seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        self.n, self.batch, self.size, self.seed, self.device = n, batch, size, seed, torch.device(device)

    def __iter__(self) -> Iterator[Tensor]:
        return (b.to(self.device) for b in synthetic_batches(self.n, self.batch, self.size, self.seed))


@dataclass
class Built:
    """A built case: full-precision model, quantized model (calibrated or not), QwT adapter factory."""

    fp: nn.Module
    quant: nn.Module
    kind: str  # 'linear' | 'conv'
    blockwise: Callable[[nn.Module], Any]  # quantized model -> qwt_core BlockwiseAdapter
    calibrate: Callable[[nn.Module, Tensor], Any]  # RepQ-ViT on one batch (what it returns is not used)
    forward: Callable[[nn.Module, Tensor], Any]  # full model forward (eval)


def mmdet_available() -> str | None:
    """None when mmdet's SwinTransformer and the detection package import; else the reason."""
    try:
        import mmdet.models.backbones.swin  # noqa: F401

        import detection.adapters
        import detection.quantize  # noqa: F401
    except Exception as e:  # any import failure means "not installed here"
        return f"{type(e).__name__}: {e}"
    return None


def _build_det() -> Built:
    from mmdet.models.backbones.swin import SwinTransformer

    from detection.adapters import SwinBackboneAdapter
    from detection.quantize import calibrate_detector, quantize_detector

    def make() -> nn.Module:
        torch.manual_seed(0)
        net = SwinTransformer(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7,
                              mlp_ratio=4, qkv_bias=True, drop_path_rate=0.0, patch_norm=True,
                              out_indices=(0, 1, 2, 3), convert_weights=False)
        net.eval()  # (mmdet's SwinTransformer.train() returns None)
        return net

    fp, quant = make(), make()
    quantize_detector(quant, W_BITS, A_BITS)

    def forward(m: nn.Module, x: Any) -> Any:
        return m(x)

    return Built(fp, quant, "linear", SwinBackboneAdapter,
                 lambda m, x: calibrate_detector(m, x, forward), forward)


def build(case: Case, device: torch.device | str = "cpu", quantize: bool = True) -> Built:
    """Random-weight FP model and its (uncalibrated) W4A4 quantized twin, on ``device``."""
    if case.builder == "mmdet":
        built = _build_det()
    else:
        import copy

        from classification.adapters import for_family
        from classification.build import build_model
        from qwt_core import calibrate_repq

        torch.manual_seed(0)
        fp, spec = build_model(case.model, pretrained=False, overrides=dict(case.overrides) or None, tiny=case.tiny)
        adapter = for_family(spec.family)
        quant = copy.deepcopy(fp)
        if quantize:
            adapter.quantize(quant, W_BITS, A_BITS, adapter.methods[0])

        def calibrate(m: nn.Module, x: Tensor) -> None:
            calibrate_repq(m, x, adapter.reparam_pairs(m))

        built = Built(fp.eval(), quant.eval(), adapter.qwt_kind(), adapter.blockwise, calibrate,
                      lambda m, x: m(x))
    built.fp.to(device)
    built.quant.to(device)
    return built


def case_by_key(key: str, cases: Sequence[Case]) -> Case:
    for c in cases:
        if c.key == key:
            return c
    raise KeyError(f"unknown case {key!r}; known: {[c.key for c in cases]}")


ALL_CASES: tuple[Case, ...] = CLS_CASES + (SMALL_VIT, DET_CASE) + TINY_CASES
