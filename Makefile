# Set-up and checks. `make run` and `make test` install everything they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch/torchvision pair that pip installs from this machine's local wheels (open_clip needs torchvision).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

DEBIAN_DATA := tuxpaint-stamps-default dataset-fashion-mnist

.PHONY: install run lint test test-fast testdata bench bench-quick clean

$(BIN)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e '.[test,export]' $(TORCH_PINS)
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/cvbot serve

# Real labelled images for the real-data tests (Debian packages): installed when we are root on Debian.
testdata:
	@if dpkg -s $(DEBIAN_DATA) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_DATA) >/dev/null; \
	else echo "note: $(DEBIAN_DATA) not installed (needs root on Debian); the real-data tests and benchmarks will be skipped"; fi

# Static checks, each once: ruff (rules in pyproject.toml), mypy --strict over core/, import-linter's contracts.
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint testdata
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: install testdata
	$(BIN)/python -m benchmarks

bench-quick: install testdata
	$(BIN)/python -m benchmarks --quick

clean:
	rm -rf $(VENV) .pytest_cache
