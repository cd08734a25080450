"""`tgpo plan` against what a real student allocates (tiny model, 2 processes, CPU, fp32): parameters, DDP's
gradient buffer and the distributed optimizer's state exactly, and the activations of one packed micro-batch
(bytes autograd keeps for backward) at three token budgets, with and without full recompute."""

import json

import pytest

from tests.distributed.conftest import torchrun
from tests.distributed.workers.memory_worker import BUDGETS
from tgpo_megatron.config.arch import load_arch
from tgpo_megatron.config.memory import grad_buffer_elements, stage_parameters, student_activations

LAYOUTS = {"dp2": (1, 2), "tp2": (2, 1)}  # name: (tp, dp)


@pytest.fixture(scope="module")
def measured(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("memory") / "result.json"
    hf = tiny_models["qwen2_tied"]
    torchrun("memory_worker.py", "--hf", hf, "--out", out)
    with open(out) as f:
        return load_arch(hf), json.load(f)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_state_counts_equal_what_megatron_allocates(measured, layout):
    arch, result = measured
    tp, dp = LAYOUTS[layout]
    tensors = stage_parameters(arch, tp, 1, 0)
    assert sum(tensors) == result[layout]["parameters"]
    assert grad_buffer_elements(tensors, dp) == result[layout]["grad_buffer"]
    # fp32 weights are their own main copy: Adam's m and v over this rank's shard of the buffer, created when
    # the student is built (before vLLM measures free memory), as a fresh optimizer's, without moving a weight
    assert 2 * grad_buffer_elements(tensors, dp) // dp == result[layout]["optimizer_state"]
    assert result[layout]["optimizer_state_zero"] and result[layout]["weights_unchanged"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("recompute", ["none", "full"])
def test_activation_estimate_is_within_ten_percent(measured, layout, recompute):
    arch, result = measured
    tp, _ = LAYOUTS[layout]
    for tokens in BUDGETS:
        estimate = student_activations(arch, tokens, tp, 1, 4, recompute)
        saved = result[layout][f"saved_bytes_{recompute}"][str(tokens)]
        assert abs(estimate.layers + estimate.logits - saved) <= 0.10 * saved, (tokens, estimate, saved)
