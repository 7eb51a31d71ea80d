# The two commands: `make run` serves the demo models, `make test` runs the whole suite.
# Each bootstraps the virtual environment it needs on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# checkov cannot share .venv (see pyproject.toml's dependency group `scan`).
SCAN_VENV  := .venv-scan
SCAN_STAMP := $(SCAN_VENV)/.installed

.PHONY: run test clean

# The local demo listens on loopback only and, unless given a keys file, without authentication.
run: $(STAMP)
	$(if $(MIS_API_KEYS_FILE),,MIS_AUTH=$${MIS_AUTH:-off}) $(BIN)/gunicorn -c server/gunicorn.conf.py

test: $(STAMP) $(SCAN_STAMP)
	CHECKOV=$(SCAN_VENV)/bin/checkov $(BIN)/python -m pytest $(PYTEST_ARGS)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(SCAN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/pip install --quiet --upgrade pip
	$(SCAN_VENV)/bin/pip install --quiet --group scan
	touch $@

clean:
	rm -rf $(VENV) $(SCAN_VENV) var .pytest_cache
