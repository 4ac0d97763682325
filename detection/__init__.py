"""COCO detection for the QwT benchmark suite: the five Swin detectors of the QwT table on
mmdet 3.3 (configs, release-checkpoint conversion, RepQ-ViT + QwT, CocoMetric records).

Entry points: ``python -m detection`` / ``qwt-detect`` (:mod:`detection.cli`) and
:func:`detection.pipeline.run_experiment`. Importing this package does not import mmdet.
"""
