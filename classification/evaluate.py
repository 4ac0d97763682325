"""Top-1 / top-5 accuracy, and agreement with the full-precision model of the same run.

With ``fp_logprobs`` (log-softmax of the FP model on the same images, in order):
``agreement_fp`` = % of images whose top-1 equals FP's top-1, ``kl_fp`` = mean over images of
KL(FP ‖ Q) = Σ_c p_fp,c (log p_fp,c − log p_q,c).

Every batch's counts are kept (:class:`BatchStats`): with several processes each rank evaluates
its shard, the ranks exchange their batch lists, and :func:`metrics_from_batches` sums them in the
global batch order, exactly as one process sums its own batches (same numbers, same order).
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class BatchStats:
    """Counts of one evaluated batch."""

    images: int
    top1: int  # correct top-1
    top5: int  # label among the top 5
    agree: int = 0  # top-1 equal to FP's top-1 (with an FP reference)
    kl: float = 0.0  # Σ over the batch's images of KL(FP ‖ Q) (with an FP reference)


@dataclass
class EvalResult:
    metrics: dict[str, float]  # top1, top5 in percent (+ agreement_fp, kl_fp)
    images: int
    seconds: float
    logprobs: Tensor | None = field(default=None, repr=False)  # (N, classes) float32 CPU, when kept
    batches: list[BatchStats] = field(default_factory=list, repr=False)


def metrics_from_batches(batches: list[BatchStats], with_fp: bool) -> tuple[dict[str, float], int]:
    """(metrics in percent / mean KL, number of images) from batch counts, summed in list order."""
    n = c1 = c5 = agree = 0
    kl = 0.0
    for b in batches:
        n += b.images
        c1 += b.top1
        c5 += b.top5
        agree += b.agree
        kl += b.kl
    if n == 0:
        raise ValueError("no images to evaluate")
    metrics = {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n}
    if with_fp:
        metrics["agreement_fp"] = 100.0 * agree / n
        metrics["kl_fp"] = kl / n
    return metrics, n


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device | str = "cpu",
             fp_logprobs: Tensor | None = None, keep_logprobs: bool = False, allow_empty: bool = False
             ) -> EvalResult:
    """Evaluate ``model`` (already in the wanted quant state) on (images, labels) batches.

    ``allow_empty``: a rank whose shard is empty returns no batches (metrics are left empty; the
    caller combines the ranks' batches)."""
    model.eval()
    t0 = time.perf_counter()
    n = 0
    stats: list[BatchStats] = []
    kept: list[Tensor] = []
    for images, labels in batches:
        logits = model(images.to(device)).float()  # (B, classes)
        labels = labels.to(logits.device)
        if int(labels.max()) >= logits.shape[1]:
            raise ValueError(f"label {int(labels.max())} but the model has {logits.shape[1]} classes")
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, 5)
        c1 = int((top[:, 0] == labels).sum())
        c5 = int((top == labels[:, None]).any(dim=1).sum())
        logp = torch.log_softmax(logits, dim=1)
        agree, kl = 0, 0.0
        if fp_logprobs is not None:
            ref = fp_logprobs[n:n + len(labels)].to(logp.device)  # (B, classes)
            agree = int((ref.argmax(1) == top[:, 0]).sum())
            kl = float((ref.exp() * (ref - logp)).sum(dim=1).sum())
        stats.append(BatchStats(len(labels), c1, c5, agree, kl))
        if keep_logprobs:
            kept.append(logp.cpu())
        n += len(labels)
    if n == 0 and allow_empty:
        metrics: dict[str, float] = {}
    else:
        metrics, n = metrics_from_batches(stats, fp_logprobs is not None)
    logprobs = (torch.cat(kept) if kept else torch.empty(0)) if keep_logprobs else None
    return EvalResult(metrics, n, time.perf_counter() - t0, logprobs, stats)
