"""Every objective's value and gradient against an independent float64 re-derivation written here from
docs/method.md (plain log_softmax over the unpadded vocabulary; nothing from the code under test)."""

import pytest
import torch

from tgpo_megatron.losses import (
    ALGORITHMS,
    LOSS_AGG_MODES,
    LossConfig,
    compute_loss,
    grpo_advantages,
    linear_decay,
    loss_aggregation,
    mini_batch_aggregation,
)

B, T, V, V_PADDED, K = 4, 9, 37, 40, 5
CONFIG = LossConfig(
    lambda_init=0.3, lambda_decay=0.01, entropy_coeff=0.05, kdrl_beta=0.2, topk=K, chunk_tokens=7
)  # chunks that do not divide the 36 tokens


def make_batch(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V_PADDED, generator=g, dtype=dtype) * 3
    logits[..., V:] = torch.randn(B, T, V_PADDED - V, generator=g, dtype=dtype) * 50  # padding: must not count
    mask = torch.ones(B, T)
    mask[0, 6:] = 0
    mask[2, 3:] = 0
    mask[3] = 0  # an all-masked row
    tokens = torch.randint(0, V, (B, T), generator=g)
    tokens[mask == 0] = -100  # what a padded position may hold
    teacher_ids = torch.randint(0, V, (B, T), generator=g)
    teacher_ids[:, ::2] = tokens[:, ::2].clamp(min=0)  # teacher agrees with the sampled token here
    ref_logp = torch.log_softmax(logits[..., :V].double(), -1)
    old_logp = ref_logp.gather(-1, tokens.clamp(min=0)[..., None])[..., 0] + 0.3 * torch.randn(
        B, T, generator=g, dtype=torch.float64
    )
    topk_probs = torch.softmax(torch.randn(B, T, K, generator=g, dtype=torch.float64), -1)
    batch = {
        "labels": tokens,
        "loss_mask": mask,
        "old_logp": old_logp,
        "advantages": torch.tensor([1.2, -0.7, 0.0, 0.5], dtype=torch.float64),
        "teacher_ids": teacher_ids,
        "teacher_sampled_ids": torch.randint(0, V, (B, T), generator=g),
        "teacher_logp": -torch.rand(B, T, generator=g, dtype=torch.float64) * 4,
        "old_logp_teacher_ids": -torch.rand(B, T, generator=g, dtype=torch.float64) * 3,
        "teacher_topk_ids": torch.stack([torch.randperm(V, generator=g)[:K] for _ in range(B * T)]).reshape(B, T, K),
        "teacher_topk_probs": topk_probs,
        "off_policy": torch.tensor([0.0, 1.0, 0.0, 0.0])[:, None].expand(B, T).clone(),  # row 1: a teacher trace
    }
    return logits, batch


def reference(algorithm, logits, batch, lam, normalizer=None, pg_weight=None):
    """docs/method.md §1, §2, §4 and §6, term by term, in float64; ``pg_weight`` multiplies the policy-gradient
    term per token (§8's correction)."""
    x = logits[..., :V].double()
    logp_all = torch.log_softmax(x, -1)
    m = batch["loss_mask"].double()
    n = m.sum() if normalizer is None else normalizer

    def at(ids):
        return logp_all.gather(-1, ids.clamp(min=0)[..., None])[..., 0]

    def mean(v):
        return (v * m).sum() / n

    logp = at(batch["labels"])
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    old = batch["old_logp"].double()
    adv = batch["advantages"].double()[:, None].expand(B, T)
    w = torch.ones(B, T, dtype=torch.float64) if pg_weight is None else pg_weight.double()

    def ppo(a):
        ratio = torch.exp(logp - old)
        return mean(w * torch.max(-a * ratio, -a * ratio.clamp(1 - CONFIG.clip_eps, 1 + CONFIG.clip_eps)))

    bonus = -CONFIG.entropy_coeff * mean(entropy)
    if algorithm == "grpo":
        return ppo(adv) + bonus
    if algorithm == "tgpo_reg":
        return ppo(adv) + bonus + lam * mean(-at(batch["teacher_ids"]))
    if algorithm == "tgpo_mc":
        return ppo(adv) + bonus + lam * mean(-at(batch["teacher_sampled_ids"]))
    if algorithm == "tgpo_adv":
        return ppo(adv + lam * batch["old_logp_teacher_ids"].exp()) + bonus
    if algorithm == "tgpo_fwd_topk":
        p = batch["teacher_topk_probs"]
        student = logp_all.gather(-1, batch["teacher_topk_ids"])
        return ppo(adv) + bonus + lam * mean((p * (p.log() - student)).sum(-1))
    if algorithm == "rkl":
        return ppo(batch["teacher_logp"] - old) + bonus
    if algorithm == "kdrl":
        return ppo(adv) + bonus + CONFIG.kdrl_beta * mean(0.5 * (batch["teacher_logp"] - logp) ** 2)
    if algorithm == "teacher_ce":
        return bonus + lam * mean(-at(batch["teacher_ids"]))
    if algorithm == "luffy":  # unclipped ratio on the rollouts, p / (p + 0.1) on the trace's tokens
        off, p = batch["off_policy"].double(), logp.exp()
        return mean(-adv * w * (off * p / (p + 0.1) + (1 - off) * torch.exp(logp - old))) + bonus
    raise AssertionError(algorithm)


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_value_and_gradient_match_float64_reference(algorithm):
    logits, batch = make_batch()
    step = 3
    lam = {"tgpo_reg": 0.28, "tgpo_mc": 0.28, "tgpo_adv": 0.28, "tgpo_fwd_topk": 0.28, "teacher_ce": 0.28}.get(
        algorithm, 0.0
    )
    ours_in = logits.clone().requires_grad_()
    loss, metrics = compute_loss(algorithm, ours_in, batch, step=step, config=CONFIG, vocab_size=V)
    loss.backward()
    ref_in = logits.clone().requires_grad_()
    expected = reference(algorithm, ref_in, batch, lam)
    expected.backward()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-6, atol=1e-12)
    assert torch.all(ours_in.grad[..., V:] == 0)  # padding columns get no gradient
    assert torch.all(ours_in.grad[3] == 0)  # nor does a fully masked row
    assert all("/" in key for key in metrics)  # namespaced; λ and the gap probes are the trainer's


def test_float32_logits_are_close_to_the_reference():
    logits, batch = make_batch(seed=1, dtype=torch.float32)
    ours_in = logits.clone().requires_grad_()
    loss, _ = compute_loss("tgpo_reg", ours_in, batch, step=1, config=CONFIG, vocab_size=V)
    loss.backward()
    ref_in = logits.double().requires_grad_()
    expected = reference("tgpo_reg", ref_in, batch, 0.3)
    expected.backward()
    torch.testing.assert_close(loss.double(), expected, rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(ours_in.grad.double(), ref_in.grad, rtol=1e-4, atol=1e-7)


def test_metrics():
    logits, batch = make_batch()
    _, metrics = compute_loss("tgpo_reg", logits, batch, step=1, config=CONFIG, vocab_size=V)
    m = batch["loss_mask"].bool()
    logp_all = torch.log_softmax(logits[..., :V], -1)
    teacher = logp_all.gather(-1, batch["teacher_ids"][..., None])[..., 0]
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    ratio = torch.exp(logp_all.gather(-1, batch["labels"].clamp(min=0)[..., None])[..., 0] - batch["old_logp"])
    adv = batch["advantages"][:, None].expand(B, T)
    clipped = adv * ratio > adv * ratio.clamp(0.8, 1.2)
    assert metrics["loss/teacher_ce"].item() == pytest.approx(-teacher[m].mean().item(), rel=1e-9)
    assert metrics["loss/entropy"].item() == pytest.approx(entropy[m].mean().item(), rel=1e-9)
    assert metrics["loss/pg_clipfrac"].item() == pytest.approx(clipped[m].double().mean().item())
    assert metrics["loss/ppo_kl"].item() == pytest.approx((-ratio.log())[m].mean().item(), rel=1e-9)


@pytest.mark.parametrize("algorithm", ["tgpo_reg", "rkl", "tgpo_fwd_topk", "luffy"])
def test_micro_batches_with_global_normalizer_equal_one_batch(algorithm):
    logits, batch = make_batch(seed=2)
    whole = logits.clone().requires_grad_()
    loss, _ = compute_loss(algorithm, whole, batch, step=2, config=CONFIG, vocab_size=V)
    loss.backward()
    parts = logits.clone().requires_grad_()
    total_tokens = batch["loss_mask"].sum()  # what the trainer all-reduces over DP once per step
    accumulated = 0.0
    for i in range(B):  # 4 micro-batches of one sequence each
        micro = {k: v[i : i + 1] for k, v in batch.items()}
        part_loss, _ = compute_loss(
            algorithm, parts[i : i + 1], micro, step=2, config=CONFIG, vocab_size=V, normalizer=total_tokens
        )
        part_loss.backward()
        accumulated = accumulated + part_loss.detach()
    torch.testing.assert_close(accumulated, loss.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(parts.grad, whole.grad, rtol=1e-12, atol=1e-14)


def test_bad_ids_and_nan_logits_give_a_nan_loss():
    """Neither is raised on one rank (the others would hang in a collective, and checking would read the ids
    back from the GPU in every micro-batch): the loss is NaN, which the gradient norm carries to every rank, and
    the trainer skips the update (it names bad ids itself, once per step, on every rank)."""
    logits, batch = make_batch()
    bad = dict(batch, teacher_ids=batch["teacher_ids"].clone())
    bad["teacher_ids"][0, 0] = V + 1  # inside the TP padding region
    assert bool(batch["loss_mask"][0, 0])
    loss, _ = compute_loss("tgpo_reg", logits, bad, step=1, config=CONFIG, vocab_size=V)
    assert torch.isnan(loss)
    bad["teacher_ids"][0, 0] = -1
    loss, _ = compute_loss("tgpo_reg", logits, bad, step=1, config=CONFIG, vocab_size=V)
    assert torch.isnan(loss)
    nan_logits = logits.clone()
    nan_logits[1, 2, 5] = float("nan")
    loss, _ = compute_loss("grpo", nan_logits, batch, step=1, config=CONFIG, vocab_size=V)
    assert torch.isnan(loss)
    with pytest.raises(KeyError, match="teacher_logp"):
        compute_loss(
            "rkl", logits, {k: v for k, v in batch.items() if k != "teacher_logp"}, step=1, config=CONFIG, vocab_size=V
        )
    with pytest.raises(ValueError, match="unknown algorithm 'ppo'"):
        compute_loss("ppo", logits, batch, step=1, config=CONFIG, vocab_size=V)


def test_grpo_advantages():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    adv = grpo_advantages(rewards, group_size=4)
    group = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    expected = (group - group.mean()) / (group.std() + 1e-6)
    torch.testing.assert_close(adv[:4].double(), expected, rtol=1e-6, atol=0)
    assert torch.all(adv[4:12] == 0)  # all-correct and all-wrong groups
    lone = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(adv[12:].double(), (lone - 0.25) / (lone.std() + 1e-6), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="groups of 3"):
        grpo_advantages(rewards, group_size=3)


def test_lambda_schedule_is_the_papers():
    config = LossConfig()
    assert config.teacher_lambda("tgpo_reg", 1) == 0.002
    assert config.teacher_lambda("tgpo_reg", 101) == pytest.approx(0.001)
    assert config.teacher_lambda("tgpo_reg", 201) == pytest.approx(0.0, abs=1e-15)
    assert config.teacher_lambda("tgpo_reg", 300) == 0.0
    assert config.teacher_lambda("tgpo_adv", 1) == 0.02
    assert config.teacher_lambda("tgpo_adv", 101) == pytest.approx(0.01)
    assert linear_decay(5, 1.0, 0.1, 0.75) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        linear_decay(0, 1.0, 0.1)


def test_inplace_backward_gives_the_same_gradient():
    import dataclasses

    logits, batch = make_batch(seed=4)
    grads = []
    for inplace in (False, True):
        leaf = logits.clone().requires_grad_()
        activations = leaf * 1.0  # like a model's output: a fresh, non-view tensor only the loss reads
        loss, _ = compute_loss(
            "tgpo_reg",
            activations,
            batch,
            step=1,
            vocab_size=V,
            config=dataclasses.replace(CONFIG, inplace_backward=inplace),
        )
        loss.backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0)


def per_token_reference(logits, batch, lam):
    """tgpo_reg's per-token loss ℓ_t without the entropy bonus (PPO-clip + λ NLL of the teacher's token) and the
    per-token entropy, float64."""
    logp_all = torch.log_softmax(logits[..., :V].double(), -1)
    at = lambda ids: logp_all.gather(-1, ids.clamp(min=0)[..., None])[..., 0]  # noqa: E731
    ratio = torch.exp(at(batch["labels"]) - batch["old_logp"].double())
    adv = batch["advantages"].double()[:, None].expand(B, T)
    ppo = torch.max(-adv * ratio, -adv * ratio.clamp(1 - CONFIG.clip_eps, 1 + CONFIG.clip_eps))
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return ppo + lam * -at(batch["teacher_ids"]), entropy


def aggregate_reference(mode, loss, mask, horizon):
    """verl's definitions of the modes over the whole batch (sequences: the rows with a valid token)."""
    rows = mask.sum(-1) > 0
    seq_sums, lengths = (loss * mask).sum(-1)[rows], mask.sum(-1)[rows]
    if mode == "token-mean":
        return seq_sums.sum() / lengths.sum()
    if mode == "seq-mean-token-mean":
        return (seq_sums / lengths).mean()
    if mode == "seq-mean-token-sum":
        return seq_sums.mean()
    return (seq_sums / horizon).mean()


def weighted_batch(batch, rows, aggregation):
    """The batch with the aggregation's per-rollout weights on ``rows`` (as trainer.aggregate lays them out)."""
    mask = batch["loss_mask"]
    loss_mask, entropy = torch.zeros_like(mask), torch.zeros_like(mask)
    entropy_weights = aggregation.entropy_weights or aggregation.weights
    for i, w, e in zip(rows, aggregation.weights, entropy_weights):
        loss_mask[i], entropy[i] = mask[i] * w, mask[i] * e
    return dict(batch, loss_mask=loss_mask, entropy_weight=entropy)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_loss_aggregation_modes_match_float64_reference_and_accumulate(mode):
    """The batch scale: the policy and teacher terms aggregated by the mode, the entropy a token mean (times
    k·W/n for seq-mean-token-sum-norm: one micro-batch on one rank here)."""
    logits, batch = make_batch(seed=5)
    lam, horizon = 0.29, 12
    mask = batch["loss_mask"]
    rows = [i for i in range(B) if mask[i].sum() > 0]
    aggregation = mini_batch_aggregation(mode, "batch", [int(mask[i].sum()) for i in rows], horizon, [rows], 1)
    normalizer = mask.sum() if aggregation.normalizer is None else aggregation.normalizer  # None: the token count
    weighted = weighted_batch(batch, rows, aggregation)
    whole = logits.clone().requires_grad_()
    loss, _ = compute_loss("tgpo_reg", whole, weighted, step=2, config=CONFIG, vocab_size=V, normalizer=normalizer)
    loss.backward()
    ref_in = logits.clone().requires_grad_()
    per_token, entropy = per_token_reference(ref_in, batch, lam)
    m = mask.double()
    ratio = 1 / len(rows) if mode == "seq-mean-token-sum-norm" else 1.0
    expected = (
        aggregate_reference(mode, per_token, m, horizon) - CONFIG.entropy_coeff * ratio * (entropy * m).sum() / m.sum()
    )
    expected.backward()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(whole.grad, ref_in.grad, rtol=1e-6, atol=1e-12)
    parts = logits.clone().requires_grad_()
    for i in range(B):  # one sequence per micro-batch, the mini-batch's weights and normalizer
        micro = {k: v[i : i + 1] for k, v in weighted.items()}
        part, _ = compute_loss(
            "tgpo_reg", parts[i : i + 1], micro, step=2, config=CONFIG, vocab_size=V, normalizer=normalizer
        )
        part.backward()
    torch.testing.assert_close(parts.grad, whole.grad, rtol=1e-12, atol=1e-14)


# Two data-parallel ranks of two micro-batches each (rank 1's second is empty, as a plan can make it): rows
# of make_batch(seed=7), whose row 3 is masked out and so never planned.
RANK_PLANS = [[[0], [1]], [[2], []]]


def authors_loss(algorithm, logits, batch, lam, horizon):
    """The authors' verl loss, float64: on each rank, each micro-batch's loss (token means; LUFFY: the token sum
    over H) minus α times its token-mean entropy, summed over the rank's micro-batches; averaged over ranks."""
    logp_all = torch.log_softmax(logits[..., :V].double(), -1)
    logp = logp_all.gather(-1, batch["labels"].clamp(min=0)[..., None])[..., 0]
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    adv = batch["advantages"].double()[:, None].expand(B, T)
    m = batch["loss_mask"].double()
    if algorithm == "luffy":
        off, p = batch["off_policy"].double(), logp.exp()
        per_token = -adv * (off * p / (p + 0.1) + (1 - off) * torch.exp(logp - batch["old_logp"].double()))
    else:
        ratio = torch.exp(logp - batch["old_logp"].double())
        ppo = torch.max(-adv * ratio, -adv * ratio.clamp(1 - CONFIG.clip_eps, 1 + CONFIG.clip_eps))
        teacher = -logp_all.gather(-1, batch["teacher_ids"].clamp(min=0)[..., None])[..., 0]
        per_token = ppo + lam * teacher
    total = 0.0
    for plan in RANK_PLANS:
        for rows in filter(None, plan):
            mm = m[rows]
            tokens = mm.sum()
            policy = (per_token[rows] * mm).sum() / (horizon if algorithm == "luffy" else tokens)
            total = total + policy - CONFIG.entropy_coeff * (entropy[rows] * mm).sum() / tokens
    return total / len(RANK_PLANS)


@pytest.mark.parametrize("algorithm", ["tgpo_reg", "luffy"])
def test_micro_batch_sum_scale_is_the_authors_loss(algorithm):
    """``loss_scale: micro-batch-sum``: what every rank computes, summed over ranks as data parallelism sums
    the gradient, equals the authors' per-micro-batch sum (float64, value and gradient)."""
    logits, batch = make_batch(seed=7)
    lam, horizon = 0.28, 12
    mask = batch["loss_mask"]
    lengths = [int(mask[i].sum()) for i in range(3)]
    mode = LossConfig().aggregation_mode(algorithm)
    ours_in = logits.clone().requires_grad_()
    total = 0.0
    for plan in RANK_PLANS:
        aggregation = mini_batch_aggregation(mode, "micro-batch-sum", lengths, horizon, plan, len(RANK_PLANS))
        weighted = weighted_batch(batch, range(3), aggregation)
        for rows in filter(None, plan):
            micro = {k: v[rows] for k, v in weighted.items()}
            loss, _ = compute_loss(
                algorithm, ours_in[rows], micro, step=3, config=CONFIG, vocab_size=V, normalizer=aggregation.normalizer
            )
            total = total + loss
    total.backward()
    ref_in = logits.clone().requires_grad_()
    expected = authors_loss(algorithm, ref_in, batch, lam, horizon)
    expected.backward()
    torch.testing.assert_close(total.double(), expected, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-6, atol=1e-12)


def test_luffy_entropy_keeps_the_authors_weight_at_the_batch_scale():
    """LUFFY at the batch scale: the policy term Σℓ/(H n), the entropy the token mean times k·W/n (k micro-batches
    per rank, W ranks, n rollouts), so that their ratio is the authors' (float64, over the ranks of RANK_PLANS)."""
    logits, batch = make_batch(seed=7)
    horizon, k, ranks, n = 12, 2, 2, 3
    mask = batch["loss_mask"]
    lengths = [int(mask[i].sum()) for i in range(n)]
    ours_in = logits.clone().requires_grad_()
    total = 0.0
    for plan in RANK_PLANS:
        aggregation = mini_batch_aggregation("seq-mean-token-sum-norm", "batch", lengths, horizon, plan, ranks)
        weighted = weighted_batch(batch, range(n), aggregation)
        for rows in filter(None, plan):
            micro = {key: v[rows] for key, v in weighted.items()}
            loss, _ = compute_loss(
                "luffy", ours_in[rows], micro, step=3, config=CONFIG, vocab_size=V, normalizer=aggregation.normalizer
            )
            total = total + loss
    total.backward()
    ref_in = logits.clone().requires_grad_()
    logp_all = torch.log_softmax(ref_in[..., :V].double(), -1)
    logp = logp_all.gather(-1, batch["labels"].clamp(min=0)[..., None])[..., 0]
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    m, off, p = mask.double(), batch["off_policy"].double(), logp.exp()
    adv = batch["advantages"].double()[:, None].expand(B, T)
    per_token = -adv * (off * p / (p + 0.1) + (1 - off) * torch.exp(logp - batch["old_logp"].double()))
    expected = (per_token * m).sum() / (horizon * n) - CONFIG.entropy_coeff * k * ranks / n * (
        entropy * m
    ).sum() / m.sum()
    expected.backward()
    torch.testing.assert_close(total.double(), expected, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-6, atol=1e-12)


def test_loss_aggregation_weights_and_errors():
    assert loss_aggregation("token-mean", [3, 5], 8) == ([1.0, 1.0], 8.0)
    assert loss_aggregation("seq-mean-token-mean", [4, 2], 8) == ([0.25, 0.5], 2.0)
    assert loss_aggregation("seq-mean-token-sum", [4, 2], 8) == ([1.0, 1.0], 2.0)
    assert loss_aggregation("seq-mean-token-sum-norm", [4, 2], 8) == ([0.125, 0.125], 2.0)
    with pytest.raises(ValueError, match="loss_agg_mode='seq-sum'"):
        loss_aggregation("seq-sum", [1], 8)
    with pytest.raises(ValueError, match="loss_agg_mode='token-sum' must be one of token-mean"):
        LossConfig(loss_agg_mode="token-sum")
    # unset, each algorithm aggregates as its authors' script does
    assert [LossConfig().aggregation_mode(a) for a in ("grpo", "tgpo_reg", "luffy")] == [
        "token-mean",
        "token-mean",
        "seq-mean-token-sum-norm",
    ]
    assert LossConfig(loss_agg_mode="token-mean").aggregation_mode("luffy") == "token-mean"


def test_a_batch_without_labels_is_refused_naming_the_key():
    """``tokens`` is the model input (MicroBatch.tokens); what each position predicts is ``labels``."""
    logits, batch = make_batch()
    renamed = {("tokens" if k == "labels" else k): v for k, v in batch.items()}
    with pytest.raises(KeyError, match="labels"):
        compute_loss("tgpo_reg", logits, renamed, step=1, config=CONFIG, vocab_size=V)


def test_compute_loss_reports_the_lambda_it_used():
    """λ_k has one owner, the loss: the paper's tgpo_reg λ0 = 0.002 decays by 1e-5 a step (step 11: 0.0019);
    GRPO has no teacher term."""
    logits, batch = make_batch()
    _, metrics = compute_loss("tgpo_reg", logits, batch, step=11, config=LossConfig(), vocab_size=V)
    assert float(metrics["loss/lambda"]) == pytest.approx(0.0019, abs=1e-15)
    _, metrics = compute_loss("grpo", logits, batch, step=11, config=LossConfig(), vocab_size=V)
    assert float(metrics["loss/lambda"]) == 0.0
