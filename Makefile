# tolpipe: one target per stage, plus setup, test, demo, bench, lint, status.
# Stage targets take ROOT= (work root, default: this checkout) and CONFIG= (a TOML file).
#   make 01-ingest ROOT=/scratch/tol CONFIG=my.toml SOURCES="gbif:export.zip table:urls.csv"

PYTHON ?= python3
VENV ?= .venv
ROOT ?= .
CONFIG ?=
SET ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOLPIPE = $(BIN)/tolpipe --root $(ROOT) $(if $(CONFIG),--config $(CONFIG)) $(foreach s,$(SET),--set $(s))
EXTRAS ?= dev,slurm,filters,megadetector,dedup,train

.PHONY: help setup test test-fast demo bench lint status slurm-up slurm-down slurm-submit clean-venv \
	01-ingest 02-download 03-taxonomy 04-filter 05-dedup 06-shard 07-train all-stages

help:
	@echo "make setup        create $(VENV) with tolpipe[$(EXTRAS)] installed"
	@echo "make demo         the pipeline end to end on the shipped demo corpus (work root: DEMO_ROOT=demo-root)"
	@echo "make test         run the test suite"
	@echo "make bench        run the benchmarks (figures and ratios printed)"
	@echo "make lint         ruff"
	@echo "make status       per-stage progress of ROOT"
	@echo "make 01-ingest .. 07-train   run one stage on ROOT (SOURCES=, CONFIG=, SET='k=v ...')"
	@echo "make slurm-up / slurm-down   a real single-node Slurm for development and CI (root)"
	@echo "make slurm-submit  submit STAGES (default: all) on ROOT as a chain of Slurm jobs"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra --durations=15 $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check pipeline stages training tests bench demo

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b $(BENCH_ARGS) || exit 1; done

DEMO_ROOT ?= demo-root
demo: $(STAMP)
	$(BIN)/python -m demo --root $(DEMO_ROOT) $(DEMO_ARGS)

status: $(STAMP)
	@$(TOLPIPE) status

01-ingest: $(STAMP)
	$(TOLPIPE) run ingest $(foreach s,$(SOURCES),--source $(s))
02-download: $(STAMP)
	$(TOLPIPE) run download
03-taxonomy: $(STAMP)
	$(TOLPIPE) run taxonomy
04-filter: $(STAMP)
	$(TOLPIPE) run filter
05-dedup: $(STAMP)
	$(TOLPIPE) run dedup
06-shard: $(STAMP)
	$(TOLPIPE) run shard
07-train: $(STAMP)
	$(TOLPIPE) run train
all-stages: $(STAMP)
	$(TOLPIPE) run all

slurm-up:
	bash slurm/dev/up.sh
slurm-down:
	bash slurm/dev/down.sh
STAGES ?= all
slurm-submit: $(STAMP)
	$(TOLPIPE) slurm submit $(STAGES)

clean-venv:
	rm -rf $(VENV)
