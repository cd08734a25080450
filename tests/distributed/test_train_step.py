"""One optimizer step through Megatron-Core's DDP, optimizers and pipeline schedule on CPU gives the same
result at DP=2 (distributed optimizer), TP=2 (Megatron optimizer) and PP=2 (distributed optimizer)."""

import pytest
import torch
from safetensors.torch import load_file

from tests.distributed.conftest import torchrun

LAYOUTS = {
    "dp2_distributed": (1, 1, "distributed"),
    "tp2_megatron": (2, 1, "megatron"),
    "pp2_distributed": (1, 2, "distributed"),
}


@pytest.fixture(scope="module")
def steps(tiny_models, tmp_path_factory):
    hf = tiny_models["llama31_rope_scaling"]
    out = tmp_path_factory.mktemp("train_step")
    layouts = [f"{name}={tp},{pp},{optimizer}" for name, (tp, pp, optimizer) in LAYOUTS.items()]
    torchrun("train_step_worker.py", "--hf", hf, "--out", out / "steps.pt", *layouts)  # one launch, in turn
    results = torch.load(out / "steps.pt", weights_only=True)
    results["initial"] = load_file(f"{hf}/model.safetensors")
    return results


def test_step_succeeds_and_moves_weights(steps):
    for name in LAYOUTS:
        assert steps[name]["ok"]
        moved = max((steps[name]["weights"][k] - steps["initial"][k]).abs().max().item() for k in steps["initial"])
        assert moved > 1e-2, name


@pytest.mark.parametrize("layout", ["tp2_megatron", "pp2_distributed"])
def test_layouts_agree(steps, layout):
    reference = steps["dp2_distributed"]
    assert steps[layout]["loss"] == pytest.approx(reference["loss"], rel=1e-6)
    assert steps[layout]["grad_norm"] == pytest.approx(reference["grad_norm"], rel=1e-5)
    for name, weight in reference["weights"].items():
        assert (steps[layout]["weights"][name] - weight).abs().max().item() <= 1e-5, name
