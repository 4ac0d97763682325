"""Perf benchmark: QwT calibration speed and memory against the floor and a reference-style fit
(``make bench``; ``python -m benchmarks.perf.run --help``)."""
