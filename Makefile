# The two commands: `make run` starts the hive, `make test` runs the tests.
# Both create the virtualenv on first use, so a fresh checkout needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The pinned Claude Code CLI the real-CLI tests run (tests/claude-cli/: package.json with
# the exact version and npm's lockfile), installed into an ignored cache directory.
CLAUDE_CLI := .cache/claude-code
CLAUDE_STAMP := $(CLAUDE_CLI)/.installed

.PHONY: run test lint bench vendor clean claude-cli bytecode

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP) bytecode
	scripts/system-deps run
	$(BIN)/hyperhive up

test: $(STAMP) bytecode
	scripts/system-deps
	$(MAKE) --no-print-directory claude-cli
	$(BIN)/pytest -n 2 -q

# Bytecode for the sources, written once: a hive (and the suite) starts many hyperhive
# processes (a harness per agent, an MCP server per turn), and with PYTHONDONTWRITEBYTECODE
# set each would compile every module it imports again (a daemon's imports: 1.2 s of CPU
# instead of 0.6 s). Up-to-date files are skipped.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q hyperhive forge_ui tests bench

# npm ci from the lockfile; the package's postinstall links its platform binary (an
# optional dependency per platform) over bin/claude.exe, so it runs offline afterwards.
claude-cli: $(CLAUDE_STAMP)

$(CLAUDE_STAMP): tests/claude-cli/package.json tests/claude-cli/package-lock.json
	mkdir -p $(CLAUDE_CLI)
	cp tests/claude-cli/package.json tests/claude-cli/package-lock.json $(CLAUDE_CLI)/
	cd $(CLAUDE_CLI) && npm ci --no-audit --no-fund --loglevel=error
	$(CLAUDE_CLI)/node_modules/.bin/claude --version
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

# Re-fetch the pinned front-end packages (xterm.js, uPlot) into forge_ui/static/vendor/
# with npm; the result is committed, so nothing else needs npm.
vendor: $(STAMP)
	$(BIN)/python scripts/vendor.py

clean:
	rm -rf $(VENV) build *.egg-info .cache
