# The two commands: `make run` serves the demo models, `make test` runs the whole suite.
# Each bootstraps what it needs on first use, in one virtual environment: `make run` installs only
# the server and the demo (the `server` and `demo` sets, about a minute), `make test` adds the
# infrastructure and test tools to it (`dev`). Either may come first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
STAMP     := $(VENV)/.installed
# checkov cannot share .venv (see pyproject.toml's dependency group `scan`).
SCAN_VENV  := .venv-scan
SCAN_STAMP := $(SCAN_VENV)/.installed

.PHONY: run test clean

# The local demo listens on loopback only and, unless given a keys file, without authentication.
# `mis serve` prints one line with the API's and the docs' URLs once the server is ready.
run: $(RUN_STAMP)
	$(if $(MIS_API_KEYS_FILE),,MIS_AUTH=$${MIS_AUTH:-off}) $(BIN)/mis serve

test: $(STAMP) $(SCAN_STAMP)
	CHECKOV=$(SCAN_VENV)/bin/checkov $(BIN)/python -m pytest $(PYTEST_ARGS)

$(RUN_STAMP): pyproject.toml
	@echo "Installing the server and the demo into $(VENV) (first run only, about a minute)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --progress-bar off -e '.[server,demo]'
	touch $@

# `dev` holds `server` and `demo`, so it stands for `make run`'s install too.
$(STAMP): pyproject.toml
	@echo "Installing the server, the infrastructure and the test tools into $(VENV)..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --progress-bar off -e '.[dev]'
	touch $@ $(RUN_STAMP)

# pip learned dependency groups (--group) in 25.1.
$(SCAN_STAMP): pyproject.toml
	@echo "Installing checkov into $(SCAN_VENV)..."
	$(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/pip install --quiet --upgrade pip
	$(SCAN_VENV)/bin/pip install --progress-bar off --group scan
	touch $@

clean:
	rm -rf $(VENV) $(SCAN_VENV) var .pytest_cache
