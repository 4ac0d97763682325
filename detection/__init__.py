"""COCO detection for the QwT benchmark suite: the five Swin detectors of the QwT table on
mmdet 3.3 (configs, release-checkpoint conversion, RepQ-ViT + QwT, CocoMetric records), and any
mmdet 3.x detector with a Swin or ResNet / ResNetV1d / ResNeXt backbone (:mod:`detection.backbones`;
ResNet backbones: percentile + grouped-conv QwT, :mod:`detection.cnn`).

Entry points: ``python -m detection`` / ``qwt-detect`` (:mod:`detection.cli`) and
:func:`detection.pipeline.run_experiment`. Importing this package does not import mmdet.
"""
