"""``python -m tests.distributed.failing_run RANK STEP <classification args>``: the classification
CLI with one step made to fail on one rank (monkeypatched here, so the pipeline carries no fault
injection). STEP is a function of :mod:`runtime.experiment` (``_fit``: QwT starts)."""
from __future__ import annotations

import os
import sys

import pytest


class InjectedFailure(RuntimeError):
    """The failure this test module injects."""


def main(argv: list[str]) -> int:
    rank, step, rest = int(argv[0]), argv[1], argv[2:]
    from classification.cli import main as cli_main
    from runtime import experiment

    if int(os.environ.get("RANK", "0")) == rank:
        def fail(*args: object, **kwargs: object) -> None:
            raise InjectedFailure(f"injected failure on rank {rank} at step {step!r}")
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(experiment, step, fail)
            return cli_main(rest)
    return cli_main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
