"""ImageNet classification with RepQ-ViT and QwT: registry, family adapters, data, pipeline, CLI.

Programmatic use::

    from classification import ExperimentConfig, run_experiment
    records = run_experiment(ExperimentConfig(model="deit_small", data_dir="/data/imagenet",
                                              w_bits=4, a_bits=4))
"""
from .build import build_model
from .registry import ModelSpec, get, names, register

__all__ = ["ModelSpec", "build_model", "get", "names", "register"]
