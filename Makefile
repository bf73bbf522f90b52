# mcpgateway.mtls: set-up, tests, lab. Everything installs itself, idempotently.
#   make site      deploy the lab (installs tools, builds images, brings the lab up, runs site.yml)
#   make test      every test: unit, sanity, lint, docs (lint and site build), integration, molecule
#   make docs      the collection's docsite (antsibull-docs + Sphinx) in .build/docs/html
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := $(CURDIR)/.venv
BUILD := $(CURDIR)/.build
ANSIBLE_PKG := ansible==12.3.0
COLL_LINK := $(BUILD)/collections/ansible_collections/mcpgateway/mtls
EXT_COLL := $(BUILD)/ext-collections/ansible_collections
# The docs tools have their own venv (docs/requirements-docs.txt), first in PATH for the docs targets only.
DOCS_VENV := $(BUILD)/docs-venv
DOCS_ENV := PATH="$(DOCS_VENV)/bin:$$PATH" ANSIBLE_COLLECTIONS_PATH="$(BUILD)/collections" PYTHONDONTWRITEBYTECODE=1
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: help venv docs-venv test units sanity lint docs-lint docs integration molecule site lab-up lab-down bench bench-deploy build clean

help:
	@echo "make site      deploy the lab of systemd hosts and verify mTLS end to end"
	@echo "make test      run every test (unit, sanity, lint, docs-lint, docs, integration, molecule)"
	@echo "make docs      build the collection's docsite into .build/docs/html (modules, filters, tests, roles, playbooks)"
	@echo "make docs-lint lint the collection's docs with antsibull-docs"
	@echo "make lab-down  remove the lab and undo its host changes"
	@echo "make bench     run the PKI benchmark (bench/README.md)"
	@echo "make bench-deploy  time no-op site.yml and rotate.yml and count remote calls per host (bench/README.md)"

venv: $(VENV)/.stamp $(COLL_LINK) $(EXT_COLL)/.stamp

$(VENV)/.stamp: requirements-dev.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(COLL_LINK):
	mkdir -p $(dir $@)
	ln -sfn $(CURDIR) $@

# containers.podman, ansible.posix and community.crypto come from the `ansible` package on PyPI
# (Galaxy is unreachable): unpack just those from its wheel.
$(EXT_COLL)/.stamp: $(VENV)/.stamp
	bash .ci/ext-collections.sh "$(ANSIBLE_PKG)" "$(EXT_COLL)"
	touch $@

# antsibull-docs and Sphinx (make docs, make docs-lint): their own venv, apart from the test tools.
docs-venv: $(DOCS_VENV)/.stamp $(COLL_LINK)

$(DOCS_VENV)/.stamp: docs/requirements-docs.txt
	test -x $(DOCS_VENV)/bin/python || $(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/pip install -q --disable-pip-version-check -r docs/requirements-docs.txt
	touch $@

# The unit tests check the rotation units with systemd-analyze (Debian's systemd package; systemd need not run
# the machine). A new machine may lack it, and in CI a skipped test fails the run (tests/skip_policy.py).
units: venv
	command -v systemd-analyze >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd; }
	bash .ci/units.sh

sanity: venv
	bash .ci/sanity.sh

lint: venv
	ansible-lint --profile production

docs-lint: docs-venv
	$(DOCS_ENV) bash .ci/docs.sh lint

docs: docs-venv
	$(DOCS_ENV) bash .ci/docs.sh build

integration: venv
	bash .ci/integration.sh

molecule: venv
	source lab/env.sh && bash .ci/molecule.sh

test: units sanity lint docs-lint docs integration molecule
	@echo "make test: all suites passed"

build: venv
	mkdir -p $(BUILD)/dist
	ansible-galaxy collection build --force --output-path $(BUILD)/dist .

site: venv lab-up
	mkdir -p .build/lab
	source lab/env.sh && ansible-playbook -i inventories/lab site.yml | tee .build/lab/site.log
	bash lab/summary.sh

lab-up: venv
	bash lab/lab.sh up

lab-down:
	bash lab/lab.sh down

bench: venv
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

# Brings up its own lab (refuses when lab containers exist) and removes it at the end.
bench-deploy: venv
	$(VENV)/bin/python bench/deploy.py $(BENCH_ARGS)

clean:
	rm -rf $(BUILD) tests/output
