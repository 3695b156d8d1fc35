# tigasepy on a fresh clone:
#   make run    create .venv, install tigasepy, run `twistd -n tigasepy` here (all-in-one,
#               SQLite; tigasepy.toml, data/ and a self-signed certificate on first start)
#   make test   create .venv, install tigasepy[test], run pytest (PYTEST_ARGS="..." to pass options)
#
# tigasepy is installed as a regular (non-editable) package: that is what copies
# twisted/plugins/tigasepy_plugin.py into the venv's twisted/plugins, where twistd finds it.
# The install is redone whenever a source file changes (stamp files in .venv). pytest
# imports the working tree first (pythonpath in setup.cfg), so tests see edits at once.

PYTHON ?= python3
VENV ?= .venv
PYTEST_ARGS ?=
TWISTD_ARGS ?=

PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1

SOURCES := setup.py setup.cfg $(shell find tigasepy twisted -type f \( -name '*.py' -o -name '*.sql' \) 2>/dev/null)

.PHONY: run test install install-test clean

run: $(VENV)/.installed-run
	$(VENV)/bin/twistd --nodaemon --pidfile= tigasepy $(TWISTD_ARGS)

test: $(VENV)/.installed-test
	$(VENV)/bin/pytest $(PYTEST_ARGS)

install: $(VENV)/.installed-run

install-test: $(VENV)/.installed-test

$(PY):
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  echo "$(PYTHON) cannot create virtualenvs: on Debian, apt-get install python3-venv" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# build/ is removed first: setuptools would package stale files left there from deleted modules.
$(VENV)/.installed-run: $(PY) $(SOURCES)
	rm -rf build
	$(PIP) install --quiet .
	@$(MAKE) --no-print-directory refresh-plugin-cache
	touch $@

$(VENV)/.installed-test: $(PY) $(SOURCES)
	rm -rf build
	$(PIP) install --quiet ".[test]"
	@$(MAKE) --no-print-directory refresh-plugin-cache
	touch $@

.PHONY: refresh-plugin-cache
# Rebuild twisted/plugins/dropin.cache now, so that twistd does not have to at start.
refresh-plugin-cache:
	@cd / && $(abspath $(PY)) -c 'from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))'

clean:
	rm -rf build dist *.egg-info $(VENV)
