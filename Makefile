# Every task of the project, from a fresh clone: `make dev` runs it locally, `make test` proves it.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY313 := $(firstword $(wildcard /root/.pyenv/versions/3.13*/bin/python3.13) $(shell command -v python3.13 2>/dev/null))
PYTHON_FOR_VENV ?= $(or $(PY313),python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON_FOR_VENV) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

deps: $(STAMP) ## create .venv (python3.13 when present) and install dependencies

dev: $(STAMP) ## run the relay locally: moto Secrets Manager, demo upstream (no key needed), uvicorn on :8000
	$(PY) -m infra.local_stack

EVENT ?= events/chat.json
invoke: $(STAMP) ## one invocation through the native streaming runtime, chunk by chunk (EVENT=...)
	$(PY) -m infra.invoke $(EVENT)

test: $(STAMP) ## run every test and check
	$(PY) -m pytest -q tests

BENCH_DEPS := .venv-bench/.installed
$(BENCH_DEPS): bench/requirements-standard.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade --target .venv-bench -r $<
	@touch $@

bench: $(STAMP) $(BENCH_DEPS) ## measure the relay against direct, baseline and buffered (BENCH_ARGS="--scale tiny")
	$(PY) -m bench.run $(BENCH_ARGS)

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

.PHONY: help deps dev test lint invoke bench
