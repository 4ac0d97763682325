# QwT benchmark suite. `make demo` and `make test` are the two commands a newcomer needs.
PY        := .venv/bin/python
STAMP     := .venv/.installed
DEVICE    ?= cpu
GPUS      ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: install test demo tables tables-check bench help
help:
	@echo "make demo | test | install | tables | tables-check | bench | imagenet-<model>-w<b>a<b> | coco-<detector>-w<b>a<b>"

install: $(STAMP)
$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh
	@touch $@

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests

-include mk/*.mk
