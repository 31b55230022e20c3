# Two commands do all the setup on a fresh machine: `make demo` and `make test`.
# Both create .venv when it is missing; torch is pinned first so pip takes the local
# CPU build instead of downloading several GB of CUDA wheels.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0

.PHONY: demo test lint venv clean bench-synthetic

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/greenflow demo

# The synthetic benchmark (known click probabilities, the true ORACLE): the demo's whole
# pipeline on 100,000 generated requests, outputs under runs/synthetic/.
bench-synthetic: $(STAMP)
	$(BIN)/greenflow demo --dataset synthetic --requests 100000

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check greenflow tests bench
	$(BIN)/ruff format --check greenflow tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
