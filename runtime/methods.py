"""Method names and settings shared by the classification and detection suites.

- ``QWT``: the suffix of a compensated method (``repq+qwt``, ``percentile+qwt``): the
  ``<base>+qwt`` method reuses the calibrated ``<base>`` model of the same run;
- the ResNet percentile method (classification ResNets and detection ResNet backbones alike):
  the stem conv and the classifier at :data:`EDGE_BITS`; ``percentile`` keeps every other conv's
  inputs at :data:`REFERENCE_CONV_A_BITS` (the released code, whatever a_bits says),
  ``percentile_strict`` puts them at a_bits.
"""
from __future__ import annotations

QWT = "+qwt"
EDGE_BITS = 8  # ResNet conv1 and fc: weights and inputs
REFERENCE_CONV_A_BITS = 8  # ResNet conv inputs in the released code, whatever a_bits says


def base_of(method: str) -> str:
    """``repq+qwt`` -> ``repq``; a base method is returned as is."""
    return method.removesuffix(QWT)
