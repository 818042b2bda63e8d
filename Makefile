# Two entry points: `make demo` and `make test` (and `make gpu-check`, below). Each of the two creates .venv
# when it is missing and installs medgen with torch pinned to the CPU build (constraints.txt); reruns skip
# the install.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.medgen-installed
PIP_QUIET := 2>&1 | { grep -v "is ignored" || true; }

.PHONY: install demo test gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0 $(PIP_QUIET)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]' $(PIP_QUIET)
	@$(PY) -c "import torch, monai, medgen; print('medgen', medgen.__version__, '| torch', torch.__version__, '| monai', monai.__version__)"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medgen demo

test: $(STAMP)
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# `medgen gpu-check` (docs/benchmarks.md): run with the interpreter whose torch sees your GPU, GPU_PYTHON
# (default: python3), not .venv, which pins the CPU build of torch. Nothing is installed.
# Options: make gpu-check GPU_CHECK_ARGS="--skip-tests --pipelines pet_lowdose"
GPU_PYTHON ?= $(PYTHON)
gpu-check:
	$(GPU_PYTHON) -m medgen gpu-check $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) runs demo_data .pytest_cache
