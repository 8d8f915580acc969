# Shortcuts for the two README commands, each in its own .venv (needs only Python 3.11 and pip).
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

run: $(BIN)/python
	. $(BIN)/activate && pip install -e . && python -m loop.run --budget 200

test: $(BIN)/python
	. $(BIN)/activate && pip install -e '.[dev]' && python -m pytest -q

lint: $(BIN)/python
	$(BIN)/python -m ruff check . && $(BIN)/python -m ruff format --check .

bench: $(BIN)/python
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .venv-ci build *.egg-info
