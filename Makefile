# Everything sets itself up from nothing: `make demo` and `make test` create their virtualenv on first use,
# each with one pip call (torch pinned in the same resolution: 8 s faster than installing torch first).
#   .venv            core install, CPU torch TORCH_SPEC                      -> make demo, make bench
#   .venv-test       every extra but torch-fidelity, the SAME CPU torch      -> make test, make lint, make docs
#                    (browser tests of elt app drive Debian's chromium: make browser installs it)
#   .venv-inception  torch + torchvision pair and torch-fidelity             -> make test-inception (Inception tests)
# torch-fidelity imports torchvision, and no torchvision build loads beside the CPU torch wheel (PyPI's
# torchvision links libtorch_cuda), so only the tests marked `inception` run on the second torch.
# TORCH_SPEC / INCEPTION_TORCH_SPEC pin torch for this machine and CI without pinning users (pyproject keeps ranges).
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
INCEPTION_TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
TEST_EXTRAS ?= dev,latent,pretrained,diffusers,video,logging,app,docs
# extras as variables: a literal comma would split the arguments of $(call install,...)
INCEPTION_EXTRAS ?= dev,metrics
FMNIST := /usr/share/datasets/fashion-mnist
PIP_FLAGS := -q --no-compile
DEMO_FLAGS ?=

VENV := .venv
TEST_VENV := .venv-test
INCEPTION_VENV := .venv-inception
PY := $(VENV)/bin/python
TEST_PY := $(TEST_VENV)/bin/python
INCEPTION_PY := $(INCEPTION_VENV)/bin/python

.PHONY: setup setup-test setup-inception data browser test test-fast test-inception test-all lint docs demo bench clean

setup: $(VENV)/.installed
setup-test: $(TEST_VENV)/.installed
setup-inception: $(INCEPTION_VENV)/.installed

# $(call install,VENV,REQUIREMENTS): where $(PYTHON)'s own pip can install into another interpreter (pip >= 22.3,
# `pip --python`), the venv is made without pip and that pip installs pip itself with everything else in one
# call (ensurepip's separate install costs about 3 s more); otherwise the venv's own pip does it.
define install
	@if $(PYTHON) -m pip --python "$$($(PYTHON) -c 'import sys; print(sys.executable)')" --version >/dev/null 2>&1; then \
	  test -x $(1)/bin/python || $(PYTHON) -m venv --without-pip $(1); \
	  echo "$(PYTHON) -m pip --python $(1)/bin/python install $(PIP_FLAGS) pip $(2)"; \
	  $(PYTHON) -m pip --python $(1)/bin/python install $(PIP_FLAGS) pip $(2); \
	else \
	  test -x $(1)/bin/python || $(PYTHON) -m venv $(1); \
	  echo "$(1)/bin/python -m pip install $(PIP_FLAGS) $(2)"; \
	  $(1)/bin/python -m pip install $(PIP_FLAGS) $(2); \
	fi
endef

$(VENV)/.installed: pyproject.toml
	$(call install,$(VENV),-e . $(TORCH_SPEC))
	touch $@

$(TEST_VENV)/.installed: pyproject.toml
	$(call install,$(TEST_VENV),-e ".[$(TEST_EXTRAS)]" $(TORCH_SPEC))
	touch $@

$(INCEPTION_VENV)/.installed: pyproject.toml
	$(call install,$(INCEPTION_VENV),-e ".[$(INCEPTION_EXTRAS)]" $(INCEPTION_TORCH_SPEC))
	touch $@

# Real data offline: Debian's dataset-fashion-mnist package (root + apt), else set ELT_DATA.
data:
	@if [ -z "$$ELT_DATA" ] && [ ! -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)); \
	  else echo "Fashion-MNIST not found: run 'sudo apt-get install dataset-fashion-mnist' or set ELT_DATA"; fi; \
	fi

# Debian's Chromium for the browser tests of elt app (Playwright drives it; nothing downloads a browser)
browser:
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq chromium fonts-dejavu-core || (apt-get update -qq && apt-get install -y -qq chromium fonts-dejavu-core)); \
	  else echo "chromium not found: run 'sudo apt-get install chromium' (browser tests skip without it)"; fi; \
	fi

# every test on the demo's CPU torch; the Inception ones skip there with their reason (make test-inception)
test: setup-test data browser
	$(TEST_PY) -m pytest -q

test-inception: setup-inception
	$(INCEPTION_PY) -m pytest -q -m inception

test-all: test test-inception

test-fast: setup-test
	$(TEST_PY) -m pytest -q -m "not slow"

lint: setup-test
	$(TEST_VENV)/bin/ruff check .
	$(TEST_VENV)/bin/ruff format --check .

# the documentation site, offline, into site/ (mkdocs.yml; --strict: a broken link or API reference fails)
docs: setup-test
	NO_MKDOCS_2_WARNING=1 $(TEST_VENV)/bin/mkdocs build --strict --site-dir site

demo: setup
	$(VENV)/bin/elt demo $(DEMO_FLAGS)

# results go to runs/ (untracked): benchmarks/results/ holds the recorded figures the docs quote
bench: setup
	$(PY) benchmarks/ilsd_overhead.py --out runs/bench/ilsd_overhead.json

clean:
	rm -rf $(VENV) $(TEST_VENV) $(INCEPTION_VENV) .pytest_cache .ruff_cache site
