# meshops.istio: the two entry points are `make demo` and `make test`.
# Both create .venv and build the local cluster's binaries themselves (cached under
# $(MESHOPS_CACHE_DIR), default ~/.cache/meshops-istio).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
BUILD := $(CURDIR)/.build
COLLECTIONS := $(BUILD)/collections
SANITY_ROOT := $(BUILD)/sanity/ansible_collections/meshops/istio
CLUSTER := $(PYTHON) hack/local-cluster/cluster.py

export PATH := $(BIN):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_FORCE_COLOR ?= 0
export PY_COLORS ?= 0
export ANSIBLE_NOCOLOR ?= 1
export MOLECULE_NO_LOG ?= false

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements-dev.txt requirements.txt
	@echo "== creating $(VENV) and installing test tooling (requirements-dev.txt)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

.PHONY: venv
venv: $(BIN)/.installed collection-link ## create .venv with pinned tooling

.PHONY: collection-link
collection-link:
	@mkdir -p $(COLLECTIONS)/ansible_collections/meshops
	@ln -sfn $(CURDIR) $(COLLECTIONS)/ansible_collections/meshops/istio

.PHONY: cluster-build
cluster-build: ## build (or reuse) the local cluster's binaries
	$(CLUSTER) build

.PHONY: cluster-up
cluster-up: venv ## start the local cluster (builds first if needed)
	$(CLUSTER) up

.PHONY: cluster-down
cluster-down: ## stop the local cluster and remove its state
	$(CLUSTER) down

.PHONY: lint
lint: venv ## ruff and ansible-lint (production profile)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/ansible-lint

.PHONY: sanity
sanity: venv ## ansible-test sanity on a copy of the tracked tree
	rm -rf $(BUILD)/sanity
	mkdir -p $(SANITY_ROOT)
	git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents {} $(SANITY_ROOT)/ 2>/dev/null || true
	cd $(SANITY_ROOT) && $(BIN)/ansible-test sanity --venv --python 3.11 --color no

.PHONY: unit
unit: venv ## unit tests (no cluster)
	$(BIN)/pytest -q tests/unit

.PHONY: molecule
molecule: venv cluster-build ## molecule test -s local (real control plane, no containers)
	$(BIN)/molecule test -s local

.PHONY: test
test: lint sanity unit molecule ## everything CI runs
	@echo "== make test: lint, sanity, unit and molecule (local) all passed"

.PHONY: demo
demo: venv cluster-build ## bring up the local cluster and show it working
	$(BIN)/ansible-playbook -i localhost, hack/demo/demo.yml

.PHONY: clean
clean: cluster-down ## remove .venv and .build (the binary cache stays)
	rm -rf $(VENV) $(BUILD)
