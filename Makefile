# Every task of the project, from a fresh clone: `make dev` runs it locally, `make test` proves it.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# CPython 3.13: pyenv's, else python3.13 on PATH (setup-python puts it there in CI).
ifndef PY313
PY313 := $(firstword $(wildcard $(or $(PYENV_ROOT),$(HOME)/.pyenv)/versions/3.13*/bin/python3.13) $(shell command -v python3.13 2>/dev/null))
endif
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

dev: $(STAMP) ## run the relay locally: moto Secrets Manager, demo upstream (no key needed), anonymous access, uvicorn on :8000
	$(PY) -m infra.local_stack

chat: $(STAMP) ## console client against the local relay (ARGS='--url URL --token T "prompt"')
	$(PY) tools/chat.py $(ARGS)

EVENT ?= events/chat.json
invoke: $(STAMP) ## one invocation through the native streaming runtime, chunk by chunk (EVENT=...)
	$(PY) -m infra.invoke $(EVENT)

# SAM CLI pins its own dependency versions, so it lives in a venv of its own.
SAM_STAMP := .venv-sam/.installed
$(SAM_STAMP): requirements-sam.txt
	@test -x .venv-sam/bin/python || $(PYTHON_FOR_VENV) -m venv .venv-sam
	.venv-sam/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-sam.txt
	@touch $@

chromium: ## Debian's Chromium for the page's browser tests (Playwright's download does not work here)
	@command -v chromium >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

valgrind: ## Debian's valgrind, whose callgrind counts the instructions per request of `make bench`
	@command -v valgrind >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq valgrind; }

# The Vercel AI SDK (`ai`) as a test client of /api/chat, exactly as pinned in its lockfile.
AI_SDK_STAMP := clients/ai-sdk/node_modules/.package-lock.json
$(AI_SDK_STAMP): clients/ai-sdk/package-lock.json
	@command -v npm >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq nodejs npm; }
	cd clients/ai-sdk && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

node-deps: $(AI_SDK_STAMP) ## install the Node test clients from their lockfile (npm ci)

test: $(STAMP) $(SAM_STAMP) chromium valgrind $(AI_SDK_STAMP) ## run every test and check
	$(PY) -m pytest -q tests

test-fast: $(STAMP) valgrind $(AI_SDK_STAMP) ## every test except the browser and SAM CLI ones (no Chromium, no .venv-sam)
	$(PY) -m pytest -q tests -m "not browser and not sam"

bench: $(STAMP) valgrind ## measure the relay against direct, baseline and buffered (BENCH_ARGS="--scale tiny", "--only plans,tool_round_trip")
	$(PY) -m bench.run $(BENCH_ARGS)

bench-cold: $(STAMP) ## only the Lambda-shaped figure, quickly, into bench/results (COLD_ARGS="--scale full")
	$(PY) -m bench.cold $(COLD_ARGS)

# The Lambda package, built the same way on any host without Docker (SAM's makefile build calls
# build-RelayFunction with ARTIFACTS_DIR): manylinux wheels for the target architecture and
# CPython 3.13, the handler, no tests or caches, and bytecode compiled ahead of time so a cold
# start does not compile. boto3 is left to the Lambda runtime (see docs/deploy.md, "Build").
ARCH ?= arm64
WHEEL_PLATFORM := $(if $(filter arm64 aarch64,$(ARCH)),manylinux2014_aarch64,manylinux2014_x86_64)
ARTIFACTS_DIR ?= build/relay
build-RelayFunctionOnInstances: build-RelayFunction  # the same package on Lambda Managed Instances
build-RelayFunction:
	@test -n "$(PY313)" || { echo "python3.13 is needed to precompile for the Lambda runtime"; exit 1; }
	@case "$(strip $(ARTIFACTS_DIR))" in ""|/) echo "refusing to build into ARTIFACTS_DIR='$(ARTIFACTS_DIR)'"; exit 1;; esac
	rm -rf "$(ARTIFACTS_DIR)"/* && mkdir -p "$(ARTIFACTS_DIR)"
	grep -vE '^(boto3|botocore)==' requirements.txt > "$(ARTIFACTS_DIR)/.requirements-lambda.txt"
	$(PY313) -m pip install --quiet --disable-pip-version-check --no-compile \
	  --platform $(WHEEL_PLATFORM) --implementation cp --python-version 3.13 \
	  --only-binary=:all: --target "$(ARTIFACTS_DIR)" -r "$(ARTIFACTS_DIR)/.requirements-lambda.txt"
	rm -f "$(ARTIFACTS_DIR)/.requirements-lambda.txt"
	rm -rf "$(ARTIFACTS_DIR)/bin"
	find "$(ARTIFACTS_DIR)" -depth \( -name __pycache__ -o -name tests -o -name '*.dist-info' \) -type d \
	  -not -path '*/.dist-info/*' -exec sh -c 'case "$$1" in *.dist-info) rm -f "$$1/RECORD" "$$1/INSTALLER" "$$1/REQUESTED" "$$1/direct_url.json";; *) rm -rf "$$1";; esac' _ {} \;
	find "$(ARTIFACTS_DIR)" -name '*.pyi' -delete
	cp -R handler "$(ARTIFACTS_DIR)/handler" && find "$(ARTIFACTS_DIR)/handler" -name __pycache__ -prune -exec rm -rf {} +
	$(PY313) -m compileall -q -j 0 --invalidation-mode unchecked-hash "$(ARTIFACTS_DIR)" > /dev/null

package: ## build the Lambda zip (ARCH=arm64|x86_64) and print its size
	$(MAKE) --no-print-directory build-RelayFunction ARTIFACTS_DIR=build/relay
	$(PY313) -m infra.build.zip_package build/relay build/relay.zip

openapi: $(STAMP) ## regenerate docs/openapi.json from the app (a test fails while it is stale)
	$(PY) -m tools.openapi
MUTANTS ?=
mutants: $(STAMP) ## mutation testing of the core into bench/mutants.md (MUTANTS="sse policy access runtime writer")
	$(PY) tools/mutants.py $(MUTANTS)

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

.PHONY: help deps node-deps dev test test-fast lint openapi mutants chat invoke bench bench-cold package build-RelayFunction build-RelayFunctionOnInstances chromium valgrind
