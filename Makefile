# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install install-test system-deps demo test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[all]'
	touch $@

install: $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[all,test]'
	touch $@

system-deps:
	bash scripts/system-deps.sh

install-test: $(TEST_STAMP) system-deps

demo: install
	$(BIN)/python -m quiver.examples.demo

test: install-test
	$(BIN)/python -m pytest -q

bench: install-test
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) demo-repo .pytest_cache
