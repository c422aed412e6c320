# brainalign: the two commands of the README are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(VENV)/bin

.PHONY: venv demo test test-fast check docs docs-figures bench bench-analysis bench-scale dryrun-paper registry lint clean weights

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/pip install --disable-pip-version-check -q --no-deps -e .
	@# numba compiles UMAP's kernels on first use and caches those it may in site-packages: once here,
	@# not in the first run's figure job (~16 s of its ~30 s)
	$(BIN)/python -c "import numpy as np, brainalign.analysis.reference as a, pandas as pd; a.umap_embedding(pd.DataFrame(np.random.default_rng(0).random((40, 12))))" > /dev/null 2>&1 || true
	@touch $@

demo: venv
	@start=$$(date +%s); \
	$(BIN)/snakemake --cores $(CORES) && \
	echo "workflow finished in $$(( $$(date +%s) - start )) s" && \
	echo "tables:  results/tables/vision_all.parquet results/tables/language_all.parquet" && \
	echo "figures: results/figures/performance/brain_score_vs_benchmark.{png,pdf,csv}"

# Two pytest workers (TEST_WORKERS=0: one process); the demo run the workflow tests read starts in the
# background at collection and builds while the unit tests run (tests/conftest.py).
TEST_WORKERS ?= 2
test: venv
	$(BIN)/python -m pytest -q -rs --durations=15 -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

# Unit tests only (no Snakemake runs, no SLURM): the edit loop.
test-fast: venv
	$(BIN)/python -m pytest -q -m "not workflow and not slurm" -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

# Static checks, run by CI before the tests: ruff (rule set in pyproject.toml), snakefmt, Snakemake's
# linter, the conda envs' pins against requirements.txt, and a strict build of the documentation (a broken
# link or anchor, a missing page or an API object that does not resolve fails it).
check: venv
	$(BIN)/ruff check src tests scripts tools
	$(BIN)/snakefmt --check workflow
	$(BIN)/snakemake --lint
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_envs.py
	@tmp=$$(mktemp -d) && NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d $$tmp; rc=$$?; rm -rf $$tmp; exit $$rc

# The documentation site (MkDocs + Material, offline): regenerate docs/configuration.md from the config
# schema, then build into $(DOCS_DIR). Open $(DOCS_DIR)/index.html.
DOCS_DIR ?= build/docs
docs: venv
	$(BIN)/python tools/gen_config_docs.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d $(DOCS_DIR)

# The documentation's figures are the demo's own outputs: build them (only what is missing) and copy
# them into docs/figures/ at a web size (tools/docs_figures.py), and screenshot the results explorer in
# headless Chromium (tools/explorer_screenshots.py; sudo tools/install_browser.sh installs it); commit the result.
docs-figures: venv
	$(BIN)/snakemake --cores $(CORES) $$($(BIN)/python tools/docs_figures.py --targets)
	$(BIN)/python tools/docs_figures.py
	$(BIN)/python tools/explorer_screenshots.py

lint: check

clean:
	rm -rf results .snakemake

bench: venv
	$(BIN)/python -m brainalign.bench $(BENCH_ARGS)

# Statistics and figures from a paper-size pair of synthetic tables (~2 x 10^8 rows): time and peak RSS per job.
bench-analysis: venv
	$(BIN)/python -m brainalign.bench.analysis --cores $(CORES) $(BENCH_ARGS)

# Peak RSS and time of ingest (full cortex) and of a 9,000-image feature job on a synthetic release of NSD's shape.
bench-scale: venv
	$(BIN)/python -m brainalign.bench.scale $(BENCH_ARGS)

# Fetch the weights of the config's models into the local Hugging Face cache (HF_HOME / HF_HUB_CACHE), on a node
# with internet (a login node); compute nodes then load them offline. Resumable: a second run fetches nothing.
#   make weights WEIGHTS_ARGS="--configfile config/nsd_paper.yaml"   (--dry-run: list what would be fetched)
weights: venv
	$(BIN)/python scripts/weights.py $(WEIGHTS_ARGS)

# Regenerate config/registry/*.yaml from the paper's reference tables (developer tool).
REFERENCE ?= ../shared/reference
registry: venv
	$(BIN)/python tools/make_registry.py $(REFERENCE)

# Dry-run of the paper's whole registry (config/nsd_paper.yaml) against a placeholder NSD of empty files.
dryrun-paper: venv
	@tmp=$$(mktemp -d) && $(BIN)/python tools/placeholder_nsd.py $$tmp/nsd > /dev/null && \
	start=$$(date +%s%N) && \
	$(BIN)/snakemake -n --quiet rules --cores 2 --configfile config/nsd_paper.yaml --config nsd_root=$$tmp/nsd \
	  > $$tmp/dryrun.log 2>&1; rc=$$?; end=$$(date +%s%N); \
	grep -m3 -E "^(features|align|total) " $$tmp/dryrun.log; \
	echo "dry-run of config/nsd_paper.yaml: $$(grep -m1 -E '^total ' $$tmp/dryrun.log | awk '{print $$2}') jobs" \
	  "in $$(( (end - start) / 1000000 )) ms"; \
	rm -rf $$tmp; exit $$rc
