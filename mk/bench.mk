# Calibration speed and memory (docs/perf.md): every ratio with its target -> results/perf.md + a
# suite "perf" record. Runs on the CPU (about 15 minutes on 2 cores, one torch thread) or on a GPU
# when present.
#   make bench                       default counts (CPU: 64 QwT images at 224 px; GPU: 512, as the reference)
#   make bench BENCH_ARGS=--quick    fewer images, one repeat
#   make bench BENCH_ARGS=--full     more images and repeats
#   make bench BENCH_DEVICE=cpu      force the CPU on a GPU machine
#   make bench REF=/path/to/QwT-cls-RepQ-ViT   figure 2: the released code beside our default path
#                                              (without REF figure 2 is skipped with one line)
BENCH_ARGS   ?=
BENCH_DEVICE ?= $(shell $(PY) -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')" 2>/dev/null || echo cpu)

bench: $(STAMP)
	$(PY) -m benchmarks.perf.run --device $(BENCH_DEVICE) $(if $(strip $(REF)),--ref $(REF)) $(BENCH_ARGS)
