# The two Quick start commands: `make serve` and `make test`. Each creates .venv and installs what it needs.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# llama-cpp-python builds from source; a native (-march=native) build dies with an illegal instruction on
# some CPUs, so build for a common x86-64 baseline.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_CURL=OFF

.PHONY: serve test install check

$(BIN)/pip:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# TRL's data helpers (the dataset tests run them) import without torch; TRL's own dependencies would pull it.
TRL ?= trl==1.16.0

$(VENV)/.installed: pyproject.toml Makefile | $(BIN)/pip
	$(BIN)/pip install --quiet -e '.[local,eval,test]'
	$(BIN)/pip install --quiet --no-deps '$(TRL)'
	touch $@

install: $(VENV)/.installed

serve: install
	$(BIN)/hitl serve

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Lint, formatting, strict types and the layers' contracts: what CI checks besides the tests.
check: install
	$(BIN)/ruff check gateway console prompts tests benchmarks
	$(BIN)/ruff format --check gateway console prompts tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
