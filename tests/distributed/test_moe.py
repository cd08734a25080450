"""A mixture-of-experts teacher beside a dense student, and a mixture-of-experts student step, at EP=2."""

import pytest
import torch

from tests.distributed.conftest import torchrun

LOGP_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def result(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("moe") / "result.pt"
    torchrun(
        "moe_worker.py", "--moe", tiny_models["qwen3_moe_top2"], "--dense", tiny_models["qwen2_tied"], "--out", out
    )
    return torch.load(out, weights_only=False)


def test_teacher_at_ep2_gives_transformers_argmax_and_logprobs(result):
    teacher = result["teacher"]
    assert teacher["tokens"] > 100
    assert teacher["ids_differing"] == 0
    assert teacher["logp_diff"] <= LOGP_TOLERANCE


def test_student_step_at_ep2_equals_ep1(result):
    ep1, ep2 = result["student"][1], result["student"][2]
    for key in ("loss/total", "loss/router_aux", "optim/grad_norm"):
        a, b = ep1["metrics"][key], ep2["metrics"][key]
        assert abs(a - b) <= 1e-6 * max(abs(a), 1.0), (key, a, b)
    assert ep1["metrics"]["loss/router_aux"] > 0 and ep1["metrics"]["optim/skipped"] == 0.0
    assert ep1["experts_moved"] > 1e-4 and ep2["experts_moved"] > 1e-4  # the step trained the experts
    assert sorted(ep1["weights"]) == sorted(ep2["weights"])
    for name, weight in ep1["weights"].items():
        scale = max(weight.abs().max().item(), 1.0)
        assert (weight - ep2["weights"][name]).abs().max().item() <= 1e-6 * scale, name
