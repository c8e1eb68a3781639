# The two commands: `make run` starts the hive, `make test` runs the tests.
# Both create the virtualenv on first use, so a fresh checkout needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench vendor clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	scripts/system-deps run
	$(BIN)/hyperhive up

test: $(STAMP)
	scripts/system-deps
	$(BIN)/pytest -n 2 -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

# Re-fetch the pinned front-end packages (xterm.js, uPlot) into forge_ui/static/vendor/
# with npm; the result is committed, so nothing else needs npm.
vendor: $(STAMP)
	$(BIN)/python -m forge_ui.vendor

clean:
	rm -rf $(VENV) build *.egg-info
