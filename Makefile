# fleetmaint.libvirt — everything runs from here. Needs root on Debian 12.
#   make demo   install what is needed, start the lab, run the main job, print the report
#   make test   install what is needed, run unit, sanity, lint and integration tests
#               (unit and sanity also with each older ansible-core of the supported range: make matrix)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON       ?= python3
VENV         ?= $(CURDIR)/.venv
BUILD        := $(CURDIR)/.build
COLL_PATH    := $(BUILD)/collections
SRC_COPY     := $(BUILD)/src/ansible_collections/fleetmaint/libvirt
LAB_DIR      ?= /var/tmp/fleetmaint-lab
LABCTL       := $(PYTHON) $(CURDIR)/lab/labctl.py --state-dir $(LAB_DIR)
INVENTORY    := $(BUILD)/lab-inventory.yml
APT_PACKAGES := qemu-system-x86 qemu-utils libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients \
                libvirt-dev pkg-config gcc libc6-dev python3-dev python3-venv busybox-static iptables iproute2 \
                gnutls-bin rsync shellcheck debootstrap
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(COLL_PATH)
export ANSIBLE_CONFIG := $(CURDIR)/tests/ansible.cfg
export FLEETMAINT_LAB_DIR := $(LAB_DIR)
export FLEETMAINT_INVENTORY := $(INVENTORY)
export FLEETMAINT_VENV := $(VENV)

.PHONY: help deps apt apt-test venv collection sync unit sanity static matrix lint integration reliability molecule docs test demo bench lab-up lab-down lab-status clean

help:
	@echo "make demo   - install, start the lab, run the main job, print the report"
	@echo "make test   - install, then unit tests, ansible-test sanity, ansible-lint, integration on the lab"
	@echo "make unit | sanity | matrix | lint | docs | integration | reliability | molecule | bench | lab-up | lab-down | lab-status | clean"

deps: apt venv

# apt only when a package is missing, so a second run is quick.
apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing $$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

# The virtualenv is rebuilt only when the requirements change.
$(VENV)/.stamp: requirements.txt requirements-dev.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@
venv: $(VENV)/.stamp

# Build the collection tarball and install it: what users get, and what tests use. 'make test' makes it (and the
# source copy, below) once before any suite and runs the suites with BUILT=1, which skips both: suites running
# side by side never see them replaced.
collection: venv
ifneq ($(BUILT),1)
	rm -f $(BUILD)/fleetmaint-libvirt-*.tar.gz
	mkdir -p $(BUILD)
	ansible-galaxy collection build --force --output-path $(BUILD) . >/dev/null
	ansible-galaxy collection install --force -p $(COLL_PATH) $(BUILD)/fleetmaint-libvirt-*.tar.gz >/dev/null
	@echo "installed $$(ls $(BUILD)/fleetmaint-libvirt-*.tar.gz | xargs -n1 basename) into $(COLL_PATH)"
endif

# A source tree at ansible_collections/fleetmaint/libvirt, as ansible-test wants it: $(call copy_tree,DIR).
# ansible-test lists files with git: the copy gets its own repository (ours ignores .build/).
define copy_tree
rm -rf $(1) && mkdir -p $(1)
git ls-files -co --exclude-standard -z | rsync -a --from0 --ignore-missing-args --files-from=- ./ $(1)/
cd $(1) && git init -q && git add -A
endef
sync:
ifneq ($(BUILT),1)
	$(call copy_tree,$(SRC_COPY))
endif

# Only the tests need a browser (the report's HTML is opened in Debian's chromium): not installed by 'make demo'.
TEST_APT_PACKAGES := chromium
apt-test:
	@dpkg-query -W -f='$${Status}\n' $(TEST_APT_PACKAGES) 2>/dev/null | grep -q 'install ok installed' || { \
	  echo "apt: installing $(TEST_APT_PACKAGES)"; apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(TEST_APT_PACKAGES); }

# The browser test's screenshot of the report is kept in .build/test-logs/report.png.
unit: deps apt-test sync
	mkdir -p $(BUILD)/test-logs
	cd $(SRC_COPY) && PYTHONPATH=$(BUILD)/src FLEETMAINT_BROWSER_REQUIRED=1 FLEETMAINT_TEST_ARTIFACTS=$(BUILD)/test-logs \
	  python -m pytest -p no:cacheprovider -q tests/unit

# ansible-test bootstraps pip in its venvs with a script it downloads from a host we cannot
# reach; its documented offline route is a script in its cache. Ours uses ensurepip + PyPI.
# $(call pip_bootstrap,VENV): the script, for the pip version that VENV's ansible-test pins.
define pip_bootstrap
@v=$$(grep -hoE "pip='[0-9.]+'" $(1)/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py \
      | head -1 | tr -dc '0-9.'); \
  f=$$HOME/.ansible/test/cache/get_pip_$${v//./_}.py; \
  if [ -n "$$v" ] && [ ! -s "$$f" ]; then mkdir -p "$${f%/*}" && cp tests/tools/get_pip_offline.py "$$f" \
    && echo "sanity: offline pip bootstrap installed for pip $$v"; fi
endef
sanity: deps sync
	$(call pip_bootstrap,$(VENV))
	cd $(SRC_COPY) && ansible-test sanity --python 3.11 --requirements --color no $(SANITY_ARGS)

# galaxy-importer (what Galaxy runs on an upload) checks the built tarball as Galaxy would, in a virtualenv of
# its own: it brings its own ansible-core and ansible-lint. It exits 0 on warnings, so lint reads its output
# and fails on any WARNING or ERROR line. Its configuration: tests/tools/galaxy-importer.cfg.
IMPORTER_VENV := $(BUILD)/importer-venv
IMPORTER_REQ  := tests/tools/galaxy-importer-requirements.txt
IMPORTER_TMP  := $(BUILD)/importer-tmp
$(IMPORTER_VENV)/.stamp: $(IMPORTER_REQ)
	rm -rf $(IMPORTER_VENV) && $(PYTHON) -m venv $(IMPORTER_VENV)
	$(IMPORTER_VENV)/bin/pip install -q --disable-pip-version-check -r $(IMPORTER_REQ)
	touch $@

lint: deps collection $(IMPORTER_VENV)/.stamp
	ansible-lint --offline playbooks/ roles/ molecule/
	python tests/tools/check_roles.py
	rm -rf $(BUILD)/ee && ansible-builder create -f execution-environment.yml -c $(BUILD)/ee >/dev/null
	@echo "execution-environment.yml: build context written to $(BUILD)/ee"
	antsibull-changelog lint
	@# Without our test ansible.cfg or installed copy, as Galaxy runs it; its result JSON lands in .build/.
	@rm -rf $(IMPORTER_TMP) && mkdir -p $(IMPORTER_TMP) && t0=$$(date +%s); \
	  ( cd $(BUILD) && env -u ANSIBLE_CONFIG -u ANSIBLE_COLLECTIONS_PATH PATH=$(IMPORTER_VENV)/bin:$$PATH \
	    GALAXY_IMPORTER_CONFIG=$(CURDIR)/tests/tools/galaxy-importer.cfg GALAXY_IMPORTER_TMP_ROOT_DIR=$(IMPORTER_TMP) \
	    GALAXY_IMPORTER_ANSIBLE_LOCAL_TMP=$(IMPORTER_TMP)/ansible \
	    $(IMPORTER_VENV)/bin/python -m galaxy_importer.main $$(ls fleetmaint-libvirt-*.tar.gz) ) \
	    > $(BUILD)/galaxy-importer.log 2>&1; rc=$$?; \
	  grep -v '^Loading ' $(BUILD)/galaxy-importer.log; \
	  echo "galaxy-importer: $$(( $$(date +%s) - t0 )) s, whole output in $(BUILD)/galaxy-importer.log"; \
	  if [ $$rc != 0 ] || grep -qE '^(WARNING|ERROR|CRITICAL)' $(BUILD)/galaxy-importer.log \
	     || ! grep -q '^Importer processing completed successfully' $(BUILD)/galaxy-importer.log; then \
	    echo "galaxy-importer: the tarball has errors or warnings (above)"; exit 1; fi

# The supported ansible-core range (meta/runtime.yml) is 2.17 to 2.19: .venv has the newest 2.19, and each older
# minor gets a cached virtualenv .build/core-2.NN (that ansible-core, the rest of requirements.txt, pytest), made
# again only when the requirements change (then upgraded to the newest releases they admit). The oldest minor also
# gets the oldest libvirt-python that requirements.txt admits, the others the newest, so both ends of that range
# are tested too. matrix-2.NN runs the unit tests and sanity with one of them in a copy of the tree of its own
# (.build/core-2.NN/src), so it never shares tests/output with 'make sanity'; 'make matrix' runs the versions one
# after another (one ansible-test at a time on 2 cores) and times each (.build/matrix-times.txt).
CORE_MATRIX := 2.17 2.18
LIBVIRT_MIN := $(shell sed -nE 's/^libvirt-python>=([0-9.]+).*/\1/p' requirements.txt)
CORE_PINS_2.17 := 'libvirt-python==$(LIBVIRT_MIN).*'
.PRECIOUS: $(BUILD)/core-%/.stamp
$(BUILD)/core-%/.stamp: requirements.txt requirements-dev.txt
	test -x $(@D)/bin/python || $(PYTHON) -m venv $(@D)
	$(@D)/bin/pip install -q -U --disable-pip-version-check -r requirements.txt "ansible-core==$*.*" $(CORE_PINS_$*) \
	  "$$(grep -E '^pytest\b' requirements-dev.txt)"
	touch $@

matrix-%: apt $(BUILD)/core-%/.stamp
	@$(BUILD)/core-$*/bin/python -c 'from importlib.metadata import version as v; print("matrix:", ", ".join( \
	  f"{p} {v(p)}" for p in ("ansible-core", "libvirt-python", "jmespath", "pytest")))'
	$(call copy_tree,$(BUILD)/core-$*/src/ansible_collections/fleetmaint/libvirt)
	cd $(BUILD)/core-$*/src/ansible_collections/fleetmaint/libvirt && PATH=$(BUILD)/core-$*/bin:$$PATH \
	  PYTHONPATH=$(BUILD)/core-$*/src python -m pytest -p no:cacheprovider -q tests/unit
	$(call pip_bootstrap,$(BUILD)/core-$*)
	cd $(BUILD)/core-$*/src/ansible_collections/fleetmaint/libvirt && PATH=$(BUILD)/core-$*/bin:$$PATH \
	  ansible-test sanity --python 3.11 --requirements --color no $(SANITY_ARGS)

matrix:
	@mkdir -p $(BUILD) && : > $(BUILD)/matrix-times.txt; rc=0; \
	for v in $(CORE_MATRIX); do t0=$$(date +%s); \
	  echo "== ansible-core $$v: unit and sanity =="; $(MAKE) --no-print-directory matrix-$$v; r=$$?; \
	  echo "ansible-core $$v $$(( $$(date +%s) - t0 )) s$$( [ $$r = 0 ] || echo ' FAILED')" >> $(BUILD)/matrix-times.txt; \
	  [ $$r = 0 ] || rc=1; \
	done; echo "== matrix times =="; cat $(BUILD)/matrix-times.txt; exit $$rc

lab-up: apt collection
	$(LABCTL) up
	$(LABCTL) inventory > $(INVENTORY)

lab-down:
	$(LABCTL) down

lab-status:
	$(LABCTL) status

integration: deps collection
	python -m pytest -p no:cacheprovider -v --durations=12 tests/lab

# The documentation site: plugin reference (antsibull-docs) and the user guide, in a virtualenv of its own.
DOCS_VENV    := $(BUILD)/docs-venv
docs: deps collection
	@test -x $(DOCS_VENV)/bin/sphinx-build || { python3 -m venv $(DOCS_VENV) && \
	  $(DOCS_VENV)/bin/pip install -q -r docs/site/requirements.txt; }
	PATH=$(DOCS_VENV)/bin:$$PATH bash docs/site/build.sh $(BUILD)/docsite

# The reliability suite: every fault scenario of the brief on a lab of its own (127.0.0.52-54), one invariant
# checker, and a table (scenario, result, invariant checks passed), also written to .build/reliability.md.
reliability: deps collection
	python -m pytest -p no:cacheprovider -v --durations=8 tests/reliability

# Molecule scenarios for the roles, on one lab of their own (127.0.0.32-34) that they hand on in this order:
# host_evacuate empties lab1, host_restore brings its VMs home, rolling_patch patches every host, and
# disaster_recovery kills lab1 last. `--destroy=never` keeps the lab between them (each scenario's create
# reconciles it); any failure, and the end, destroy it. `molecule test -s X` alone still runs X from scratch.
MOLECULE_CHAIN := host_evacuate host_restore rolling_patch disaster_recovery
molecule: deps collection
	molecule destroy -s host_evacuate
	for s in $(MOLECULE_CHAIN); do molecule test -s $$s --destroy=never || { molecule destroy -s $$s; exit 1; }; done
	molecule destroy -s disaster_recovery

# The static suite: sanity, then the ansible-core matrix in one background job (one ansible-test at a time, each
# in a copy of the tree of its own), beside lint and docs; sanity's and the matrix's output is kept in
# .build/test-logs/{sanity,matrix}.log and printed when they end.
static: deps sync collection
	@mkdir -p $(BUILD)/test-logs; \
	( $(MAKE) --no-print-directory sanity > $(BUILD)/test-logs/sanity.log 2>&1; echo $$? > $(BUILD)/test-logs/sanity.rc; \
	  $(MAKE) --no-print-directory matrix > $(BUILD)/test-logs/matrix.log 2>&1; echo $$? > $(BUILD)/test-logs/matrix.rc ) & \
	$(MAKE) --no-print-directory lint docs; rc=$$?; wait; \
	echo "== sanity (ran beside lint and docs) =="; cat $(BUILD)/test-logs/sanity.log; \
	echo "== matrix: ansible-core $(CORE_MATRIX) (ran after sanity, beside lint and docs) =="; \
	cat $(BUILD)/test-logs/matrix.log; \
	for t in sanity matrix; do [ "$$(cat $(BUILD)/test-logs/$$t.rc)" = 0 ] || rc=1; done; exit $$rc

# make test: the collection and the source copy are made once; then the lab suites run one after another (they
# share lo's traffic shaping) while the suites that need no lab run in the background at the idle scheduling
# class, on the CPU the lab leaves idle (tests/tools/test_suites.sh says how and why). Every suite is timed: the
# times are printed at the end and kept in .build/suite-times.txt.
BACKGROUND_SUITES := unit static
LAB_SUITES := integration reliability molecule
test: deps
	@$(MAKE) --no-print-directory sync collection apt-test
	@MAKE="$(MAKE)" bash tests/tools/test_suites.sh $(BUILD) "$(BACKGROUND_SUITES)" "$(LAB_SUITES)"
	@echo "make test: all suites passed"

demo: deps collection lab-up
	bash lab/demo.sh

# Benchmarks write bench/results/; they are measurements, never pass/fail tests.
bench: deps collection sync
	PYTHONPATH=$(BUILD)/src python bench/plan_scale.py
	python bench/evacuate_vs_naive.py
	python bench/regimes.py
	cat bench/results/regimes.md bench/results/evacuate_vs_naive.md bench/results/plan_scale.md > bench/results/summary.md
	@echo "bench: bench/results/summary.md"

clean: lab-down
	rm -rf $(BUILD)
