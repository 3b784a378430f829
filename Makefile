# polyfit: two commands do all set-up on a fresh machine (virtual env, torch, the compiled build).
#   make demo   the main job: the seed's curve fit with polyfit, then the benchmark suite (quick preset)
#   make test   the test suite (make test-portable: again on the kernels for CPUs without AVX2)
# Knobs: PYTHON, VENV, TORCH_SPEC (default torch==2.13.0, the CPU wheel), PIP_ARGS (e.g.
# "--index-url https://download.pytorch.org/whl/cpu"), MAX_JOBS, BENCH_ARGS, PYTEST_ARGS.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP_ARGS ?=
MAX_JOBS ?= 2
BENCH_ARGS ?= --quick
PYTEST_ARGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.polyfit-deps

.PHONY: demo test test-portable build bench cuda-build-check clean

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install $(PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install ninja numpy pytest hypothesis expecttest matplotlib
	touch $(STAMP)

# Compiles polyfit._C and the CPU kernel libraries against the venv's torch (in place, editable).
build: $(STAMP)
	MAX_JOBS=$(MAX_JOBS) $(PY) -m pip install --no-build-isolation --no-deps -e .
	$(PY) -m polyfit info

demo: build
	$(PY) -m polyfit demo
	$(PY) -m benchmarks $(BENCH_ARGS)

bench: build
	$(PY) -m benchmarks $(BENCH_ARGS)

test: build
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

# The suite again on the portable kernels, the library a CPU without AVX2 loads (ATen's choice of
# instruction set, forced to its baseline, picks polyfit's too).
test-portable: build
	ATEN_CPU_CAPABILITY=default $(PY) -m pytest -q $(PYTEST_ARGS) tests

clean:
	rm -rf build *.egg-info polyfit/*.so polyfit/_build_info.py
