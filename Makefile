# The two quick-start commands: `make demo` (main job) and `make test` (test suite).
# Both create .venv on first use and install edgeft with the pinned, tested versions.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXAMPLE := edgeft/examples/smart_home
DEMO := artifacts/smart-home

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[export,test]'
	touch $@

demo: setup
	$(BIN)/edgeft export --labels $(EXAMPLE)/labels.txt --train last:1 -o $(DEMO) --force
	$(BIN)/edgeft inspect $(DEMO)

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) artifacts/*/ .pytest_cache
