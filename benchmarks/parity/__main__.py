"""``python -m benchmarks.parity``: see :mod:`benchmarks.parity.run`."""
import sys

from .run import main

sys.exit(main())
