# The embedded demo (docs/demo.md): the whole suite on scikit-learn's bundled digits, on a CPU.
#   make demo             install if needed, then FP / RepQ-ViT / RepQ-ViT+QwT for the four demo
#                         models at W4A4, W6A6, W3A3 over 3 seeds -> results/demo.md
#   make demo DEMO_ARGS="--models demo_vit --seeds 0 --bits 4 --test-limit 100"   (reduced run)
#   make demo-train       retrain the committed checkpoints (benchmarks/demo/checkpoints/*.pth + cards)
#   make demo-train-check retrain into a temporary folder and compare with the cards (±1 point)
#   make demo-data        only generate the data (data/demo/, git-ignored)
#   make demo-isa-check   the demo again with the vector ISA capped (ISA_DEFAULT, Makefile) and one
#                         thread, a stand-in for another machine, into results/records_isa/, then
#                         results/demo_isa.md: which verdicts held in both runs
DEMO_ARGS ?=
DEMO_TRAIN_ARGS ?=
ISA_RECORDS ?= results/records_isa

.PHONY: demo demo-data demo-train demo-train-check demo-isa-check
demo: $(STAMP)
	$(PY) -m benchmarks.demo.run $(DEMO_ARGS)

demo-isa-check: $(STAMP)
	env $(ISA_DEFAULT) $(PY) -m benchmarks.demo.run --records $(ISA_RECORDS) --no-table --threads 1 $(DEMO_ARGS)
	$(PY) -m benchmarks.demo.isa_check results/records $(ISA_RECORDS) --out results/demo_isa.md

demo-data: $(STAMP)
	$(PY) -m benchmarks.demo.data
	$(PY) -m benchmarks.demo.detection_data

demo-train: $(STAMP)
	$(PY) -m benchmarks.demo.train_cls $(DEMO_TRAIN_ARGS)
	$(PY) -m benchmarks.demo.train_det

demo-train-check: $(STAMP)
	$(PY) -m benchmarks.demo.train_cls --check $(DEMO_TRAIN_ARGS)
	$(PY) -m benchmarks.demo.train_det --check
