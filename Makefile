# The two commands a newcomer runs: `make lab` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
PKG := files/apply_layer_patch
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
MOLECULE_SCENARIOS := infra default rollback fleet sentinel

.PHONY: venv checks lint lint-python lint-ansible lint-shell unit ops-test molecule test \
	$(addprefix molecule-,$(MOLECULE_SCENARIOS)) lab bench bench-deploy wheelhouse lock image docker

# The Debian release `make lab` deploys onto: 13 (trixie, today's stable) or 12 (bookworm).
DEBIAN ?= 13
# uv resolves the lock for every supported Python at once (--universal), on a controller that has one.
UV_VERSION := 0.13.8

venv: $(VENV)/.installed
$(VENV)/.installed: requirements-dev.txt $(PKG)/pyproject.toml
	# A stock Debian has no venv module until python3-venv is installed.
	python3 -m venv $(VENV) || { apt-get update -q && apt-get install -y -q python3-venv && python3 -m venv $(VENV); }
	$(BIN)/pip install -q -r requirements-dev.txt -e $(PKG)
	touch $@

## test: every check and test; CI runs exactly this. The checks run beside the image and wheelhouse builds
## (the unit suite mostly waits on its servers, the linters compute): on two cores that saves minutes.
## Each step's output is printed whole when it ends. Then the molecule scenarios, in two lanes. The venv
## and Docker come first, one after the other: on a fresh machine both may install packages, and two
## apt-get runs at once fail on dpkg's lock.
test:
	$(MAKE) venv docker
	$(MAKE) --jobs=3 --output-sync=target checks image wheelhouse
	$(MAKE) molecule

checks: lint unit ops-test

lint: lint-python lint-ansible lint-shell

lint-python: venv
	cd $(PKG) && ruff check src tests && ruff format --check src tests && mypy src tests
	ruff check --config $(PKG)/pyproject.toml ops/tests molecule roles/apply_layer/filter_plugins
	ruff format --check --config $(PKG)/pyproject.toml ops/tests molecule roles/apply_layer/filter_plugins
	MYPYPATH=$(PKG)/src mypy --strict --python-version 3.11 ops/tests roles/apply_layer/filter_plugins
	ruff check --config $(PKG)/pyproject.toml scripts
	ruff format --check --config $(PKG)/pyproject.toml scripts
	mypy --strict --python-version 3.11 scripts

lint-ansible: venv
	ansible-lint --profile production

lint-shell:
	shellcheck scripts/*.sh ops/*.sh .ci/run

unit: venv
	cd $(PKG) && pytest -q

ops-test: venv wheelhouse
	bash ops/check.sh
	pytest -q ops/tests

docker:
	bash scripts/ensure-docker.sh

## image: the systemd base images of both supported releases (molecule runs both).
image: docker
	bash scripts/build-image.sh bookworm
	bash scripts/build-image.sh trixie

wheelhouse: venv
	bash scripts/build-wheelhouse.sh

## lock: re-resolve the apply layer's runtime dependencies (pyproject.toml) into the hash-pinned lock that
## every wheelhouse is built from; review its diff and commit it.
lock: venv
	$(BIN)/pip install -q uv==$(UV_VERSION)
	uv pip compile $(PKG)/pyproject.toml --universal --python-version 3.11 --generate-hashes \
	  --custom-compile-command 'make lock' --quiet --output-file $(PKG)/requirements.lock

## molecule: the infrastructure roles alone (ACLs, validation), the whole stack as deployed (on Debian 13),
## then releases: deploy A, B, roll back, refuse a broken C; a fleet of three hosts on a network, with
## faults, halfway through an upgrade from Debian 12 to 13; last, Redis behind Sentinel on three nodes,
## failed over while plans flow. The others run on Debian 12.
## Two lanes side by side: a converge is one task after another and keeps about one of the two cores busy
## (vmstat: 40% idle all through a scenario). Each scenario has its own containers, network, CA and
## releases. The fleet and Sentinel scenarios, whose tests time faults and failovers, share a lane and so
## never run at once; the three single-host scenarios make the other lane. In a lane a scenario waits for
## the one before it (a prerequisite): `make molecule-sentinel` runs fleet, then sentinel. Each prints
## whole when it ends. One scenario alone: `molecule test -s NAME`.
molecule: venv image wheelhouse
	$(MAKE) --jobs=2 --output-sync=target molecule-rollback molecule-sentinel

molecule-default: molecule-infra
molecule-rollback: molecule-default
molecule-sentinel: molecule-fleet
# Phony, so a static pattern rule: make skips implicit rules for phony targets.
$(addprefix molecule-,$(MOLECULE_SCENARIOS)): molecule-%:
	molecule test -s $*

## lab: build what is needed, deploy the whole stack onto a local container, smoke it, say where to look.
## `make lab DEBIAN=12` for a Debian 12 container.
lab: venv
	QH_DEBIAN=$(DEBIAN) bash scripts/lab.sh

bench: venv
	cd $(PKG)/tests && python bench.py

## bench-deploy: each run on a fresh container: fresh converge, second converge (must be changed=0),
## deploy a release B, roll back to A; medians over BENCH_RUNS (3).
bench-deploy: venv
	bash scripts/bench-deploy.sh
