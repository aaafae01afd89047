# MiniMind Book — every target a reader, a teacher or CI needs. `make help` lists them.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
CHAPTERS_PY := $(sort $(wildcard chapters/[0-9][0-9]_*.py))
CHAPTERS_NB := $(CHAPTERS_PY:.py=.ipynb)
export PYTHONHASHSEED := 0
export TOKENIZERS_PARALLELISM := false
# make test runs one chapter per core: each computes on one thread (a learner's run uses every core)
TEST_ENV := MINIMIND_THREADS=1

.PHONY: help venv data notebooks sync check-sync layers unit nbval test zoo test-portable bands rl-ablation book vendor bench ci clean

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(PY) -m pip install -q -r requirements.txt 2>&1 | grep -v "is ignored" || true
	$(PY) -m pip install -q --no-deps -e . 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import torch, minimind, tokenizers, jupytext, nbval, transformers"
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install requirements + the package (editable)

data: $(STAMP)  ## regenerate the synthetic datasets in data/
	$(PY) -m minimind.data.synthetic --out data

sync: $(STAMP)  ## regenerate every chapter .ipynb from its .py (keeps stored outputs)
	$(BIN)/jupytext -q --to ipynb --update $(CHAPTERS_PY)

notebooks: sync  ## regenerate and re-execute every chapter so stored outputs are fresh
	@for nb in $(CHAPTERS_NB); do echo "executing $$nb"; \
	  $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=1200 --ExecutePreprocessor.record_timing=False \
	    --ExecutePreprocessor.store_widget_state=True $$nb || exit 1; done

check-sync: $(STAMP)  ## fail if any chapter .ipynb differs from its .py source
	$(PY) scripts/check_sync.py $(CHAPTERS_PY)

vendor:  ## vendor MathJax and the widget manager (no CDN at view time)
	bash scripts/vendor_assets.sh

book: $(STAMP) vendor  ## build the website into _build/html (offline, warnings are errors)
	$(BIN)/jupyter-book build --all -W -n --keep-going --builder html .

layers: $(STAMP)  ## check the package's import layering and that it has no cycles (import-linter; also part of unit)
	$(BIN)/lint-imports --no-cache

unit: $(STAMP)  ## unit tests only
	$(BIN)/pytest -q tests

# nbval runs every cell of every chapter; it compares the stored output only of the cells marked
# `# NBVAL_CHECK_OUTPUT` (exact by construction: shapes, token ids, counts, equality flags). Every
# figure float rounding can move is asserted by the chapter itself against a band measured across
# seeds and kernel paths (minimind/checks/bands.py, scripts/measure_bands.py). A chapter's first
# cell may wait on the zoo's lock while the other worker builds an artefact it loads (chapter 10
# waited 935 s for the reasoning models in one CI run), hence the long cell timeout.
NBVAL := --nbval-lax --nbval-current-env --nbval-sanitize-with nbval_sanitize.cfg --nbval-cell-timeout 2400

nbval: $(STAMP)  ## execute every chapter: its asserts and bands, and the stored outputs of its exact cells
	$(TEST_ENV) $(BIN)/pytest -q $(NBVAL) -p no:cacheprovider $(CHAPTERS_NB)

# The chapters as another CPU runs them: torch's scalar kernels, then MKL's AVX2 code path, each in
# an artefact cache of its own (the cached models are trained under that kernel path too).
PORTABLE_PATHS ?= ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=AVX2

test-portable: $(STAMP)  ## every chapter under other kernel paths (as on another CPU); about 40 min
	@set -e; for path in $(PORTABLE_PATHS); do echo "== chapters under $$path"; \
	  cache=$(CURDIR)/.cache/minimind-$$(echo $$path | tr 'A-Z=' 'a-z-'); \
	  env $(TEST_ENV) $$path MINIMIND_CACHE=$$cache $(PY) -m minimind.zoo build --jobs $(ZOO_JOBS); \
	  env $(TEST_ENV) $$path MINIMIND_CACHE=$$cache \
	    $(BIN)/pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile $(NBVAL) $(CHAPTERS_NB); done

BAND_RUNS ?= 0:native 1:native 2:native 0:default 1:mkl-avx2 2:threads2

bands: $(STAMP)  ## re-measure the chapters' reproducibility bands (3 seeds, 3 kernel paths, 2 thread counts; ~2 hours)
	$(PY) scripts/measure_bands.py --runs $(BAND_RUNS)

# `make test` first builds the zoo (every artefact the chapters load, ZOO_JOBS builds at a time in
# dependency order, one thread each) while the unit tests run beside it on one worker; then every
# chapter, one pytest worker per core (each chapter on one thread: TEST_ENV), a file at a time. With
# the artefacts built, no chapter cell waits on another worker's build (before, chapter 10 waited up
# to 20 minutes for the reasoning models). TEST_WORKERS=0: one process.
TEST_WORKERS ?= auto
ZOO_JOBS ?= 2
ZOO_LOG := .cache/zoo-build.log

test: $(STAMP) check-sync book  ## every test: sync check, book build, zoo build beside the unit tests, then every chapter
	@mkdir -p .cache; status=0; \
	$(TEST_ENV) $(PY) -m minimind.zoo build --jobs $(ZOO_JOBS) > $(ZOO_LOG) 2>&1 & zoo=$$!; \
	$(TEST_ENV) $(BIN)/pytest -q -p no:cacheprovider --durations=10 tests || status=$$?; \
	wait $$zoo || { echo "zoo build failed:"; tail -n 40 $(ZOO_LOG); exit 1; }; cat $(ZOO_LOG); \
	$(TEST_ENV) $(BIN)/pytest -q -p no:cacheprovider --durations=15 -n $(TEST_WORKERS) --dist loadfile $(NBVAL) \
	  $(CHAPTERS_NB) || status=$$?; \
	exit $$status

zoo: $(STAMP)  ## build every artefact of the zoo ahead of the chapters (ZOO_JOBS at a time)
	$(PY) -m minimind.zoo build --jobs $(ZOO_JOBS)

rl-ablation: $(STAMP)  ## chapter 12's ablation: GRPO with and without KL, CISPO, PPO, 2 updates, weakest kind only; 3 seeds each (~55 min)
	$(TEST_ENV) $(PY) scripts/rl_ablation.py

bench: $(STAMP)  ## speed and memory benchmarks (prints tables and ratios)
	$(PY) -m benchmarks

ci: test  ## what .ci/run runs

clean:  ## remove build outputs (keeps .venv and the artefact cache)
	rm -rf _build .pytest_cache

# --- The website: figures, measured chapter costs, browser and Colab tests -----------------------
.PHONY: widget-fonts figures chapter-times site-test colab-test

vendor: widget-fonts

widget-fonts:  ## vendor the widget manager's icon fonts into _extra/widgets (part of `make vendor`)
	bash scripts/vendor_widget_fonts.sh

figures: $(STAMP)  ## redraw the book's figures (pipeline diagram, site icon)
	$(PY) scripts/make_figures.py

chapter-times: $(STAMP)  ## time every chapter under nbval here; refreshes the landing page's cost table
	$(PY) scripts/chapter_times.py

site-test: book  ## open every page of the website in headless Chromium (screenshots: _build/screenshots)
	$(BIN)/pytest -q -p no:cacheprovider tests/test_book_site.py

colab-test: $(STAMP)  ## execute a chapter in a clean venv that installs the package from a wheel, as Colab does
	$(BIN)/pytest -q -p no:cacheprovider tests/test_colab_bootstrap.py
