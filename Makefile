# QwT benchmark suite. `make demo` and `make test` are the two commands a newcomer needs.
PY        := .venv/bin/python
STAMP     := .venv/.installed
# DEVICE: where the experiment targets run; cuda when torch sees a GPU, else cpu (DEVICE=cpu forces the CPU)
DEVICE    ?= $(shell $(PY) -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')" 2>/dev/null || echo cpu)
# CKPT_DIR: the one checkpoint folder (ResNet and detector release files, local timm weights), as the CLIs' default
CKPT_DIR  ?= checkpoints
GPUS      ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: install test demo tables tables-check bench help
help:
	@echo "make demo            embedded default: digits, small models, CPU -> results/demo.md"
	@echo "make test            the test suite"
	@echo "make install         .venv from the package registries (mmcv built once, wheel cached)"
	@echo "make imagenet-<model>-w<b>a<b> IMAGENET=DIR [CKPT_DIR=checkpoints DEVICE=cuda|cpu GPUS=N]   (make imagenet-list)"
	@echo "make imagenet-<resnet>-strict-w<b>a<b>   ResNet with conv inputs at the requested bits"
	@echo "make coco-<detector>-w<b>a<b> COCO=DIR [CKPT_DIR=checkpoints DEVICE=cuda|cpu GPUS=N]"
	@echo "  DEVICE defaults to cuda when torch sees a GPU, else cpu"
	@echo "make parity REF=<QwT-cls-RepQ-ViT>   the released reference vs this suite, stage by stage"
	@echo "make imagenet-all | coco-all | tables | tables-check | plots | bench | demo-train"

install: $(STAMP)
$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh
	@touch $@

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests

-include mk/*.mk
