"""Real 2- and 4-process gloo runs: the vocabulary-parallel objectives and teacher statistics equal TP=1."""

import json

import pytest

from tests.distributed.conftest import torchrun
from tests.unit.test_correction import TP_CASES
from tgpo_megatron.losses import ALGORITHMS, LOSS_AGG_MODES


@pytest.fixture(scope="module", params=[2, 4], ids=["tp2", "tp4"])
def result(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"loss_tp{request.param}") / "result.json"
    torchrun("loss_tp_worker.py", "--out", out, nproc=request.param)
    return json.loads(out.read_text())


@pytest.mark.parametrize(
    "algorithm", [*sorted(ALGORITHMS), *LOSS_AGG_MODES, *(f"{m}:{a}" for m, a in TP_CASES.items())]
)
def test_loss_gradient_and_metrics_equal_tp1(result, algorithm):
    """Every objective, tgpo_reg under every loss aggregation mode, and each engine-mismatch correction (on one
    objective each; every objective's corrected float64 reference is tests/unit/test_correction.py)."""
    # float64 logits: only summation order differs between the sharded and unsharded computations
    assert result["loss_diff"][algorithm] <= 1e-12
    assert result["grad_diff"][algorithm] <= 1e-12
    assert result["metric_diff"][algorithm] <= 1e-12


def test_teacher_statistics_equal_tp1(result):
    teacher = result["teacher"]
    assert teacher["argmax_equal"] and teacher["argmax_is_true_argmax"]
    assert teacher["topk_ids_equal"] and teacher["topk_is_true_topk"]
    assert teacher["topk_probs_diff"] <= 1e-6
    assert teacher["sample_equal"] and teacher["sample_in_vocab"]
    assert teacher["logp_diff"] <= 1e-5
