# The two quick-start commands: `make demo` (main job) and `make test` (test suite).
# Both create .venv on first use and install edgeft with the pinned, tested versions.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXAMPLE := edgeft/examples/smart_home
DEMO := artifacts/smart-home
RUN := artifacts/runs/smart-home
BUNDLE := artifacts/bundles/smart-home

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[export,test]'
	touch $@

demo: setup
	$(BIN)/edgeft export --labels $(EXAMPLE)/labels.txt --train last:1 -o $(DEMO) --force
	$(BIN)/edgeft train $(DEMO) $(EXAMPLE)/train.csv --val $(EXAMPLE)/val.csv --epochs 8 --lr 1e-3 \
		--run-dir $(RUN) --force
	$(BIN)/edgeft evaluate $(RUN) $(EXAMPLE)/test.csv
	$(BIN)/edgeft deploy $(RUN) --device auto -o $(BUNDLE) --force
	$(BIN)/edgeft evaluate $(BUNDLE) $(EXAMPLE)/test.csv
	$(BIN)/edgeft predict $(BUNDLE) "it's way too dark in the hallway" "remind me to buy oat milk"

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) artifacts/*/ .pytest_cache
