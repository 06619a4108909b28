# The two commands: `make demo` runs the main job, `make test` runs the tests.
# Both set everything up on first use (Debian packages, .venv, pinned dependencies).
RECIPE ?= recipes/fashion_mnist.yaml
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: demo test setup setup-test clean

demo: setup
	$(VENV)/bin/edgeship train $(RECIPE) --if-missing
	$(VENV)/bin/edgeship export $(RECIPE)

test: setup-test
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

setup:
	@scripts/bootstrap.sh run

setup-test:
	@scripts/bootstrap.sh test

clean:
	rm -rf runs
