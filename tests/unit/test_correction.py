"""The engine-mismatch correction (docs/method.md §8): the weights against a float64 re-derivation written here
from the page, every objective with a policy-gradient term weighted by them against test_losses' float64
reference, and with the engine's log-probs equal to π_old every mode equal to no correction, bit for bit."""

import math

import pytest
import torch

from tests.unit.test_losses import CONFIG, B, T, V, make_batch, reference
from tgpo_megatron.config import load_config
from tgpo_megatron.config.sections import ConfigError
from tgpo_megatron.config.validation import check_algorithm
from tgpo_megatron.distributed.parallel import merge_sums
from tgpo_megatron.errors import UserError
from tgpo_megatron.losses import ALGORITHMS, compute_loss
from tgpo_megatron.losses.coefficients import CorrectionConfig
from tgpo_megatron.losses.correction import MAXIMA, correction_metrics, correction_weights

MODES = ("tis", "mask", "sequence_mask")
CORRECTED = sorted(name for name, a in ALGORITHMS.items() if a.policy_gradient)
TP_CASES = {"tis": "tgpo_reg", "mask": "rkl", "sequence_mask": "luffy"}
"""The corrected objectives tests/distributed/test_losses_tp.py runs at TP = 2 and 4 (one per mode)."""


def expected_weights(engine: list[float], old: list[float], mode: str, upper: float, lower: float) -> list[float]:
    """§8's table, one token at a time in Python floats."""
    ratios = [math.exp(o - e) for e, o in zip(engine, old)]
    if mode == "tis":
        return [min(r, upper) for r in ratios]
    if mode == "mask":
        return [1.0 if lower <= r <= upper else 0.0 for r in ratios]
    geometric = math.exp(sum(o - e for e, o in zip(engine, old)) / len(old))
    return [1.0 if lower <= geometric <= upper else 0.0] * len(old)


def rollout_logps(seed: int, length: int, spread: float):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(length, generator=g, dtype=torch.float64) * 5
    return old + spread * torch.randn(length, generator=g, dtype=torch.float64), old


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spread", [0.05, 0.8])  # most ratios inside the band; many outside it
def test_weights_match_the_table(mode, spread):
    config = CorrectionConfig(mode=mode, threshold=1.5, lower=None if mode == "tis" else 0.6)
    for seed in range(6):
        engine, old = rollout_logps(seed, 3 + 7 * seed, spread)
        weight, stats = correction_weights(engine.float(), old.float(), config)
        want = expected_weights(engine.float().tolist(), old.float().tolist(), mode, 1.5, 0.6)
        assert weight.dtype == torch.float32
        torch.testing.assert_close(weight.double(), torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=0)
        changed = sum(w != 1.0 for w in want) if mode != "tis" else sum(w == 1.5 for w in want)
        assert stats["tokens_changed"] == changed and stats["tokens"] == len(want)
        assert stats["weight_sum"] == pytest.approx(sum(want), rel=1e-12) and stats["weight_max"] == max(want)


def test_the_masks_default_lower_bound_is_one_over_the_threshold():
    engine = torch.zeros(4, dtype=torch.float64)
    old = torch.log(torch.tensor([0.49, 0.51, 1.9, 2.1], dtype=torch.float64))  # ratios around 1/2 and 2
    weight, stats = correction_weights(engine, old, CorrectionConfig(mode="mask", threshold=2.0))
    assert weight.tolist() == [0.0, 1.0, 1.0, 0.0] and stats["tokens_changed"] == 2


def test_a_sequence_is_masked_by_its_geometric_mean_not_its_worst_token():
    engine = torch.zeros(4, dtype=torch.float64)
    kept = torch.tensor([3.0, -3.0, 0.1, -0.1], dtype=torch.float64)  # two tokens far outside, mean ratio 1
    dropped = torch.full((4,), 0.75, dtype=torch.float64)  # every token at e^0.75 = 2.1 > 2
    config = CorrectionConfig(mode="sequence_mask", threshold=2.0)
    assert correction_weights(engine, kept, config)[0].tolist() == [1.0] * 4
    weight, stats = correction_weights(engine, dropped, config)
    assert weight.tolist() == [0.0] * 4 and stats["sequences_masked"] == 1.0


def test_metrics_are_token_and_sequence_means():
    config = CorrectionConfig(mode="sequence_mask", threshold=2.0)
    rollouts = (torch.zeros(3), torch.full((5,), 1.0), torch.zeros(2))  # kept (3 tokens), masked (5), kept (2)
    stats = [correction_weights(torch.zeros_like(old), old, config)[1] for old in rollouts]
    metrics = correction_metrics(merge_sums(stats, MAXIMA), config.mode)  # as trainer.correction merges them
    assert metrics == {
        "correction/weight_mean": 5 / 10,
        "correction/weight_max": 1.0,  # the largest, not the sum of the two kept rollouts' maxima
        "correction/token_share_changed": 5 / 10,
        "correction/sequence_share_masked": 1 / 3,
    }


def batch_weights(batch, engine, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of the batch as one rollout: the code's weights, and the table's (over the row's valid tokens)."""
    config = CorrectionConfig(mode=mode, threshold=1.3)
    ours, want = torch.zeros(B, T), torch.zeros(B, T, dtype=torch.float64)
    for b in range(B):
        valid = batch["loss_mask"][b].bool()
        if not valid.any():
            continue
        weight, _ = correction_weights(engine[b, valid], batch["old_logp"][b, valid], config)
        ours[b, valid] = weight
        want[b, valid] = torch.tensor(
            expected_weights(engine[b, valid].tolist(), batch["old_logp"][b, valid].tolist(), mode, 1.3, 1 / 1.3),
            dtype=torch.float64,
        )
    if "off_policy" in batch:  # luffy's trace row was not generated by the engine
        ours[batch["off_policy"].bool()] = 1.0
        want[batch["off_policy"].bool()] = 1.0
    return ours, want


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("algorithm", CORRECTED)
def test_corrected_objectives_match_float64_reference(algorithm, mode):
    """The weight multiplies the policy-gradient term (the reference's PPO-clip, or luffy's on-policy ratio)
    and nothing else; value and gradient against float64."""
    logits, batch = make_batch(seed=5)
    g = torch.Generator().manual_seed(7)
    engine = batch["old_logp"] + 0.4 * torch.randn(B, T, generator=g, dtype=torch.float64)
    ours_weight, want_weight = batch_weights(batch, engine, mode)
    assert 0 < float((want_weight != 1).double().mul(batch["loss_mask"]).sum())  # the correction does something
    lam = 0.28 if ALGORITHMS[algorithm].default_lambda else 0.0
    ours_in = logits.clone().requires_grad_()
    loss, _ = compute_loss(
        algorithm, ours_in, {**batch, "correction_weight": ours_weight}, step=3, config=CONFIG, vocab_size=V
    )
    loss.backward()
    ref_in = logits.clone().requires_grad_()
    expected = reference(algorithm, ref_in, batch, lam, pg_weight=want_weight)
    expected.backward()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-6, atol=1e-12)
    uncorrected = compute_loss(algorithm, logits, batch, step=3, config=CONFIG, vocab_size=V)[0]
    assert abs(float(uncorrected) - float(loss)) > 1e-6  # the weight was not ignored


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("algorithm", CORRECTED)
def test_engine_equal_to_the_trainer_gives_the_uncorrected_loss_exactly(algorithm, mode):
    logits, batch = make_batch(seed=2, dtype=torch.float32)
    batch = {k: v.float() if v.is_floating_point() else v for k, v in batch.items()}
    weight, _ = batch_weights(batch, batch["old_logp"], mode)
    weight[batch["loss_mask"] == 0] = 1.0
    assert torch.equal(weight, torch.ones(B, T))
    plain_in, corrected_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    plain, plain_metrics = compute_loss(algorithm, plain_in, batch, step=3, config=CONFIG, vocab_size=V)
    corrected, corrected_metrics = compute_loss(
        algorithm, corrected_in, {**batch, "correction_weight": weight}, step=3, config=CONFIG, vocab_size=V
    )
    plain.backward()
    corrected.backward()
    assert torch.equal(plain, corrected) and torch.equal(plain_in.grad, corrected_in.grad)
    assert all(torch.equal(plain_metrics[k], corrected_metrics[k]) for k in plain_metrics)


@pytest.mark.parametrize(
    "section, message",
    [
        ({"mode": "is"}, "rollout.correction: mode='is' must be one of none, tis, mask, sequence_mask"),
        ({"mode": "tis", "lower": 0.5}, "rollout.correction: lower: tis truncates from above only"),
        ({"mode": "mask", "threshold": 2.0, "lower": 3.0}, "rollout.correction: lower=3.0 must be in [0, threshold"),
        ({"mode": "mask", "threshold": 0}, "rollout.correction: threshold=0.0 must be > 0"),
        ({"mode": "mask", "treshold": 2}, "unknown config key 'rollout.correction.treshold'"),
    ],
)
def test_a_bad_correction_section_names_its_key(section, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"rollout.correction.{k}={v}" for k, v in section.items()])
    assert message in str(e.value)


def test_an_objective_without_a_policy_gradient_refuses_a_correction():
    config = load_config(
        None, ["algorithm.name=teacher_ce", "teacher.hf_path=/t", "rollout.correction.mode=tis", "rollout.n=2"]
    )
    with pytest.raises(UserError, match="algorithm 'teacher_ce' has no policy-gradient term to correct"):
        check_algorithm(config)
