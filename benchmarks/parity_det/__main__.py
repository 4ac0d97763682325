"""``python -m benchmarks.parity_det``: see :mod:`benchmarks.parity_det.run`."""
import sys

from .run import main

sys.exit(main())
