# The two commands a newcomer runs: `make lab` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV := .venv
BIN := $(VENV)/bin
PKG := files/apply_layer_patch
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: venv lint unit ops-test molecule test lab bench wheelhouse image docker

venv: $(VENV)/.installed
$(VENV)/.installed: requirements-dev.txt $(PKG)/pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q -r requirements-dev.txt -e $(PKG)
	touch $@

lint: venv
	cd $(PKG) && ../../$(BIN)/ruff check src tests && ../../$(BIN)/ruff format --check src tests
	cd $(PKG) && ../../$(BIN)/mypy src tests

unit: venv
	cd $(PKG) && ../../$(BIN)/pytest -q

test: lint unit
