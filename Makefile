# One command from a fresh clone to a working demo (`make demo`) and to a
# green test run (`make test`). Both create .venv and install the pinned
# versions from constraints.txt first.
PYTHON ?= python3
# Where torch comes from besides PyPI: https://download.pytorch.org/whl/cpu for the CPU
# build on Linux (PyPI's is the CUDA build); empty: PyPI and pip's own configuration
TORCH_INDEX ?=
PIP_INDEX := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint bench llama harness verify-gguf clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(PIP_INDEX) -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/textgen train --model demo --time 2m --overwrite
	$(BIN)/textgen generate "The list" --model demo --temperature 0.8 \
		--max-new-tokens 120 --seed 0 --show-top 5

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check textgen tests benchmarks
	$(BIN)/ruff format --check textgen tests benchmarks
	$(BIN)/lint-imports

# llama-cpp-python compiles llama.cpp from source (a few minutes on 2 cores, once):
# the tests that run GGUF exports in llama.cpp itself need it.
llama: setup
	$(BIN)/pip install --quiet -c constraints.txt -e '.[llama]'

# lm-evaluation-harness (and the datasets stack it brings): the test that scores a model
# through textgen serve with it needs it
harness: setup
	$(BIN)/pip install --quiet -c constraints.txt -e '.[harness]'

verify-gguf: llama
	$(BIN)/python -m pytest -q tests/test_export.py

bench: setup
	$(BIN)/pip install --quiet -c constraints.txt -e '.[bench]'
	$(BIN)/python benchmarks/decode_speed.py
	$(BIN)/python benchmarks/train_quality.py
	$(BIN)/python benchmarks/data_pipeline.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
