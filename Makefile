# nightcast — two commands: `make run` and `make test`.
# Both create .venv on first use and install the pinned dependencies.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

# Offline hygiene for Prefect and friends (see README, "Configuration").
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: run test install bench ui serve clean help

help:
	@echo "make run    install (first time) and run the nightly job on the bundled sample"
	@echo "make test   install (first time) and run the test suite"
	@echo "make bench  run the benchmarks in benchmarks/"
	@echo "make ui     start the Prefect server and UI on http://127.0.0.1:4200 (Ctrl-C stops it)"
	@echo "make serve  serve the scheduled deployments (needs make ui and PREFECT_API_URL)"
	@echo "make clean  remove outputs, the lake, models and Prefect's local database"

install: $(STAMP)

# torch first, exactly 2.13.0: this machine serves it from local disk (CPU build);
# on a GPU machine the same pin resolves to the CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,dask]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/nightcast run $(ARGS)

# Two pytest-xdist workers: on 2 cores the suite took 83 s against 100 s in one process (the Prefect servers
# and CLI subprocesses wait on I/O while the other worker computes); three workers were slower. The suite has
# grown since: ~80-90 s on this 2-core machine on 2026-11-28 (README, "Development"). Work stealing: a worker
# that runs out takes queued tests from the other (with `load`, one worker finished 45 s before the other).
# `ARGS="-n 0"` runs in one process.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist worksteal $(ARGS)

ui: $(STAMP)
	$(BIN)/nightcast ui $(ARGS)

serve: $(STAMP)
	$(BIN)/nightcast serve $(ARGS)

bench: $(STAMP)
	@found=0; for b in benchmarks/[!_]*.py; do [ -f "$$b" ] || continue; found=1; \
		echo "== $$b"; $(BIN)/python $$b || exit 1; done; \
		[ $$found = 1 ] || echo "no benchmarks yet (see benchmarks/README.md)"

clean:
	rm -rf outputs data/lake data/models data/prefect
