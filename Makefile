# The README's two commands are `make serve` and `make test`; everything else supports them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
# Debian packages the test suite needs (Fashion-MNIST IDX files for the training tests,
# chromium for the playground's browser tests, nginx and the docker-compose parser for the
# deployment tests; the Docker engine, docker-compose and mmdebstrap for the container tier,
# which builds the image and runs compose in a private dockerd: docs/deploy.md).
SYSTEM_PACKAGES := dataset-fashion-mnist chromium nginx-light docker-compose docker.io mmdebstrap
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: serve install install-dev system-deps test lint pytest format train-all clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

## Serving install only (no TensorFlow), pinned by the lock file.
install: $(BIN)/python
	$(BIN)/pip install -q -c $(LOCK) -e .

## Install and start the service on the shipped models (CPU by default) at http://127.0.0.1:8000.
serve: install
	$(BIN)/imagegen serve

system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

## Everything: serving, training (TensorFlow, tf2onnx), load testing and dev tools.
install-dev: $(BIN)/python system-deps
	$(BIN)/pip install -q -c $(LOCK) -e '.[train,dev,loadtest]'

## Install everything and run the whole test suite (lint, types, tests).
test: install-dev
	$(MAKE) lint pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

pytest:
	$(BIN)/python -m pytest

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Re-lock after changing dependencies in pyproject.toml.
lock:
	$(BIN)/pip install -q uv
	$(BIN)/uv pip compile pyproject.toml --extra train --extra dev --extra loadtest \
	  --python-version 3.11 -o $(LOCK)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
