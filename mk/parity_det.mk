# Parity with the released QwT detection code (docs/parity_det.md): QwT-det-RepQ-ViT's Swin backbone,
# RepQ-ViT and QwT and this suite's detection path on the same seeded weights and inputs, one
# PASS/FAIL row per stage; exit status 0 only when none failed.
#   make parity-det REF=/path/to/QwT-det-RepQ-ViT
#   make parity-det REF=... PARITY_DET_ARGS="--archs swin_t,swin_s --w-bits 6 --a-bits 6 --seed 1 --start-block 2"
# Nothing is installed: the fork's mmcv 1.x / mmdet 2.x imports are stood in for in its side process.
PARITY_DET_ARGS ?=
PARITY_DET_NEEDS := parity-det: needs REF=<path to QwT-det-RepQ-ViT> (git archive 8be76ac QwT-det-RepQ-ViT of github.com/XJ19023/QwT-LLM)

.PHONY: parity-det
parity-det: $(if $(strip $(REF)),$(STAMP))
	$(if $(strip $(REF)),,$(error $(PARITY_DET_NEEDS)))
	$(PY) -m benchmarks.parity_det --ref $(REF) $(PARITY_DET_ARGS)
