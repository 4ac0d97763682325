# Results tables and plots, rendered from the records (see docs/tables.md).
#   make tables        render results/{imagenet,coco,demo}.md and results/qwt_blocks/*.png
#   make tables-check  fail if a results/*.md differs from a fresh render (hand edit, stale table)
#   make plots         only the per-block PNGs
# RECORDS / RESULTS point elsewhere for tests or scratch runs:
#   make tables RECORDS=/tmp/recs RESULTS=/tmp/out
# Experiment targets end with `$(MAKE) --no-print-directory tables` so the tables stay current.
RECORDS ?= results/records
RESULTS ?= results
TABLES_PY ?= $(PY)

.PHONY: tables tables-check plots
tables:
	@$(TABLES_PY) -m benchmarks.tables render --records $(RECORDS) --out $(RESULTS)

tables-check:
	@$(TABLES_PY) -m benchmarks.tables check --records $(RECORDS) --out $(RESULTS)

plots:
	@$(TABLES_PY) -m benchmarks.plots --records $(RECORDS) --out $(RESULTS)
