# The two quick-start commands: `make demo` (main job) and `make test` (test suite).
# Both create .venv on first use and install edgeft with the pinned, tested versions (plain
# onnxruntime). `make test` also builds .venv-ort, where ONNX Runtime's training build replaces
# onnxruntime exactly as the README's "ONNX Runtime's training API" section says, and runs the
# tests of that optional path there, and .venv-313 (Python 3.13, device side only) for the test that
# trains, deploys and predicts a package on that Python.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
VENV_ORT ?= .venv-ort
ORT_BIN := $(VENV_ORT)/bin
# The device side on Python 3.13 (edgeft without the export extra: no torch); pyenv's or the PATH's.
PYTHON_DEVICE ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13) $(shell command -v python3.13))
VENV_DEVICE ?= .venv-313
EXAMPLE := edgeft/examples/smart_home
DEMO := artifacts/smart-home
RUN := artifacts/runs/smart-home
BUNDLE := artifacts/bundles/smart-home

.PHONY: setup setup-ort setup-device demo test clean

setup: $(VENV)/.installed

setup-ort: $(VENV_ORT)/.installed

setup-device: $(VENV_DEVICE)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[export,test,fleet]'
	touch $@

# The ort-training extra: both distributions write the onnxruntime package folder, so the training
# build must replace plain onnxruntime, not sit beside it (the README's three commands).
$(VENV_ORT)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV_ORT)
	$(ORT_BIN)/python -m pip install -q --upgrade pip
	$(ORT_BIN)/python -m pip install -q -c constraints.txt -e '.[export,test,ort-training]'
	$(ORT_BIN)/python -m pip uninstall -q -y onnxruntime onnxruntime-training-cpu
	$(ORT_BIN)/python -m pip install -q -c constraints.txt --no-deps onnxruntime-training-cpu==1.19.2
	$(ORT_BIN)/python -c "from edgeft.ortcompat import training_api; training_api()"
	touch $@

$(VENV_DEVICE)/.installed: pyproject.toml constraints.txt
	@test -n "$(PYTHON_DEVICE)" || { echo "Python 3.13 not found: set PYTHON_DEVICE=/path/to/python3.13"; exit 1; }
	$(PYTHON_DEVICE) -m venv $(VENV_DEVICE)
	$(VENV_DEVICE)/bin/python -m pip install -q --upgrade pip
	$(VENV_DEVICE)/bin/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

demo: setup
	$(BIN)/edgeft export --labels $(EXAMPLE)/labels.txt --train last:1 --device auto \
		--guard-data $(EXAMPLE)/train.csv -o $(DEMO) --force
	$(BIN)/edgeft train $(DEMO) $(EXAMPLE)/train.csv --val $(EXAMPLE)/val.csv --epochs 8 --lr 1e-3 \
		--run-dir $(RUN) --force
	$(BIN)/edgeft evaluate $(RUN) $(EXAMPLE)/test.csv
	$(BIN)/edgeft deploy $(RUN) -o $(BUNDLE) --force
	$(BIN)/edgeft evaluate $(BUNDLE) $(EXAMPLE)/test.csv
	$(BIN)/edgeft predict $(BUNDLE) "it's way too dark in the hallway" "remind me to buy oat milk"

test: setup setup-ort setup-device
	EDGEFT_DEVICE_PYTHON=$(abspath $(VENV_DEVICE))/bin/python $(BIN)/python -m pytest -q
	$(ORT_BIN)/python -m pytest -q -m ort_training

clean:
	rm -rf $(VENV) $(VENV_ORT) $(VENV_DEVICE) artifacts/*/ .pytest_cache
