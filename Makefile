# The two commands: `make demo` runs the main job, `make test` runs the checks and the tests (as CI does).
# Both set everything up on first use (Debian packages, .venv, pinned dependencies).
RECIPE ?= recipes/fashion_mnist.yaml
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: demo demo-arm train test test-fast lint setup setup-test clean

# the demo's checkpoint is in the repository: `make demo` trains only when the recipe's checkpoint is missing
demo: setup
	$(VENV)/bin/edgeship train $(RECIPE) --if-missing
	$(VENV)/bin/edgeship export $(RECIPE)

# after `make demo`: every target on an emulated Raspberry Pi 4 (aarch64 runtimes under qemu; recorded as
# `emulated`: top-1 and agreement on the ARM runtime, no latency). Builds the device on first use (~5 min, root).
DEMO_RUN ?= runs/fashion_mnist
demo-arm: setup
	EDGESHIP=$(VENV)/bin/edgeship scripts/arm64_device.sh profile $(DEMO_RUN) --device rpi4

# retrain the recipe's model from scratch (overwrites its checkpoint; the demo's is bit-identical for a seed)
train: setup
	$(VENV)/bin/edgeship train $(RECIPE)

# CI's log lists the 30 slowest tests: its 30-minute limit on 2 cores is kept by trimming those. Two workers
# (pytest-xdist): one alone leaves a core idle a third of the time (start-ups, subprocesses, devices, timeouts).
# Each file goes whole to one worker, so a module's fixtures and the emulated devices are built once (xdist's
# loadgroup cannot group under pytest 9, whose node ids it no longer rewrites): keep a test file under ~4 minutes;
# the longest files are collected first (tests/bench/) and sent first (xdist would reorder by test count), so the
# last minutes are not one worker alone
TEST_WORKERS ?= 2
test: setup-test lint
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=30 $(PYTEST_ARGS)

# the tests not marked slow, the slowest listed: the quick loop while working
test-fast: setup-test
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow" --durations=15 $(PYTEST_ARGS)

# ruff over the code (pyflakes, bugbear, isort, pyupgrade, complexity) and mypy over the contract modules
lint: setup-test
	$(VENV)/bin/ruff check edgeship tests benchmarks
	$(VENV)/bin/mypy

setup:
	@scripts/bootstrap.sh run

setup-test:
	@scripts/bootstrap.sh test

clean:
	rm -rf runs
