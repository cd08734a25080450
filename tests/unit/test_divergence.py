"""The divergence report's statistics on logits whose answers are worked out by hand."""

import math

import pytest
import torch

from tgpo_megatron.divergence import DivergenceAccumulator


def test_statistics_by_hand():
    student = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1]]))
    teacher = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]]))
    acc = DivergenceAccumulator()
    acc.add(student, teacher, torch.tensor([0, 0]))
    r = acc.report()
    assert r["tokens"] == 2
    assert r["teacher_ppl"] == pytest.approx(1 / math.sqrt(0.1 * 0.7))  # exp(-(log .1 + log .7) / 2)
    assert r["mismatch_ratio"] == 0.5  # teacher argmax 3 ≠ 0, then 0 = 0
    assert r["log_ratio_mean"] == pytest.approx(math.log(4) / 2)  # log(.4/.1) and 0
    assert r["log_ratio_std"] == pytest.approx(math.log(4) / 2)
    assert r["frac_ratio_gt_1"] == 0.5
    assert r["top1_overlap"] == 0.5  # {0} vs {3}, then {0} vs {0}
    assert r["top5_overlap"] == r["top10_overlap"] == 1.0  # k > V: every token in both sets


def test_top5_overlap_counts_shared_members():
    v = 12
    student = -torch.arange(v, dtype=torch.float32).unsqueeze(0)  # top-5 = {0..4}
    teacher = -torch.tensor([[float((i - 3) % v) for i in range(v)]])  # top-5 = {3..7}
    acc = DivergenceAccumulator()
    acc.add(student, teacher, torch.tensor([3]))
    assert acc.report()["top5_overlap"] == pytest.approx(2 / 5)  # {3, 4}
    assert acc.report()["top1_overlap"] == 0.0 and acc.report()["mismatch_ratio"] == 0.0
