# Set-up and everyday commands. `make demo` and `make test` work on a fresh clone:
# they create .venv, install the pinned CPU build of PyTorch when no torch >= 2.10 is present,
# then install radixsnn in editable mode with its test extras (and the onnx extra, which the tests cover).
# `make vision` / `make test-vision`: a second environment, .venv-vision, with torchvision and the torch
# release it is built for (pyproject.toml's vision extra), never mixed into .venv's pinned CPU torch.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.radixsnn-installed
DOCS_STAMP := $(VENV)/.radixsnn-docs-installed
VISION_VENV ?= .venv-vision
VISION_STAMP := $(VISION_VENV)/.radixsnn-installed

.PHONY: install demo test bench docs clean vision test-vision

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import sys, torch; sys.exit(tuple(int(v) for v in torch.__version__.split('+')[0].split('.')[:2]) < (2, 10))" 2>/dev/null \
		|| $(BIN)/pip install -q "torch==$(TORCH_VERSION)"
	$(BIN)/pip install -q -e ".[test,plot,demo,onnx]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/radixsnn demo

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

$(VISION_STAMP): pyproject.toml
	test -x $(VISION_VENV)/bin/python || $(PYTHON) -m venv $(VISION_VENV)
	$(VISION_VENV)/bin/pip install -q -e ".[test,vision]"
	touch $(VISION_STAMP)

vision: $(VISION_STAMP)

test-vision: $(VISION_STAMP)
	$(VISION_VENV)/bin/python -m pytest -q tests/test_torchvision.py $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/engines.py

# The documentation site, built strictly (any warning, such as a broken link or anchor, fails) into site/.
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install -q -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) $(VISION_VENV) build dist src/*.egg-info .pytest_cache .hypothesis
