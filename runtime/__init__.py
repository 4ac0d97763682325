"""runtime: what an experiment needs around the algorithm, shared by both suites.

Layers (import-linter contracts in pyproject.toml): benchmarks > classification | detection >
runtime > qwt_core. Modules:
    config       RunConfig (the settings both suites share, QwTConfig nested) and the CLI flags generated from it
    experiment   run(task, config): the ten steps of an experiment, once; the Task protocol
    records      result records + provenance (git, versions, machine description)
    legacy       the reader of older records' config into the typed run config
    preflight    checks before any work (outputs writable, device, seed, workers)
    distributed  torchrun launch helpers (bind_device, init / teardown, shards, broadcast, gather)
    errors       BadInput, CheckpointError, one_line
    methods      method names and the ResNet percentile constants
    machine      the machine description recorded with every result
"""
