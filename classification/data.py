"""ImageNet-style data: ``<data_dir>/train/<class>/*.JPEG`` and ``<data_dir>/val/<class>/*.JPEG``.

- eval: timm ``create_transform`` (resize the shorter side to input_size / crop_pct with the
  spec's interpolation, center crop, normalize with the spec's mean/std);
- RepQ-ViT calibration: ``calib_size`` (32) train images, ONE batch, drawn with the reference's
  training augmentation (random-resized crop, horizontal flip, RandAugment
  ``rand-m9-mstd0.5-inc1``, bicubic) and a fixed seed;
- QwT regression: ``qwt_size`` (512) train images with the same augmentation; the train images
  are one seeded permutation, RepQ-ViT takes its first ``calib_size`` and QwT its first
  ``qwt_size``, so the calibration batch lies inside the QwT set. The reference does that only
  under several processes (its DistributedSampler repeats the same permutation, so rank 0's first
  batch is both the calibration batch and its first QwT batch); in a single process its shuffled
  train loader is iterated twice, and the calibration batch and the QwT images are two independent
  draws (they may overlap by chance). Either way both are random train images;
- ``val_limit``: an evenly strided, deterministic subset of the val set (records say partial).
Calibration images are loaded in the main process inside a forked RNG state, so they do not
depend on the number of loader workers and do not disturb the caller's RNGs; each image's
augmentation is seeded by (seed, its train index), so an image is the same tensor whichever
process loads it and in whatever order (several processes: see docs/distributed.md).
- several processes: :func:`val_loader` and :func:`calibration_sets` take ``rank`` and
  ``world_size`` and return this rank's contiguous shard (no padding, the union is the whole set
  once; :func:`runtime.distributed.shard_batches`).
- unreadable images: every image is opened by :func:`read_image`, which raises
  :class:`ImageReadError` naming the file (the calibration images are all loaded before the FP
  evaluation, so a bad train image stops the run before any work; a bad val image stops it when it
  is met, naming the file);
- labels: ImageFolder numbers the class folders 0..C-1 in sorted order. When the model has more
  outputs than there are folders (a class subset), :func:`subset_targets` maps each folder to the
  model's class by its name instead (ImageNet wnids, or integer folder names).
"""
from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from tqdm import tqdm

from runtime.distributed import shard_batches

from .errors import DataLayoutError, ImageReadError
from .registry import ModelSpec

CALIB_AUTO_AUGMENT = "rand-m9-mstd0.5-inc1"


def eval_transform(spec: ModelSpec) -> Callable:
    from timm.data import create_transform
    return create_transform(input_size=spec.input_size, is_training=False, interpolation=spec.interpolation,
                            mean=spec.mean, std=spec.std, crop_pct=spec.crop_pct)


def calib_transform(spec: ModelSpec, augment: bool = True) -> Callable:
    """The reference's training augmentation (or the eval transform with ``augment=False``)."""
    if not augment:
        return eval_transform(spec)
    from timm.data import create_transform

    from .compat import pillow13_posterize_compat
    pillow13_posterize_compat()  # RandAugment's posterize(0 bits) raises on Pillow >= 13
    return create_transform(input_size=spec.input_size, is_training=True, auto_augment=CALIB_AUTO_AUGMENT,
                            interpolation=spec.interpolation, mean=spec.mean, std=spec.std)


def read_image(path: str) -> Image.Image:
    """The image at ``path`` as RGB (decoded now); :class:`ImageReadError` names a file that
    cannot be decoded (truncated, corrupt, not an image)."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        reason = " ".join(str(e).replace(f"'{path}'", "").replace(f" {path}", "").split()) or type(e).__name__
        raise ImageReadError(f"cannot read image {path} ({reason}); remove or replace the file") from None


def image_folder(root: str | Path, transform: Callable | None = None,
                 target_transform: Callable | None = None) -> ImageFolder:
    """torchvision ``ImageFolder`` whose images are read by :func:`read_image`."""
    return ImageFolder(str(root), transform=transform, target_transform=target_transform, loader=read_image)


def _classes(split_dir: Path) -> list[str]:
    return sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))


def _has_image(folder: Path) -> bool:
    """Whether ``folder`` (searched recursively, as ImageFolder does) holds an image file."""
    for _, _, files in os.walk(folder, followlinks=True):
        if any(os.path.splitext(f)[1].lower() in IMG_EXTENSIONS for f in files):
            return True
    return False


def check_layout(data_dir: str | Path, need_train: bool = True) -> list[str]:
    """Validate the class-folder layout (every class folder of every split used holds at least one
    image); returns the val class names. Raises DataLayoutError."""
    root = Path(data_dir)
    hint = "expected <dir>/train/<class>/<image> and <dir>/val/<class>/<image> (ImageNet class-folder layout)"
    if not root.is_dir():
        raise DataLayoutError(f"dataset folder {root} does not exist; {hint}")
    splits = ("train", "val") if need_train else ("val",)
    found: dict[str, list[str]] = {}
    for split in splits:
        if not (root / split).is_dir():
            raise DataLayoutError(f"dataset folder {root} has no {split}/ folder; {hint}")
    for split in splits:
        d = root / split
        classes = _classes(d)
        if not classes:
            raise DataLayoutError(f"{d} has no class folders; {hint}")
        empty = [c for c in classes if not _has_image(d / c)]
        if len(empty) == len(classes):
            raise DataLayoutError(f"{d} class folders hold no images ({', '.join(IMG_EXTENSIONS)}); {hint}")
        if empty:
            more = f" and {len(empty) - 1} more" if len(empty) > 1 else ""
            raise DataLayoutError(f"class folder {d / empty[0]}{more} holds no images "
                                  f"({', '.join(IMG_EXTENSIONS)}): add its images or remove the folder")
        found[split] = classes
    if need_train and found["train"] != found["val"]:
        raise DataLayoutError(f"{root}: train/ and val/ have different class folders "
                              f"({len(found['train'])} vs {len(found['val'])}); labels would not match")
    return found["val"]


def subset_targets(classes: list[str], n_outputs: int) -> list[int]:
    """The model's class index of each class folder (sorted), by name: ImageNet-1k wnids
    (``n01440764`` -> its index in the sorted 1000 synsets) or integer names (``"7"`` -> 7).
    Raises DataLayoutError when the names are neither."""
    if n_outputs == 1000:
        from timm.data import ImageNetInfo
        wnids = {w: i for i, w in enumerate(ImageNetInfo("imagenet-1k").label_names())}
        if all(c in wnids for c in classes):
            return [wnids[c] for c in classes]
    if all(c.isdigit() and int(c) < n_outputs for c in classes):
        return [int(c) for c in classes]
    raise DataLayoutError(f"--class-subset: cannot map the class folders ({', '.join(classes[:3])}, ...) to "
                          f"the model's {n_outputs} classes: name them by ImageNet wnid (n01440764, ...) or by "
                          f"class index (0..{n_outputs - 1})")


def strided_indices(n: int, limit: int | None) -> list[int]:
    """``limit`` evenly spaced indices of range(n) (all of them without a limit)."""
    if limit is None or limit >= n:
        return list(range(n))
    return [int(i * n / limit) for i in range(limit)]


class _Relabel:
    """target_transform: folder index -> the model's class index (picklable for loader workers)."""

    def __init__(self, targets: list[int]) -> None:
        self.targets = targets

    def __call__(self, target: int) -> int:
        return self.targets[target]


def val_dataset(spec: ModelSpec, data_dir: str | Path, val_limit: int | None = None,
                targets: list[int] | None = None) -> Dataset:
    """The val split with the eval transform; ``targets``: the model's class index of each class
    folder (:func:`subset_targets`; default: the folders' sorted order)."""
    ds = image_folder(Path(data_dir) / "val", eval_transform(spec), _Relabel(targets) if targets else None)
    return Subset(ds, strided_indices(len(ds), val_limit)) if val_limit is not None else ds


def val_loader(spec: ModelSpec, data_dir: str | Path, batch_size: int, workers: int,
               val_limit: int | None = None, rank: int = 0, world_size: int = 1,
               targets: list[int] | None = None) -> DataLoader:
    """Val batches, in order; with ``world_size`` > 1 only this rank's batches
    (:func:`runtime.distributed.shard_batches`: the one-process batches split contiguously,
    no padding)."""
    ds = val_dataset(spec, data_dir, val_limit, targets)
    if world_size > 1:
        batches = [list(b) for b in shard_batches(len(ds), batch_size, rank, world_size)]  # type: ignore[arg-type]
        return DataLoader(ds, batch_sampler=batches, num_workers=workers, pin_memory=False,
                          persistent_workers=False)
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=False, persistent_workers=False)


def calibration_indices(n_train: int, count: int, seed: int) -> list[int]:
    """The first ``count`` entries of a seeded permutation of the train set."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_train, generator=g)[:count].tolist()


def image_seed(seed: int, index: int) -> int:
    """The augmentation seed of train image ``index`` (independent of order and process)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def load_images(ds: ImageFolder, indices: list[int], seed: int, batch_size: int,
                progress: bool = False, desc: str = "images",
                batches: list[range] | None = None) -> list[Tensor]:
    """Images ``indices`` of ``ds`` as batches (B, 3, H, W); image i's augmentation is seeded by
    :func:`image_seed` (seed, i). ``batches``: positions in ``indices`` per batch (default:
    consecutive runs of ``batch_size``)."""
    if batches is None:
        batches = [range(i, min(i + batch_size, len(indices))) for i in range(0, len(indices), batch_size)]
    state_py, state_np = random.getstate(), np.random.get_state()
    out: list[Tensor] = []
    try:
        with torch.random.fork_rng(devices=[]):
            bar = tqdm(total=sum(len(b) for b in batches), desc=desc, disable=not progress,
                       file=sys.stderr, leave=False)
            for positions in batches:
                images = []
                for p in positions:
                    s = image_seed(seed, indices[p])
                    random.seed(s)
                    np.random.seed(s)
                    torch.manual_seed(s)
                    images.append(ds[indices[p]][0])
                    bar.update(1)
                out.append(torch.stack(images))
            bar.close()
    finally:
        random.setstate(state_py)
        np.random.set_state(state_np)
    return out


def calibration_sets(spec: ModelSpec, data_dir: str | Path, calib_size: int, qwt_size: int, seed: int,
                     batch_size: int, augment: bool = True, need_qwt: bool = True, progress: bool = False,
                     rank: int = 0, world_size: int = 1, need_calib: bool = True
                     ) -> tuple[Tensor | None, list[Tensor]]:
    """(RepQ-ViT batch (calib_size, 3, H, W), this rank's QwT batches) from the train split. The
    QwT set is the same whatever ``world_size`` is: the first ``qwt_size`` entries of the seeded
    permutation, split by
    :func:`runtime.distributed.shard_batches`. ``need_calib=False`` skips the RepQ-ViT batch
    (None; ranks other than 0 receive it by broadcast).

    Raises DataLayoutError when the train split has fewer images than asked for, and
    ImageReadError naming the first image that cannot be decoded."""
    ds = image_folder(Path(data_dir) / "train", calib_transform(spec, augment))
    for what, size in (("--calib-size", calib_size), ("--qwt-size", qwt_size if need_qwt else 0)):
        if size > len(ds):
            raise DataLayoutError(f"{what} {size} asks for more images than {Path(data_dir) / 'train'} holds "
                                  f"({len(ds)}): lower {what} or add train images")
    order = calibration_indices(len(ds), max(calib_size, qwt_size if need_qwt else 0), seed)
    calib = None
    if need_calib:
        calib = load_images(ds, order[:calib_size], seed, max(calib_size, 1), progress,
                            "RepQ-ViT calibration images")[0]
    qwt: list[Tensor] = []
    qwt_order = order[:qwt_size] if need_qwt else []
    if qwt_order:
        qwt = load_images(ds, qwt_order, seed + 1, batch_size, progress, "QwT images",
                          batches=shard_batches(len(qwt_order), batch_size, rank, world_size))
    return calib, qwt
