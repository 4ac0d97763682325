"""``make parity REF=<QwT-cls-RepQ-ViT>``: the released QwT reference and this suite, stage by stage.

- :mod:`.reference`: the reference's side (side environment with timm 0.4.12; imports no suite code);
- :mod:`.suite`: the suite's side on a dump's weights and inputs, through the public API;
- :mod:`.compare`: one row per stage, the tolerances, what decides and what only informs;
- :mod:`.table`: the printed table; :mod:`.side_env`: timm 0.4.12 in a cached folder;
- :mod:`.suite_dump`: a dump written by the suite itself (tests of the comparison without the reference);
- :mod:`.run`: the command line (``python -m benchmarks.parity``).
"""
