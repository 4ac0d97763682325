# COCO detection: RepQ-ViT and QwT on the five Swin detectors of the QwT COCO table (mmdet 3.3).
#   make coco-cascade_mask_rcnn_swin_t-w4a4 COCO=/data/coco [CKPT_DIR=checkpoints] [DEVICE=cuda] [GPUS=1]
#   make coco-all COCO=/data/coco                    # every row: W4A4 and W6A6 (+ FP once)
# Release checkpoints (Swin-Transformer-Object-Detection, see docs/detection.md) go in CKPT_DIR
# (default checkpoints/, set in the Makefile with DEVICE: cuda when torch sees a GPU, else cpu).
# COCO_METHODS picks the methods (default: the backbone's, fp,repq,repq+qwt for Swin and
# fp,percentile,percentile+qwt for ResNet); COCO_ARGS passes extra CLI options
# (e.g. COCO_ARGS="--val-limit 500").
# Beyond the paper (no paper values): mmdet's own configs with their openmmlab checkpoints
# (file names in detection/registry.py, ZOO_DETECTORS; they go in CKPT_DIR too; the list: benchmarks/registry.py):
#   make coco-mask_rcnn_r50_fpn_1x-w4a4 COCO=/data/coco     # also retinanet_r50_fpn_1x, mmdet_mask_rcnn_swin_t_3x
#   make coco-zoo-all COCO=/data/coco
COCO         ?= data/coco
COCO_METHODS ?=
COCO_ARGS    ?=
# the detectors (the paper's, then those beyond it) and each one's quantized methods come from the
# experiment registry (benchmarks/registry.py), read when a recipe needs them
REGISTRY_PY ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
coco_registry = $(shell $(REGISTRY_PY) -m benchmarks.registry $(1))
COCO_PAPER_DETECTORS = $(call coco_registry,models coco)
COCO_ZOO_DETECTORS = $(call coco_registry,models coco --beyond-paper)
COCO_DETECTORS = $(COCO_PAPER_DETECTORS) $(COCO_ZOO_DETECTORS)
# the quantized methods of a detector's backbone, e.g. percentile,percentile+qwt
coco_quant = $(call coco_registry,methods coco $(1))

# one process, or torchrun with GPUS processes (mmengine's 'pytorch' launcher)
ifeq ($(strip $(GPUS)),1)
DET_RUN = $(PY) -m detection
else
DET_RUN = $(PY) -m torch.distributed.run --standalone --nproc_per_node $(GPUS) -m detection --launcher pytorch
endif

# coco-<detector>-w<b>a<b>: the stem is split at '-' into detector and bits, "w4a4" at 'a'.
coco-%: $(STAMP)
	$(eval _det := $(firstword $(subst -, ,$*)))
	$(eval _bits := $(lastword $(subst -, ,$*)))
	$(if $(filter $(_det),$(COCO_DETECTORS)),,$(error unknown detector '$(_det)'; choose from $(COCO_DETECTORS)))
	$(if $(filter w%,$(_bits)),,$(error expected coco-<detector>-w<b>a<b>, got coco-$*))
	$(DET_RUN) --detector $(_det) --data-dir $(COCO) --checkpoint-dir $(CKPT_DIR) \
	  --w-bits $(patsubst w%,%,$(firstword $(subst a, ,$(_bits)))) --a-bits $(lastword $(subst a, ,$(_bits))) \
	  $(if $(strip $(COCO_METHODS)),--methods $(COCO_METHODS)) --device $(DEVICE) $(COCO_ARGS)
	$(if $(wildcard mk/tables.mk),$(MAKE) --no-print-directory tables)

.PHONY: coco-all
coco-all: $(STAMP)
	@set -e; for d in $(COCO_PAPER_DETECTORS); do \
	  $(MAKE) --no-print-directory coco-$$d-w4a4 COCO_METHODS=fp,repq,repq+qwt; \
	  $(MAKE) --no-print-directory coco-$$d-w6a6 COCO_METHODS=repq,repq+qwt; \
	done
	$(if $(wildcard mk/tables.mk),$(MAKE) --no-print-directory tables)

.PHONY: coco-zoo-all
coco-zoo-all: $(STAMP)
	$(foreach d,$(COCO_ZOO_DETECTORS),$(MAKE) --no-print-directory coco-$(d)-w4a4 COCO_METHODS=fp,$(call coco_quant,$(d)) && \
	  $(MAKE) --no-print-directory coco-$(d)-w6a6 COCO_METHODS=$(call coco_quant,$(d)) && ) true
	$(if $(wildcard mk/tables.mk),$(MAKE) --no-print-directory tables)
