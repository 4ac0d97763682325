"""COCO inputs: data-root handling, input checks, and the calibration data of SPEC "Detection".

- RepQ-ViT statistics: the first batch of the *test* loader (first val2017 image, 1333x800
  keep-ratio pipeline of the config), run through ``model.test_step``.
- QwT regression: ``n`` train2017 images, a seeded sample of the images the config's *training*
  dataset keeps after mmdet's own filter (``filter_cfg``; the Swin configs: ``filter_empty_gt=True,
  min_size=32``, i.e. annotated images with min side >= 32, the images the reference's mmdet 2.x
  ``qwerty_calibration`` dataset keeps), through mmdet's
  ``LoadImageFromFile -> Resize(size x size, keep_ratio=False) -> PackDetInputs`` (no flip),
  normalized by the detector's own ``data_preprocessor`` -> (B, 3, size, size).
- Unreadable images: :func:`check_images` decodes the images a run will calibrate on before any
  work (with mmcv's decoder, as the pipeline does) and names the first bad file;
  :func:`unreadable_image` finds the file in the error mmcv raises for a bad image met during an
  evaluation.
"""
from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from mmengine.config import Config, ConfigDict
from mmengine.dataset import Compose, pseudo_collate
from torch import Tensor, nn

from runtime.errors import BadInput

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
# the filter of the reference's mmdet 2.x training datasets (CustomDataset defaults); used for the
# QwT images when a config's training dataset declares no filter_cfg
REFERENCE_TRAIN_FILTER = {"filter_empty_gt": True, "min_size": 32}


class DataError(BadInput):
    """Missing or unusable dataset files; the message says what to provide."""


def _datasets(cfg: Config) -> list[ConfigDict]:
    out = []
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg.get(key)
        if loader is None:
            continue
        ds = loader["dataset"]
        while "dataset" in ds:  # RepeatDataset / ClassBalancedDataset wrappers
            ds = ds["dataset"]
        out.append(ds)
    return out


def set_data_root(cfg: Config, root: str | os.PathLike[str]) -> None:
    """Point every dataset and the COCO evaluators at ``root`` (COCO 2017 layout)."""
    root = str(Path(root).resolve()) + "/"
    cfg.data_root = root
    for ds in _datasets(cfg):
        ds["data_root"] = root
    for key in ("val_evaluator", "test_evaluator"):
        ev = cfg.get(key)
        if ev is None:
            continue
        for e in ev if isinstance(ev, (list, tuple)) else [ev]:
            if e.get("ann_file"):
                e["ann_file"] = os.path.join(root, _rel_ann(e["ann_file"]))


def _rel_ann(path: str) -> str:
    """'data/coco/annotations/x.json' -> 'annotations/x.json'."""
    p = Path(path)
    parts = p.parts
    return str(Path(*parts[parts.index("annotations"):])) if "annotations" in parts else p.name


def test_paths(cfg: Config) -> tuple[Path, Path]:
    """(annotation file, image folder) of the test split of ``cfg``."""
    ds = cfg.test_dataloader["dataset"]
    root = Path(ds.get("data_root", ""))
    return root / ds["ann_file"], root / ds["data_prefix"]["img"]


def _train_dataset(cfg: Config) -> ConfigDict:
    ds = cfg.train_dataloader["dataset"]
    while "dataset" in ds:  # RepeatDataset / ClassBalancedDataset wrappers
        ds = ds["dataset"]
    return ds


def train_image_dir(cfg: Config) -> Path:
    ds = _train_dataset(cfg)
    return Path(ds.get("data_root", "")) / ds["data_prefix"]["img"]


def train_ann_file(cfg: Config) -> Path:
    ds = _train_dataset(cfg)
    return Path(ds.get("data_root", "")) / ds["ann_file"]


def train_filter_cfg(cfg: Config) -> dict:
    """The training dataset's ``filter_cfg`` (mmdet applies it in ``filter_data``), or the
    reference's :data:`REFERENCE_TRAIN_FILTER` when the config declares none."""
    f = _train_dataset(cfg).get("filter_cfg")
    return dict(REFERENCE_TRAIN_FILTER) if f is None else dict(f)


def check_inputs(cfg: Config, need_train: bool) -> None:
    """Raise :class:`DataError` when the COCO root, val annotations/images or (for QwT) the
    train images are missing."""
    root = Path(cfg.get("data_root", ""))
    if not root.is_dir():
        raise DataError(f"COCO root {root} not found: pass --data-root (make ... COCO=/path/to/coco) "
                        "with annotations/, val2017/ and train2017/")
    ann, img = test_paths(cfg)
    if not ann.is_file():
        raise DataError(f"annotation file {ann} not found under the COCO root {root}")
    if not img.is_dir():
        raise DataError(f"image folder {img} not found under the COCO root {root}")
    if need_train:
        tdir = train_image_dir(cfg)
        if not tdir.is_dir() or not any(p.suffix.lower() in IMAGE_EXTS for p in tdir.iterdir()):
            raise DataError(f"QwT needs train images in {tdir} (512 train2017 images by default)")
        tann = train_ann_file(cfg)
        if not tann.is_file():
            raise DataError(f"QwT draws its train images from the annotated ones: annotation file "
                            f"{tann} not found under the COCO root {root}")


def qwt_image_pool(cfg: Config) -> list[Path]:
    """The images the config's training dataset keeps, in its (annotation-file) order: the dataset
    built by mmdet with its own ``filter_cfg`` (``CocoDataset.filter_data``: with
    ``filter_empty_gt`` only images with an annotation of a dataset class, and min(width, height)
    >= ``min_size``), the filter the reference's mmdet 2.x training dataset applies (its
    :data:`REFERENCE_TRAIN_FILTER` when the config declares no ``filter_cfg``)."""
    from mmdet.registry import DATASETS

    ds = copy.deepcopy(_train_dataset(cfg))
    ds.update(filter_cfg=train_filter_cfg(cfg), pipeline=[], test_mode=False, lazy_init=False,
              serialize_data=False)  # serialize_data=False keeps data_list
    dataset = DATASETS.build(ds)
    return [Path(info["img_path"]) for info in dataset.data_list]


def qwt_image_files(cfg: Config, n: int, seed: int) -> list[Path]:
    """``n`` train images: a seeded sample (sorted back into dataset order) of
    :func:`qwt_image_pool`."""
    files = qwt_image_pool(cfg)
    if len(files) < n:
        raise DataError(f"QwT asks for {n} train images but the training dataset "
                        f"({train_ann_file(cfg)}, filter_cfg {train_filter_cfg(cfg)}) keeps "
                        f"{len(files)} after filtering")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(files), generator=g)[:n].sort().values.tolist()
    return [files[i] for i in idx]


def qwt_batches(cfg: Config, model: nn.Module, n: int, size: int, seed: int, batch_size: int = 8,
                rank: int = 0, world_size: int = 1) -> Iterator[Tensor]:
    """Normalized QwT calibration images (B, 3, size, size) of this rank's shard."""
    backend_args = cfg.get("backend_args", None)
    pipeline = Compose([
        dict(type="LoadImageFromFile", backend_args=backend_args),
        dict(type="Resize", scale=(size, size), keep_ratio=False),
        dict(type="PackDetInputs", meta_keys=("img_path", "ori_shape", "img_shape", "scale_factor")),
    ])
    files = qwt_image_files(cfg, n, seed)[rank::world_size]
    for i in range(0, len(files), batch_size):
        items = [pipeline(dict(img_path=str(f), img_id=k)) for k, f in enumerate(files[i:i + batch_size])]
        data = model.get_submodule("data_preprocessor")(pseudo_collate(items), False)
        yield data["inputs"]  # (B, 3, size, size), normalized, RGB


def first_test_batch(cfg: Config) -> dict:
    """The first item of the test loader (the config's test pipeline, e.g. 1333x800 keep-ratio),
    collated as a batch of one. Taken from the dataset directly so that every process of a
    distributed run calibrates on the same image (the sampler would shard)."""
    from mmdet.registry import DATASETS

    dataset = DATASETS.build(copy.deepcopy(cfg.test_dataloader.dataset))
    return pseudo_collate([dataset[0]])


def probe_inputs(cfg: Config, model: nn.Module, n: int) -> list[Tensor]:
    """Held-out images for the backbone feature error: test-loader items 1..n (item 0 calibrates
    RepQ-ViT; QwT uses train images), each through the detector's preprocessor -> (1, 3, H, W)."""
    from mmdet.registry import DATASETS

    dataset = DATASETS.build(copy.deepcopy(cfg.test_dataloader.dataset))
    items = range(1, min(n + 1, len(dataset)))
    preprocess = model.get_submodule("data_preprocessor")
    return [preprocess(pseudo_collate([dataset[i]]), False)["inputs"] for i in items]


def test_image_files(cfg: Config, count: int) -> list[Path]:
    """The files of the first ``count`` items of the test dataset (what the RepQ-ViT calibration
    and the feature probes read)."""
    from mmdet.registry import DATASETS

    dataset = DATASETS.build(copy.deepcopy(cfg.test_dataloader.dataset))
    return [Path(dataset.get_data_info(i)["img_path"]) for i in range(min(count, len(dataset)))]


def check_images(files: Iterable[Path], what: str) -> int:
    """Decode every file with mmcv (the pipeline's decoder); raises :class:`DataError` naming the
    first one that is missing or cannot be decoded. Returns how many were checked."""
    import mmcv

    n = 0
    for path in files:
        try:
            img = mmcv.imfrombytes(Path(path).read_bytes())
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read {what} image {path} ({' '.join(str(e).split())})") from None
        if img is None:
            raise DataError(f"cannot read {what} image {path} (not a decodable image); remove or replace the file")
        n += 1
    return n


_LOAD_FAILURE = re.compile(r"failed to load image: (\S+)")


def unreadable_image(error: BaseException) -> str | None:
    """The file named by mmcv's image-loading failure in ``error`` (also when raised in a loader
    worker), else None."""
    found = [f for f in _LOAD_FAILURE.findall(str(error)) if "{" not in f]  # not the quoted source line
    return found[-1] if found else None
