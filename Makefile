# One entry point for people and CI. Every target installs what it needs and is safe to re-run.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
CACHE := .cache
BIN := $(CACHE)/bin
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(BIN):$(CURDIR)/$(VENV)/bin:$(PATH)
# Under `make test` a missing prerequisite (root, a daemon, a binary) fails the test instead of skipping it.
export KRS_REQUIRE_ALL ?= 1
export KRS_BIN_DIR := $(CURDIR)/$(BIN)

.PHONY: all system venv tools check pytest test interop clean demo

all: test

## Debian packages: routing daemons, iproute2, nftables.
system:
	bash .ci/install-system.sh

## Python virtualenv with the project and its dev extra (re-installed when pyproject.toml changes).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

## Go-built test binaries (kube-apiserver, kube-controller-manager, etcd, kubectl, helm), cached by version.
tools:
	bash .ci/build-go-tools.sh $(BIN)

## Static checks: lint, types, layering.
check: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

pytest: venv
	$(PY) -m pytest $(PYTEST_ARGS)

## The whole test suite, set up from nothing (README command 2; CI runs exactly this).
test: system venv tools check pytest

interop: system venv
	$(PY) -m pytest -m interop $(PYTEST_ARGS)

## The failover demo (README command 1): a lab of namespaces, a frozen appliance, the measured failover (root).
demo: system venv
	$(VENV)/bin/routeserver demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
