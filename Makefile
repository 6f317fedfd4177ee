# Everything sets itself up from nothing: `make demo` and `make test` create their virtualenv on first use.
#   .venv       core install (CPU torch wheel)            -> make demo, make bench
#   .venv-test  every extra, torch + torchvision pair     -> make test, make lint (all paths tested, Inception too)
# TORCH_SPEC / TEST_TORCH_SPEC pin torch for this machine and CI without pinning users (pyproject keeps ranges).
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
TEST_TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
TEST_EXTRAS ?= dev,metrics,latent,video,logging
FMNIST := /usr/share/datasets/fashion-mnist

VENV := .venv
TEST_VENV := .venv-test
PY := $(VENV)/bin/python
TEST_PY := $(TEST_VENV)/bin/python

.PHONY: setup setup-test data test test-fast lint demo bench clean

setup: $(VENV)/.installed
setup-test: $(TEST_VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e . $(TORCH_SPEC)
	touch $@

$(TEST_VENV)/.installed: pyproject.toml
	test -x $(TEST_PY) || $(PYTHON) -m venv $(TEST_VENV)
	$(TEST_PY) -m pip install -q --upgrade pip
	$(TEST_PY) -m pip install -q $(TEST_TORCH_SPEC)
	$(TEST_PY) -m pip install -q -e ".[$(TEST_EXTRAS)]" $(TEST_TORCH_SPEC)
	touch $@

# Real data offline: Debian's dataset-fashion-mnist package (root + apt), else set ELT_DATA.
data:
	@if [ -z "$$ELT_DATA" ] && [ ! -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)); \
	  else echo "Fashion-MNIST not found: run 'sudo apt-get install dataset-fashion-mnist' or set ELT_DATA"; fi; \
	fi

test: setup-test data
	$(TEST_PY) -m pytest -q

test-fast: setup-test
	$(TEST_PY) -m pytest -q -m "not slow"

lint: setup-test
	$(TEST_VENV)/bin/ruff check .

demo: setup
	$(VENV)/bin/elt demo

bench: setup
	$(PY) benchmarks/ilsd_overhead.py

clean:
	rm -rf $(VENV) $(TEST_VENV) .pytest_cache .ruff_cache
