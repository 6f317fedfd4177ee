# Everything sets itself up from nothing: `make demo` and `make test` create .venv on first use.
# TORCH_SPEC pins the torch wheel for this machine/CI without pinning users (pyproject keeps a range).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(EXTRAS)
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup data test test-fast lint demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]" "$(TORCH_SPEC)"
	touch $@

# Real data offline: Debian's dataset-fashion-mnist package (root + apt), else set ELT_DATA.
data:
	@if [ -z "$$ELT_DATA" ] && [ ! -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)); \
	  else echo "Fashion-MNIST not found: run 'sudo apt-get install dataset-fashion-mnist' or set ELT_DATA"; fi; \
	fi

test: setup data
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .

demo: setup data
	$(VENV)/bin/elt demo

bench: setup
	$(PY) benchmarks/ilsd_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
