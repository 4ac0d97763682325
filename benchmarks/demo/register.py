"""Importing this module registers the demo classifiers with ``classification.registry``, so the
suite's CLI can run them directly::

    python -m classification --import-module benchmarks.demo.register --model demo_vit \\
        --data-dir data/demo/digits --checkpoint benchmarks/demo/checkpoints/demo_vit.pth \\
        --w-bits 4 --a-bits 4
"""
from .models import register_classifiers

NAMES = register_classifiers()
