# Vigil — the two commands that matter: `make run` and `make test`. Everything works from a fresh clone with only
# Python >= 3.11 on the machine: the venv, the packages, the broker and Postgres are all installed/started here.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Re-install when the project definition changes.
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
BENCH_STAMP := $(VENV)/.bench-installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: venv kernels browser console-assets run demo test test-slow test-unit test-integration test-e2e test-fault lint format bench bench-drift bench-audit bench-gateway bench-monitor bench-monitoring bench-loop bench-scale bench-report clean bench-console bench-idle

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Vigil needs Python >= 3.11"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

## The console's front-end libraries (htmx, its SSE extension, uPlot, dagre for graph layout): pinned with integrity
## hashes in package-lock.json, installed from the npm registry by `npm ci` and copied into the package (no CDN, no
## build step).
CONSOLE_VENDOR := services/vigil/console/static/vendor
console-assets: $(CONSOLE_VENDOR)/.installed

$(CONSOLE_VENDOR)/.installed: package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	@mkdir -p $(CONSOLE_VENDOR)
	cp node_modules/htmx.org/dist/htmx.min.js node_modules/htmx-ext-sse/dist/sse.js \
	   node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css \
	   node_modules/@dagrejs/dagre/dist/dagre.min.js $(CONSOLE_VENDOR)/
	@touch $@

## Compile the numba kernels into NUMBA_CACHE_DIR once, before anything imports them: otherwise the first run of a
## fresh clone compiles them in the processes that import them side by side (the four test workers collecting the
## suite: 46 s on a cold cache against 14 s warm; the six services of `make run`). Compiling once takes ~23 s on a
## 2-core machine, loading from the cache ~1 s.
kernels: venv
	$(BIN)/python infra/docker/warm_numba.py

## Debian's chromium for the console's browser tests (playwright drives it; no browser download) and for printing
## evidence packs to PDF; poppler-utils (pdftoppm, pdftotext) for the tests that read the PDF's first page.
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	command -v pdftoppm >/dev/null || (apt-get update && apt-get install -y poppler-utils)

## Start the embedded platform (broker, Postgres, six services, console) and drive the demo loop. Ctrl-C stops all.
run: venv console-assets kernels
	$(BIN)/vigil demo

## The whole test suite against real infrastructure (embedded broker + Postgres unless Docker or DATABASE_URL),
## except the cases marked slow (the fault suite's broker loss and Postgres restart under the loop): `make test-slow`.
## Four workers, a test file each at a time (a module's cases share its fixtures, e.g. the fault loop's stack); each
## worker starts its own broker and Postgres. Most cases wait on windows and timers, so four fit two cores. Longest
## modules first (tests/support/module_costs.py; xdist's own reorder, most cases first, put them last).
TEST_WORKERS ?= 4
test: venv console-assets browser kernels
	$(BIN)/python -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

## The slow cases need the rounds before them (they continue the same loop), so this runs their whole module.
test-slow: venv console-assets browser kernels
	$(BIN)/python -m pytest -q tests/fault/test_loop_faults.py

test-unit: venv kernels
	$(BIN)/python -m pytest -q -m unit

test-integration: venv kernels
	$(BIN)/python -m pytest -q -m integration

test-e2e: venv console-assets browser kernels
	$(BIN)/python -m pytest -q -m e2e

test-fault: venv kernels
	$(BIN)/python -m pytest -q -m fault

## ruff, formatting, mypy, and the import rules (services never import each other, libs/ imports no service, private
## modules stay in their package, no cycles): the import-linter contracts under [tool.importlinter] in pyproject.toml;
## and the k8s manifests against the Kubernetes API schemas (kubernetes-validate ships them: offline).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy libs services
	$(BIN)/lint-imports
	$(BIN)/kubernetes-validate --strict --quiet $(filter-out infra/k8s/kustomization.yaml,$(wildcard infra/k8s/*.yaml))

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	@rm -f $(VENV)/.bench-installed-*
	@touch $@

## Benchmarks: results go to docs/benchmarks/<area>.json and .md (never part of pass/fail); the report gathers them
## into docs/benchmarks/README.md once every benchmark has run.
bench: bench-drift bench-audit bench-gateway bench-monitor bench-monitoring bench-loop bench-console bench-idle
	$(MAKE) bench-report

bench-report: $(STAMP)
	$(BIN)/python tests/bench/bench_report.py

bench-loop: $(STAMP)
	$(BIN)/python tests/bench/bench_loop.py

bench-monitor: $(STAMP)
	$(BIN)/python tests/bench/bench_monitor.py

## wrk (Debian's package) is the load generator: a Python client saturates before the gateway does.
bench-gateway: $(STAMP)
	command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(BIN)/python tests/bench/bench_gateway.py

## First paint of each console page in headless Chromium after the demo's story (docs/benchmarks/console.*).
bench-console: $(STAMP) console-assets browser
	$(BIN)/python tests/bench/bench_console.py

## An idle stack's CPU per process, a broker-epoch check's cost, delivery latency against the fetch wait.
bench-idle: $(STAMP)
	$(BIN)/python tests/bench/bench_idle.py

bench-audit: $(STAMP)
	$(BIN)/python tests/bench/bench_audit.py

## Monitor and auditor throughput with 1 and 2 instances of each (docs/benchmarks/scale.json; issue #24).
bench-scale: $(STAMP)
	$(BIN)/python tests/bench/bench_scale.py

## NannyML 0.13.1 without its dependency pins (see the bench-nannyml extra in pyproject.toml); usage analytics off.
NANNYML_STAMP := $(VENV)/.nannyml-installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
$(NANNYML_STAMP): $(BENCH_STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,bench-nannyml]'
	$(BIN)/python -m pip install -q --no-deps 'nannyml==0.13.1' 'segment-analytics-python>=2.3,<3'
	@rm -f $(VENV)/.nannyml-installed-*
	@touch $@

bench-monitoring: $(NANNYML_STAMP)
	NML_DISABLE_USAGE_LOGGING=1 $(BIN)/python tests/bench/bench_monitoring_cbpe.py
	NML_DISABLE_USAGE_LOGGING=1 $(BIN)/python tests/bench/bench_monitoring_drift.py

bench-drift: $(BENCH_STAMP)
	$(BIN)/python tests/bench/bench_drift.py

clean:
	rm -rf $(VENV) .numba_cache .mypy_cache .ruff_cache .pytest_cache
