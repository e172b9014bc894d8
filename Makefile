# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create the virtualenv and install what they need (Debian packages as root).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# pytest-xdist workers for `make test` (tests/conftest.py says how the suite is split)
TEST_WORKERS ?= 2

.PHONY: demo lab test test-real lint bench accel deps clean

$(STAMP): pyproject.toml scripts/debian-packages.txt
	bash scripts/debian-deps.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

deps: $(STAMP)

demo: $(STAMP)
	$(PY) -m dvms.demo

# The real-hypervisor demo (root): 3 lab hosts in network namespaces, 4 TCG guests on
# one network, a burning guest live-migrated away by a DVMS partition, lab down.
lab: $(STAMP)
	$(PY) bench/lab.py --hosts 3 --demo

test: $(STAMP)
	$(VENV)/bin/ruff check dvms tests bench
	$(VENV)/bin/ruff format --check dvms tests bench
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -rs --durations=25 -n $(TEST_WORKERS)

test-real: $(STAMP)
	$(PY) -m pytest -q -rs tests/real

lint: $(STAMP)
	$(VENV)/bin/ruff check dvms tests bench
	$(VENV)/bin/ruff format --check dvms tests bench
	$(VENV)/bin/mypy

# Optional: the hot paths (simulator, placement engine) compiled with mypyc (same
# source; used with DVMS_ACCEL=1, see dvms/accel.py). The benchmarks build it themselves
# when needed.
accel: $(STAMP)
	$(PY) -m dvms.accel build

bench: $(STAMP)
	$(PY) bench/overlay.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build/accel
