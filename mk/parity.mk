# Parity with the released QwT code (docs/parity.md): the reference and this suite on the same
# seeded weights and inputs, one PASS/FAIL row per stage; exit status 0 only when none failed.
#   make parity REF=/path/to/QwT-cls-RepQ-ViT
#   make parity REF=... PARITY_ARGS="--models deit_small_distilled,resnet50 --w-bits 6 --a-bits 6 --seed 1"
#   make parity REF=... PARITY_ARGS="--side-env DIR --keep-dumps DIR --json parity.json"
# The reference runs beside timm 0.4.12, installed once with pip into ~/.cache/qwt/parity/timm-0.4.12.
REF         ?=
PARITY_ARGS ?=
PARITY_NEEDS := parity: needs REF=<path to QwT-cls-RepQ-ViT> (git archive 8be76ac QwT-cls-RepQ-ViT of github.com/XJ19023/QwT-LLM)

.PHONY: parity
parity: $(if $(strip $(REF)),$(STAMP))
	$(if $(strip $(REF)),,$(error $(PARITY_NEEDS)))
	$(PY) -m benchmarks.parity --ref $(REF) $(PARITY_ARGS)
