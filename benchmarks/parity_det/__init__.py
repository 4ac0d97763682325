"""``make parity-det REF=<QwT-det-RepQ-ViT>``: the released QwT detection code and this suite's
default detection path, stage by stage, on the Swin backbone (docs/parity_det.md).

- :mod:`.standins`: what the side process stands in for (mmcv 1.x / mmdet 2.x imports of the fork);
- :mod:`.reference`: the reference's side (the fork's files run unchanged; imports no suite code);
- :mod:`.suite`: the suite's side on a dump's weights and inputs (mmdet 3, detection/, qwt_core);
- :mod:`.compare`: one row per stage (the measures and tolerances of ``make parity``);
- :mod:`.run`: the command line (``python -m benchmarks.parity_det``).
"""
