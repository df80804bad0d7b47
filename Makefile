# The README's two commands are `make serve` and `make test`; everything else supports them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
# Debian packages the test suite needs (Fashion-MNIST IDX files for the training tests,
# chromium for the playground's browser tests, nginx and the docker-compose parser for the
# deployment tests, curl to run the README's examples; the Docker engine, docker-compose and
# mmdebstrap for the container tier, which builds the image and runs compose in a private
# dockerd: docs/deploy.md).
SYSTEM_PACKAGES := dataset-fashion-mnist chromium nginx-light docker-compose curl docker.io mmdebstrap
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: serve install install-dev system-deps test lint pytest format train-all clean docs-assets grpc-stubs

# Stamps in the venv: pip runs again only when pyproject.toml or the lock changed, so a second
# `make serve` needs no network. `make clean`, or removing the stamps, forces a reinstall.
SERVE_STAMP := $(VENV)/.installed-serve
DEV_STAMP := $(VENV)/.installed-dev

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip

$(SERVE_STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install -q -c $(LOCK) -e .
	touch $@

## Serving install only (no TensorFlow), pinned by the lock file.
install: $(SERVE_STAMP)

## Install (when needed) and start the service on the shipped models (CPU by default) at http://127.0.0.1:8000.
serve: $(SERVE_STAMP)
	$(BIN)/imagegen serve

system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(DEV_STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install -q -c $(LOCK) -e '.[train,dev,loadtest]'
	touch $@ $(SERVE_STAMP)

## Everything: serving, training (TensorFlow, tf2onnx), load testing and dev tools.
install-dev: system-deps $(DEV_STAMP)

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

## Refresh the API docs' assets in service/static/vendor (npm's registry; needs npm).
SWAGGER_UI_VERSION ?= 5.35.0
REDOC_VERSION ?= 2.5.4
VENDOR := service/static/vendor
# ReDoc's side menu shows a logo from cdn.redoc.ly: an empty inline SVG instead (the
# "API docs by Redocly" credit stays), so the page makes no request off its origin.
REDOC_LOGO := https://cdn.redoc.ly/redoc/logo-mini.svg
EMPTY_SVG := data:image/svg+xml,%3Csvg xmlns=%27http://www.w3.org/2000/svg%27/%3E
docs-assets:
	tmp=$$(mktemp -d) && cd $$tmp && \
	npm pack -q swagger-ui-dist@$(SWAGGER_UI_VERSION) redoc@$(REDOC_VERSION) >/dev/null && \
	mkdir sw rd && tar xzf swagger-ui-dist-$(SWAGGER_UI_VERSION).tgz -C sw && \
	tar xzf redoc-$(REDOC_VERSION).tgz -C rd && cd $(CURDIR) && \
	rm -rf $(VENDOR) && mkdir -p $(VENDOR)/swagger-ui $(VENDOR)/redoc && \
	cp $$tmp/sw/package/swagger-ui-bundle.js $$tmp/sw/package/swagger-ui-bundle.js.LICENSE.txt \
	  $$tmp/sw/package/swagger-ui.css $$tmp/sw/package/favicon-32x32.png \
	  $$tmp/sw/package/LICENSE $$tmp/sw/package/NOTICE $(VENDOR)/swagger-ui/ && \
	cp $$tmp/rd/package/bundles/redoc.standalone.js \
	  $$tmp/rd/package/bundles/redoc.standalone.js.LICENSE.txt \
	  $$tmp/rd/package/LICENSE $(VENDOR)/redoc/ && \
	sed -i "s|$(REDOC_LOGO)|$(EMPTY_SVG)|" $(VENDOR)/redoc/redoc.standalone.js && \
	grep -q "$(EMPTY_SVG)" $(VENDOR)/redoc/redoc.standalone.js && \
	printf '%s\n' "swagger-ui-dist $(SWAGGER_UI_VERSION)" "redoc $(REDOC_VERSION)" \
	  > $(VENDOR)/VERSIONS && rm -rf $$tmp

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info

## Regenerate the committed gRPC message code of the Open Inference Protocol (grpcio-tools, dev extra).
PROTO_DIR := service/v2/protocol
grpc-stubs:
	cd $(PROTO_DIR) && $(abspath $(BIN))/python -m grpc_tools.protoc -I. \
	  --python_out=. --pyi_out=. open_inference_grpc.proto
