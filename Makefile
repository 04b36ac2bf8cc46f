# The two set-up commands (see README): `make run` and `make test`. Both install what they need:
# the Python venv and packages, the dashboard's npm packages and build, and (for the browser tests)
# Debian's chromium.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DASH   := dashboard/dist/index.html
TOOLS  := tests/tools/node_modules/.installed
DASH_SOURCES := $(shell find dashboard/src dashboard/scripts -type f 2>/dev/null) dashboard/index.html \
                dashboard/vite.config.ts dashboard/tsconfig.json

.PHONY: run test lint browser bench schema clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "phonefleet needs Python 3.11+"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing phonefleet into $(VENV) ..."
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

$(DASH): dashboard/package.json dashboard/package-lock.json $(DASH_SOURCES)
	@echo "building the dashboard (npm ci && npm run build) ..."
	@cd dashboard && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent
	@touch $(DASH)

# Tools the tests drive for real: the Supabase CLI (`supabase db push`). Without the npm registry the install
# fails with a note and those tests say they skipped, and why.
$(TOOLS): tests/tools/package.json
	@echo "installing the test tools (the Supabase CLI) ..."
	@cd tests/tools && npm install --no-package-lock --no-audit --no-fund --loglevel=error && touch node_modules/.installed \
	  || echo "note: the Supabase CLI could not be installed; its tests will skip"

# Browser tests drive Debian's chromium (never a downloaded browser build).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then echo "installing Debian's chromium ..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: install Debian's chromium (sudo apt-get install chromium) for the browser tests"; fi; }

run: $(STAMP) $(DASH)
	$(BIN)/phonefleet-demo

test: $(STAMP) $(DASH) browser lint $(TOOLS)
	cd dashboard && npm test --silent
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

schema: $(STAMP)
	$(BIN)/phonefleet-server schema protocol.schema.json

clean:
	rm -rf $(VENV) .phonefleet .mypy_cache .ruff_cache .pytest_cache dashboard/node_modules dashboard/dist \
	  tests/tools/node_modules
