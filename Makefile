# Developer entry points. Needs only python3 >= 3.11 and make: every target that runs
# project code creates or reuses .venv first.
#
#   make demo    replay the bundled demo trace (apportion vs fifo vs kueue) and plan its capacity, in out/demo
#   make test    ruff (lint and format), mypy (strict for scheduler, checked for webhook, sim and benchmarks), pytest — what CI runs (.ci/run)
#   make bench   time decide() on benchmark clusters
#   make lint    ruff and mypy only
#   make lock    re-pin constraints.txt to what .venv holds (after changing pyproject.toml's dependencies)
#   make clean   caches and build output (keeps .venv; `make distclean` removes it too)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv test lint lock demo bench clean distclean

help:
	@sed -n 's/^#   //p' $(MAKEFILE_LIST)

venv: $(STAMP)

# Reinstall only when pyproject.toml or the pins changed since the last install (the stamp's
# mtime). constraints.txt pins every package to the version make test last passed with: a
# fresh clone (CI's) installs what was tested, not whatever was released since.
$(STAMP): pyproject.toml constraints.txt
	@if [ ! -x $(BIN)/python ]; then \
	  $(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Apportion needs python3 >= 3.11, but $(PYTHON) is " + sys.version.split()[0] + "; run make PYTHON=python3.11 (or newer)")' && \
	  echo "creating $(VENV) with $$($(PYTHON) --version)" && \
	  $(PYTHON) -m venv $(VENV); \
	fi
	@$(BIN)/python -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "$(VENV) has python " + sys.version.split()[0] + "; Apportion needs >= 3.11: rm -rf $(VENV) and run make PYTHON=python3.11")'
	$(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[test]'
	@touch $(STAMP)

# Resolves pyproject.toml's ranges afresh (the newest releases), then pins what it got.
lock:
	@test -x $(BIN)/python || $(MAKE) venv
	$(BIN)/python -m pip install --disable-pip-version-check -q --upgrade --upgrade-strategy eager -e '.[test]'
	@{ sed -n '1,2p' constraints.txt; \
	  $(BIN)/python -m pip freeze --exclude-editable --disable-pip-version-check; } > constraints.new
	mv constraints.new constraints.txt
	@touch $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy scheduler webhook sim benchmarks

# pytest exits 5 when it collected no tests; a suite that tests nothing must not pass.
test: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy scheduler webhook sim benchmarks
	@status=0; $(BIN)/pytest -q || status=$$?; \
	if [ $$status -eq 5 ]; then \
	  echo "make test: FAILED: pytest collected no tests (exit 5); a run that tests nothing is not a pass" >&2; \
	  exit 1; \
	fi; \
	exit $$status

demo: venv
	$(BIN)/apportion simulate demo --policy apportion --compare fifo,kueue --out out/demo
	$(BIN)/apportion plan demo --max-simulations 8 --out out/demo/plan

bench: venv
	$(BIN)/python benchmarks/decide_bench.py

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
