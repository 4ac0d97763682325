# ImageNet classification (RepQ-ViT + QwT): one target per (model, bits), see docs/classification.md.
#   make imagenet-deit_small-w4a4 IMAGENET=/data/imagenet           # fp, repq, repq+qwt records
#   make imagenet-resnet50-w4a4 IMAGENET=/data/imagenet CKPT_DIR=/ckpt  # fp, percentile, percentile+qwt
#                                                               # (default CKPT_DIR: checkpoints/)
#   make imagenet-resnet50-strict-w4a4 ...                          # conv inputs at 4 bits too
#   make imagenet-all                                               # the whole QwT table
# Any bits 2..8 work (imagenet-deit_tiny-w3a5). CLS_ARGS passes extra CLI options
# (e.g. CLS_ARGS="--val-limit 1000"); CLS_TABLES=0 skips regenerating the tables.
# GPUS=N (N > 1) runs N processes under torchrun (python -m torch.distributed.run --standalone):
#   make imagenet-deit_small-w4a4 IMAGENET=/data/imagenet DEVICE=cuda GPUS=8   # see docs/distributed.md
# CKPT_DIR (default checkpoints/) and DEVICE (default: cuda when torch sees a GPU) come from the Makefile.
IMAGENET   ?= data/imagenet
CLS_ARGS   ?=
CLS_TABLES ?= 1
cls_comma  := ,

# one process, or torchrun with GPUS processes on this machine (same records, world_size = GPUS)
ifeq ($(strip $(GPUS)),1)
CLS_RUN = $(PY) -m classification
else
CLS_RUN = $(PY) -m torch.distributed.run --standalone --nproc_per_node $(GPUS) -m classification
endif

# the table's targets (each model's w4a4 / w6a6, then the ResNet strict ones) come from the experiment
# registry, the one list of models (benchmarks/registry.py: standard library only, any python 3 runs it)
REGISTRY_PY ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
CLS_TARGETS := $(shell $(REGISTRY_PY) -m benchmarks.registry targets imagenet)

# imagenet-<model>[-strict]-w<W>a<A>: $(1) is the stem "<model>[-strict]-w<W>a<A>"
cls_words  = $(subst -, ,$(1))
cls_model  = $(firstword $(call cls_words,$(1)))
cls_bits   = $(subst a, ,$(patsubst w%,%,$(lastword $(call cls_words,$(1)))))
cls_strict = $(filter strict,$(call cls_words,$(1)))
cls_check  = $(if $(and $(filter 2,$(words $(call cls_bits,$(1)))),$(if $(filter-out 2 3 4 5 6 7 8,$(call cls_bits,$(1))),,ok)),,\
               $(error imagenet-$(1): expected imagenet-<model>[-strict]-w<2..8>a<2..8>, e.g. imagenet-deit_small-w4a4))

.PHONY: imagenet-all imagenet-list
imagenet-all: $(CLS_TARGETS)

imagenet-list:
	@echo $(CLS_TARGETS) | tr ' ' '\n'

imagenet-%: $(STAMP)
	$(call cls_check,$*)
	$(CLS_RUN) --model $(call cls_model,$*) \
	  --w-bits $(word 1,$(call cls_bits,$*)) --a-bits $(word 2,$(call cls_bits,$*)) \
	  $(if $(call cls_strict,$*),--methods fp$(cls_comma)percentile_strict$(cls_comma)percentile_strict+qwt) \
	  --data-dir $(IMAGENET) --checkpoint-dir $(CKPT_DIR) --device $(DEVICE) $(CLS_ARGS)
	$(if $(and $(wildcard mk/tables.mk),$(filter 1,$(CLS_TABLES))),$(MAKE) --no-print-directory tables)
