# The two commands of the README: `make run` (the demo) and `make test` (every test, both cores).
# Each makes its own venv in .venv and builds the Cython extension in place.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run test test-packages test-cython test-python ext autobahn autobahn-client autobahn-install autobahn-server-cython \
	autobahn-server-python autobahn-client-cython autobahn-client-python bench bench-micro fuzz lint wheel clean

$(VENV)/.stamp: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Rebuild the extensions whenever _speedups.pyx/.pxd or _readloop.py/_readloop_c.pxd changed (cheap when up to date).
ext: $(VENV)/.stamp
	$(PY) setup.py -q build_ext --inplace

# make run PORT=9000 HOST=0.0.0.0 ARGS="--workers 2 --redis redis://127.0.0.1:6379/0"
HOST ?= 127.0.0.1
PORT ?= 8080
ARGS ?=

run: ext
	$(PY) -m zzz --host $(HOST) --port $(PORT) $(ARGS)

# The whole suite on the compiled core, then again on the pure-Python twin. First the system packages
# the tests need (.ci/install_packages.sh: installed when run as root, else one line saying what is missing).
test: test-packages test-cython test-python

test-packages:
	@bash .ci/install_packages.sh

test-cython: test-packages ext
	$(PY) -c "import zzz.core as c, zzz.readloop as r; assert c.IMPLEMENTATION == r.IMPLEMENTATION == 'cython', 'the extensions did not build'"
	$(PY) -m pytest $(PYTEST_ARGS)

test-python: test-packages ext
	ZZZ_NO_EXTENSIONS=1 $(PY) -m pytest -m "not packaging" $(PYTEST_ARGS)

# Conformance: wstest's fuzzingclient against our server, its fuzzingserver against our client.
# The two cores run side by side on their own ports (wstest, not zzz, is the slow part).
AUTOBAHN_RUN = $(PY) autobahn-config/run.py
AUTOBAHN_TIMEOUT ?= 2400

autobahn-install:
	bash .ci/install_autobahn.sh > /dev/null

autobahn: ext autobahn-install
	$(MAKE) --no-print-directory --output-sync=target -j2 autobahn-server-cython autobahn-server-python

autobahn-client: ext autobahn-install
	$(MAKE) --no-print-directory --output-sync=target -j2 autobahn-client-cython autobahn-client-python

autobahn-server-cython autobahn-server-python: autobahn-server-%:
	$(AUTOBAHN_RUN) client --impl $* --port $(if $(filter cython,$*),9001,9002) --timeout $(AUTOBAHN_TIMEOUT)

autobahn-client-cython autobahn-client-python: autobahn-client-%:
	$(AUTOBAHN_RUN) server --impl $* --port $(if $(filter cython,$*),9003,9004) --timeout $(AUTOBAHN_TIMEOUT)

$(VENV)/.bench-stamp: $(VENV)/.stamp
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

bench: ext $(VENV)/.bench-stamp
	@bash .ci/install_packages.sh bench
	$(PY) bench/run.py

bench-micro: ext $(VENV)/.bench-stamp
	$(PY) -m pytest bench/micro.py --benchmark-only -q

# Lint, format and types: ruff and mypy --strict (both pinned in the dev extra), as CI runs them.
LINT_PATHS := zzz tests bench examples fuzz autobahn-config setup.py
lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy

# Differential fuzzing of both cores and the parsers (atheris); FUZZ_SECONDS per target.
FUZZ_SECONDS ?= 30
fuzz: ext
	$(PY) fuzz/run.py --seconds $(FUZZ_SECONDS)

wheel: ext
	$(PY) -m build --wheel --outdir dist/

clean:
	rm -rf build dist *.egg-info zzz/*.so zzz/channels/*.so zzz/_speedups.c zzz/_readloop.c zzz/channels/_wire_c.c reports .pytest_cache
