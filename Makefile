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
# ansible-test must see the collection outside any git work tree (inside one it lists
# files with git, and .build/ is ignored), so the copy lives in the cache directory.
MESHOPS_CACHE_DIR ?= $(HOME)/.cache/meshops-istio
SANITY_BASE := $(MESHOPS_CACHE_DIR)/sanity
SANITY_ROOT := $(SANITY_BASE)/ansible_collections/meshops/istio
CLUSTER := $(PYTHON) hack/local-cluster/cluster.py

export PATH := $(BIN):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_FORCE_COLOR ?= 0
export PY_COLORS ?= 0
export ANSIBLE_NOCOLOR ?= 1
export MOLECULE_NO_LOG ?= false
export MESHOPS_REPO := $(CURDIR)
# The local cluster's paths (kubeconfig, binaries, charts) as JSON, worked out once per make run: the local
# inventory's group_vars read them from here rather than running cluster.py for every task that uses one.
export MESHOPS_LOCAL_PATHS := $(shell $(CLUSTER) paths)

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements-dev.txt requirements.txt
	@echo "== creating $(VENV) and installing test tooling (requirements-dev.txt)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check --no-compile -r requirements-dev.txt
	@# Byte-compile what every ansible-playbook and module process imports (ansible-core, the kubernetes client and
	@# the rest), but not the ansible package's hundred collections: with PYTHONDONTWRITEBYTECODE set (as this
	@# machine's environment does) nothing is ever cached, and every module run compiled the kubernetes client again.
	$(BIN)/python -m compileall -q -j 0 -x '/ansible_collections/' $(VENV)/lib > /dev/null || true  # a speed-up only
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

# Install a Debian package when its program is missing (needs root or sudo): $(call apt_install,program,package,why).
apt_install = if ! command -v $(1) >/dev/null; then \
	  echo "== installing Debian's $(2) package ($(3))"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$SUDO apt-get install -y -q --no-install-recommends $(2) >/dev/null \
	    || { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q --no-install-recommends $(2) >/dev/null; }; \
	fi

# The local cluster's metrics backend: Debian's prometheus on loopback (docs/local-cluster.md).
.PHONY: prometheus
prometheus: ## install Debian's prometheus package if it is missing (needs root or sudo)
	@$(call apt_install,prometheus,prometheus,the local cluster's loopback Prometheus)

# The browser test's headless Chromium (tests/browser.py): Debian's chromium package, nothing downloaded elsewhere.
.PHONY: browser
browser: ## install Debian's chromium package if it is missing (needs root or sudo)
	@$(call apt_install,chromium,chromium,the HTML report's browser test)

.PHONY: cluster-up
cluster-up: venv prometheus ## start the local cluster (builds first if needed)
	$(CLUSTER) up

.PHONY: cluster-down
cluster-down: ## stop the local cluster and remove its state
	$(CLUSTER) down

# Molecule installs the collection into ~/.ansible/collections; a copy left there by an
# earlier run would shadow the working tree for ansible-lint and the playbooks.
STALE_COPY := $(HOME)/.ansible/collections/ansible_collections/meshops/istio

.PHONY: lint
lint: venv ## ruff, ansible-lint (production profile) and antsibull-changelog lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/antsibull-changelog lint
	rm -rf $(STALE_COPY)
	$(BIN)/ansible-lint

.PHONY: sanity
sanity: venv ## ansible-test sanity on a copy of the tracked tree
	rm -rf $(SANITY_BASE)
	mkdir -p $(SANITY_ROOT)
	git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t $(SANITY_ROOT)/
	@# kubernetes.core (a declared dependency, bundled by the ansible package) beside it, for doc fragments.
	ln -s $$($(BIN)/python -c 'import ansible_collections.kubernetes, os; print(os.path.dirname(ansible_collections.kubernetes.__path__[0]))')/kubernetes \
	  $(SANITY_BASE)/ansible_collections/kubernetes
	@pipver=$$($(BIN)/python -c 'import re,ansible_test._internal.python_requirements as m,inspect; print(re.search(r"pip=.([0-9.]+)", inspect.getsource(m)).group(1))'); \
	  mkdir -p $(HOME)/.ansible/test/cache; \
	  install -m 0644 hack/sanity/get_pip_offline.py $(HOME)/.ansible/test/cache/get_pip_$${pipver//./_}.py
	cd $(SANITY_ROOT) && $(BIN)/ansible-test sanity --venv --python 3.11 --color no

.PHONY: unit
unit: venv ## unit tests (no cluster)
	$(BIN)/pytest -q tests/unit

# The oldest ansible-core meta/runtime.yml claims (requires_ansible), in a venv of its own:
# requirements-compat.txt says what is in it and where kubernetes.core comes from.
VENV_COMPAT := $(CURDIR)/.venv-compat
BIN_COMPAT := $(VENV_COMPAT)/bin

$(BIN_COMPAT)/.installed: requirements-compat.txt
	@echo "== creating $(VENV_COMPAT) with the oldest claimed ansible-core (requirements-compat.txt)"
	$(PYTHON) -m venv $(VENV_COMPAT)
	$(BIN_COMPAT)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN_COMPAT)/pip install --quiet --disable-pip-version-check --no-compile -r requirements-compat.txt
	touch $@

.PHONY: compat
compat: venv $(BIN_COMPAT)/.installed ## unit tests and syntax checks on the oldest ansible-core the collection claims
	bash hack/compat_check.sh $(BIN_COMPAT) $(BIN)

.PHONY: publish
publish: venv ## build the tarball; galaxy-importer and ansible-builder introspect must find it clean
	$(BIN)/python hack/publish_check.py

# The docs site: hack/docs/build.py generates the Sphinx project (antsibull-docs sphinx-init) into .build/docs,
# renders every plugin's and role's documentation, adds the guides (docs/**/*.md, through myst-parser) and builds it
# with every Sphinx warning an error, offline (no intersphinx).
.PHONY: docs
docs: venv ## build the docs site with antsibull-docs into .build/docs/html
	$(BIN)/python hack/docs/build.py

# antsibull-docs' lint of every plugin's and role's documentation (schema, markup, references, rstcheck) and of
# docs/docsite/. Not --disallow-unknown-collection-refs: kubernetes.core's doc fragment refers to community.okd.
# The linter copies each collection with `git ls-files` when its directory is inside a Git work tree; kubernetes.core
# is in .venv, inside this one and ignored, so without GIT_CEILING_DIRECTORIES its copy would be empty.
.PHONY: docs-lint
docs-lint: venv ## antsibull-docs lint-collection-docs on every plugin's and role's documentation
	GIT_CEILING_DIRECTORIES=$(VENV) $(BIN)/antsibull-docs lint-collection-docs --plugin-docs --check-extra-docs-refs .

# Molecule's local scenario runs on a cluster of its own (MOLECULE_CLUSTER: its own ports, API server, istiod and
# Prometheus), so that it never replaces the default cluster someone is using. Its paths are worked out before its
# `destroy` and `create`: a cluster other than the default takes the lowest free port block at `up`, which is the
# same block then as now as long as no other named cluster comes up in between (make test runs it last in the
# own-cluster lane, after that lane's clusters are down).
# prerun is off in molecule.yml: the collection comes from ANSIBLE_COLLECTIONS_PATH (the working tree), not from a
# copy in ~/.ansible/collections.
MOLECULE_CLUSTER ?= molecule
.PHONY: molecule
molecule: venv cluster-build prometheus ## molecule test -s local (real control plane, no containers)
	rm -rf $(STALE_COPY)
	MESHOPS_CLUSTER_NAME=$(MOLECULE_CLUSTER) \
	  MESHOPS_LOCAL_PATHS="$$($(CLUSTER) --name $(MOLECULE_CLUSTER) paths)" \
	  $(BIN)/molecule test -s local

# What runs beside the shared-cluster tests (the own-cluster tests below, and in make test the static checks) runs at
# the lowest CPU priority. On two cores the shared-cluster tests are the critical path of make test (each of their
# playbook runs is one process after another), and the work beside them fits in the CPU time they leave idle (their
# waits, bakes and polls): niced, it takes that time instead of slowing each of their runs. The cluster processes are
# sessions of their own, so the kernel's autogroups keep sharing the CPU between them and the tests as before.
BACKGROUND := nice -n 19

# test_fleet.py and test_ambient*.py run on clusters of their own (cluster.py --name fleet-a ..., ambient-a: their
# own ports, API servers, istiod and Prometheus), never on the default cluster the other modules share, so they run
# beside them in a second pytest process ($(BACKGROUND)). Its output goes to $(BUILD)/own-clusters.log and is printed
# when both are done; either failing fails the target.
OWN_CLUSTER_TESTS := tests/integration/test_fleet.py tests/integration/test_ambient.py tests/integration/test_ambient_waypoint.py
# test_zzz_upgrade_helm.py needs a cluster without the suite's istioctl-installed Istio: after the others on the default
# cluster it restarts that cluster first; here it runs last in the own-cluster lane, on a cluster of its own
# (HELM_UPGRADE_CLUSTER, brought up empty), so the shared-cluster tests are spared both its run and the restart.
HELM_UPGRADE_TEST := tests/integration/test_zzz_upgrade_helm.py
HELM_UPGRADE_CLUSTER ?= helm-upgrade
.PHONY: integration
integration: venv cluster-build prometheus ## integration tests against the local cluster's real API server
	rm -rf $(STALE_COPY)
	@mkdir -p $(BUILD)
	@echo "== $(OWN_CLUSTER_TESTS) $(HELM_UPGRADE_TEST) run beside the other integration tests ($(BACKGROUND)): $(BUILD)/own-clusters.log"
	@{ $(BACKGROUND) $(BIN)/pytest -v -s -p no:cacheprovider --durations=10 $(OWN_CLUSTER_TESTS) || exit 1; \
	    MESHOPS_CLUSTER_NAME=$(HELM_UPGRADE_CLUSTER) $(BACKGROUND) $(BIN)/pytest -v -s -p no:cacheprovider \
	      $(HELM_UPGRADE_TEST) || exit 1; \
	    $(if $(WITH_MOLECULE),$(BACKGROUND) $(MAKE) --no-print-directory molecule,true); } > $(BUILD)/own-clusters.log 2>&1 & \
	  own_pid=$$!; \
	  shared=0; $(BIN)/pytest -v -s -p no:cacheprovider --durations=20 \
	    $(OWN_CLUSTER_TESTS:%=--ignore=%) --ignore=$(HELM_UPGRADE_TEST) tests/integration || shared=$$?; \
	  own=0; wait $$own_pid || own=$$?; \
	  echo "== the own-cluster tests' output ($(BUILD)/own-clusters.log)"; cat $(BUILD)/own-clusters.log; \
	  if [ $$shared -ne 0 ] || [ $$own -ne 0 ]; then \
	    echo "== integration FAILED: shared-cluster tests exit $$shared, own-cluster tests exit $$own"; exit 1; fi

.PHONY: static
static: lint docs-lint sanity unit compat publish ## every check that needs no cluster

# The static checks need no cluster and use the second core while the integration tests mostly wait on the cluster,
# so they run beside them ($(BACKGROUND), see above). Molecule (WITH_MOLECULE) runs last in the own-cluster lane,
# after its clusters are down, beside the end of the shared-cluster tests: run first in that lane, beside all of them
# and the fleet's clusters, it slowed the shared-cluster tests by more than its own 171 s (2,200 s against 1,533 s on
# 2 cores); run first and alone, it added its 171 s to make test. The static checks' output goes to
# .build/static.log and is printed when both are done; either failing fails make test.
.PHONY: test
test: venv cluster-build prometheus browser ## everything CI runs (the compat venv is made by static, beside)
	@mkdir -p $(BUILD)
	@echo "== static checks (lint, docs-lint, sanity, unit, compat, publish) run beside the integration tests ($(BACKGROUND)): $(BUILD)/static.log"
	@$(BACKGROUND) $(MAKE) --no-print-directory static > $(BUILD)/static.log 2>&1 & static=$$!; \
	  integration=0; $(MAKE) --no-print-directory integration WITH_MOLECULE=1 || integration=$$?; \
	  checks=0; wait $$static || checks=$$?; \
	  echo "== static checks' output ($(BUILD)/static.log)"; cat $(BUILD)/static.log; \
	  if [ $$checks -ne 0 ] || [ $$integration -ne 0 ]; then \
	    echo "== make test FAILED: static checks exit $$checks, integration exit $$integration"; exit 1; fi
	@echo "== make test: molecule (local), integration, lint, docs-lint, sanity, unit, compat and publish all passed"

.PHONY: demo
demo: venv cluster-build prometheus ## bring up the local cluster and show it working
	bash hack/demo/demo.sh

.PHONY: demo-ambient
demo-ambient: venv cluster-build prometheus ## the same path in ambient mode, on a cluster of its own, with a migration
	bash hack/demo/ambient.sh

.PHONY: clean
clean: cluster-down ## remove .venv and .build (the binary cache stays)
	rm -rf $(VENV) $(BUILD)
