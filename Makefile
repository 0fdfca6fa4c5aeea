# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
# `make test` runs lint, the unit tier (no backend), the integration tier, then the emulation group.
.PHONY: setup demo test test-unit test-integration test-emulation lint

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
	$(BIN)/lint-imports --no-cache

test-unit: setup
	$(BIN)/python -m pytest -q -m "not integration"

test-integration: setup
	$(BIN)/python -m pytest -q -m "integration and not emulation" --durations=25 -n 2 --dist loadfile

# arm64 bundles cross-built, installed and checked under qemu: every core, in a group of their own
test-emulation: setup
	$(BIN)/python -m pytest -q -m emulation --durations=10

test: lint test-unit test-integration test-emulation
