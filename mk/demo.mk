# The embedded demo (docs/demo.md): the whole suite on scikit-learn's bundled digits, on a CPU.
#   make demo             install if needed, then FP / RepQ-ViT / RepQ-ViT+QwT for the four demo
#                         models at W4A4, W6A6, W3A3 over 3 seeds -> results/demo.md
#   make demo DEMO_ARGS="--models demo_vit --seeds 0 --bits 4 --test-limit 100"   (reduced run)
#   make demo-train       retrain the committed checkpoints (benchmarks/demo/checkpoints/*.pth + cards)
#   make demo-train-check retrain into a temporary folder and compare with the cards (±1 point)
#   make demo-data        only generate the data (data/demo/, git-ignored)
DEMO_ARGS ?=
DEMO_TRAIN_ARGS ?=

.PHONY: demo demo-data demo-train demo-train-check
demo: $(STAMP)
	$(PY) -m benchmarks.demo.run $(DEMO_ARGS)

demo-data: $(STAMP)
	$(PY) -m benchmarks.demo.data
	$(PY) -m benchmarks.demo.detection_data

demo-train: $(STAMP)
	$(PY) -m benchmarks.demo.train_cls $(DEMO_TRAIN_ARGS)
	$(PY) -m benchmarks.demo.train_det

demo-train-check: $(STAMP)
	$(PY) -m benchmarks.demo.train_cls --check $(DEMO_TRAIN_ARGS)
	$(PY) -m benchmarks.demo.train_det --check
