"""Packed sequences change what is computed, not the result: at TP=2, PP=2 and DP=2 (2 processes, fp32), packed
logits equal each rollout's own unpadded forward, the teacher's ids equal the padded teacher's, and one student
step of tgpo_reg and tgpo_fwd_topk gives the padded path's loss, gradient norm and weights (and, packed, the
same with full activation recompute); at TP=2, so does a step with the engine-mismatch correction."""

import pytest
import torch
from safetensors.torch import load_file

from tests.distributed.conftest import torchrun

LAYOUTS = ("tp2", "pp2", "dp2")
ALGORITHMS = ("tgpo_reg", "tgpo_fwd_topk")


@pytest.fixture(scope="module")
def results(tiny_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("packing") / "result.pt"
    # llama 3.1 RoPE scaling: the packed path must keep the model's own frequencies when positions restart
    hf = tiny_models["llama31_rope_scaling"]
    torchrun("packing_worker.py", "--hf", hf, "--out", out)
    return {**torch.load(out, weights_only=True), "initial": load_file(f"{hf}/model.safetensors")}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_packed_logits_equal_each_sequence_alone(results, layout):
    assert results[layout][("tgpo_reg", True)]["logits_diff"] <= 1e-5


@pytest.mark.parametrize("layout", LAYOUTS)
def test_teacher_ids_do_not_depend_on_packing(results, layout):
    assert results[layout]["teacher_ids_equal"]
    assert results[layout]["teacher_logp_diff"] <= 1e-5


def same_step(ours, reference, results):
    """One student step's loss, gradient norm and weights agree (and the step moved the weights)."""
    # the loss is a sum of O(1) fp32 terms that partly cancel: relative to the larger of it and 1
    assert abs(ours["loss"] - reference["loss"]) <= 1e-6 * max(abs(reference["loss"]), 1.0)
    assert ours["grad_norm"] == pytest.approx(reference["grad_norm"], rel=1e-6)
    assert ours["weights"].keys() == reference["weights"].keys()
    moved = max((w - results["initial"][name]).abs().max().item() for name, w in reference["weights"].items())
    assert moved > 1e-4
    for name, weight in reference["weights"].items():
        assert (ours["weights"][name] - weight).abs().max() <= 1e-6 * weight.abs().max(), name


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_packed_student_step_equals_the_padded_one(results, layout, algorithm):
    same_step(results[layout][(algorithm, True)], results[layout][(algorithm, False)], results)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_full_activation_recompute_gives_the_same_step(results, layout):
    same_step(results[layout]["recompute"], results[layout][("tgpo_reg", True)], results)


def test_a_corrected_step_packed_equals_the_padded_one(results):
    """The correction's per-token weights are laid out with the tokens in both layouts (tgpo_reg, tis, TP=2),
    and they changed the step."""
    same_step(results["tp2"][("tis", True)], results["tp2"][("tis", False)], results)
    assert abs(results["tp2"][("tis", True)]["loss"] - results["tp2"][("tgpo_reg", True)]["loss"]) > 1e-6
