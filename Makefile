# The two commands: `make run` serves the demo models, `make test` runs the whole suite.
# Each bootstraps the virtual environment it needs on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test clean

run: $(STAMP)
	$(BIN)/gunicorn -c server/gunicorn.conf.py

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) var .pytest_cache
