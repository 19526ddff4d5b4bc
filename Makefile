# carobama: `make run` (demo) and `make test` (whole suite) both do their own set-up.
PYTHON ?= python3
VENV ?= .venv
CROSSBAR_VENV ?= .venv-crossbar
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: venv crossbar js run test soak bench lint router clean

venv: $(STAMP)

$(STAMP): pyproject.toml core/pyproject.toml core/setup.py core/src/livetiming/service/_lzstring.c
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ./core
	$(PIP) install -q -e '.[test]' --config-settings editable_mode=compat
	touch $(STAMP)

# The demo: a bundled session replayed as the upstream, the service in standalone mode.
# `make run SOURCE=bmi` picks the other demo; RUN_ARGS passes more options.
SOURCE ?= emperor
RUN_DIR ?= .run
run: venv
	mkdir -p $(RUN_DIR)
	LIVETIMING_STATE_DIR=$(RUN_DIR)/state LIVETIMING_LOG_DIR=$(RUN_DIR)/logs \
	LIVETIMING_ANALYSIS_DIR=$(RUN_DIR)/analysis LIVETIMING_RECORDINGS_DIR=$(RUN_DIR)/recordings \
	LIVETIMING_DATA_DIR=$(RUN_DIR)/data $(VENV)/bin/carobama-demo --source $(SOURCE) $(RUN_ARGS)

crossbar: $(CROSSBAR_VENV)/bin/crossbar

$(CROSSBAR_VENV)/bin/crossbar:
	$(PYTHON) -m venv $(CROSSBAR_VENV)
	$(CROSSBAR_VENV)/bin/pip install -q --upgrade pip
	$(CROSSBAR_VENV)/bin/pip install -q -r deploy/crossbar/requirements.txt

js: tests/js/node_modules/.installed

tests/js/node_modules/.installed: tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund -q
	touch $@

test: venv crossbar js
	CROSSBAR=$(CROSSBAR_VENV)/bin/crossbar $(PY) -m pytest $(PYTEST_ARGS)

# The long forms of the fault-injection suite (tests/faults, docs/RELIABILITY.md).
soak: venv crossbar js
	CROSSBAR=$(CROSSBAR_VENV)/bin/crossbar $(PY) -m pytest tests/faults --soak -p no:cacheprovider $(PYTEST_ARGS)

# The performance benchmarks of issue #8 in their short forms (under 15 minutes); prints a table
# of figure, target, pass/fail and appends the figures to docs/BENCHMARKS.md.
bench: venv crossbar js
	CROSSBAR=$(CROSSBAR_VENV)/bin/crossbar $(PY) bench/run_all.py $(BENCH_ARGS)

router: crossbar
	@test -n "$$LIVETIMING_SHARED_SECRET" || { echo "make router: set LIVETIMING_SHARED_SECRET first" >&2; exit 2; }
	$(CROSSBAR_VENV)/bin/crossbar edge start --cbdir deploy/crossbar

lint: venv
	$(VENV)/bin/ruff check core/src src tests bench

clean:
	rm -rf $(VENV) $(CROSSBAR_VENV)
