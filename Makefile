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

.PHONY: run test prepare system-deps lint bench vendor clean claude-cli bytecode

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP) bytecode
	scripts/system-deps run
	$(BIN)/hyperhive up

test: prepare
	$(BIN)/pytest -n 2 --dist worksteal -q

# What the tests need, side by side: the Debian packages, then the pinned CLI (npm may
# come with them), beside the virtualenv, its bytecode and the test modules' rewritten
# asserts (on a fresh machine the packages take the longest).
prepare:
	$(MAKE) --no-print-directory -j4 --output-sync=target claude-cli bytecode $(REWRITTEN)

system-deps:
	scripts/system-deps

# Bytecode for the sources, written once: a hive (and the suite) starts many hyperhive
# processes (a harness per agent, an MCP server per turn), and with PYTHONDONTWRITEBYTECODE
# set each would compile every module it imports again (a daemon's imports: 1.2 s of CPU
# instead of 0.6 s). Up-to-date files are skipped.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q hyperhive forge_ui tests bench

# pytest rewrites each test module's asserts on import and caches the result in
# __pycache__ unless bytecode writing is off (PYTHONDONTWRITEBYTECODE). Written once here,
# by a collection alone, each xdist worker reads it instead of rewriting every module
# itself (the suite's collection: 13.6 s of CPU per worker, 4 s with the cache).
REWRITTEN := $(VENV)/.rewritten
$(REWRITTEN): $(STAMP) $(wildcard tests/*.py tests/support/*.py)
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest --collect-only -q -p no:cacheprovider >/dev/null
	touch $@

# npm ci from the lockfile; the package's postinstall links its platform binary (an
# optional dependency per platform) over bin/claude.exe, so it runs offline afterwards.
claude-cli: $(CLAUDE_STAMP)

$(CLAUDE_STAMP): tests/claude-cli/package.json tests/claude-cli/package-lock.json | system-deps
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
