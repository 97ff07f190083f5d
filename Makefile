# The two set-up commands of the README: `make demo` and `make test`. Both create the virtualenv first.
# The virtualenv is made and filled by uv (https://docs.astral.sh/uv/): from PyPI into the virtualenv
# when it is not installed. PyTorch comes as the build for this machine (--torch-backend=auto: the CPU
# wheels where there is no NVIDIA driver, a fraction of the CUDA ones' several GB), from PyPI when
# PyTorch's own index cannot be reached. `make demo TORCH_BACKEND=cu128` picks a build.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
UV ?= $(or $(shell command -v uv 2>/dev/null),$(BIN)/uv)
TORCH_BACKEND ?= auto

.PHONY: demo test test-fast lint install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(UV) || { echo "uv is not installed: getting it from PyPI into $(VENV) (a few seconds)"; \
		test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); $(BIN)/python -m pip install -q uv; }
	@test -x $(BIN)/python || $(UV) venv -q --python $(PYTHON) $(VENV)
	@echo "installing kdq and its dependencies into $(VENV) with uv: PyTorch is the big one, a few minutes the first time"
	$(UV) pip install --python $(BIN)/python --torch-backend=$(TORCH_BACKEND) -e '.[dev]' || { \
		echo "PyTorch's own index (download.pytorch.org) did not answer: PyTorch from PyPI instead"; \
		$(UV) pip install --python $(BIN)/python -e '.[dev]'; }
	touch $@

demo: install
	$(BIN)/kdq demo

test: install
	$(BIN)/python -m pytest -m "slow or not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-fast: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .kdq
