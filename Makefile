# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
.PHONY: setup demo test lint

VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

setup:
	@tools/setup.sh

demo: setup
	$(BIN)/edgepack build --target edge-4gb --out bundles
	$(BIN)/edgepack verify bundles/SmolLM2-135M-Instruct-edge-4gb.tar.gz

lint: setup
	$(BIN)/ruff check .

test: lint
	$(BIN)/python -m pytest -q
