"""The batching plan and micro-batch tensors: every rollout computed once, no micro-batch over its budget
(unless a single longer sequence), equal micro-batch counts on every rank, balanced ranks at the paper's
shape, and packed tensors that hold exactly what the padded ones hold, at the same label positions."""

import random

import pytest
import torch

from benchmarks.bench_batching import sequence_lengths
from tgpo_megatron.batching import (
    MiniBatch,
    Rollout,
    attach,
    collate,
    contiguous_share,
    micro_batches,
    pack_by_tokens,
    plan_micro_batches,
    split_by_tokens,
)


def random_lengths(kind: str, n: int, rng: random.Random) -> list[int]:
    if kind == "uniform":
        return [rng.randint(1, 60) for _ in range(n)]
    if kind == "long_tail":
        return [min(int(rng.expovariate(1 / 40)) + 1, 400) for _ in range(n)]
    if kind == "over_budget":  # many sequences longer than the budget
        return [rng.randint(50, 300) for _ in range(n)]
    if kind == "tiny":
        return [rng.randint(1, 3) for _ in range(n)]
    raise AssertionError(kind)


def check_plan(plan, lengths, budget, packed=True):
    seen = sorted(i for groups in plan for group in groups for i in group)
    assert seen == list(range(len(lengths)))  # every rollout exactly once
    assert len({len(groups) for groups in plan}) == 1  # every rank runs as many micro-batches
    for groups in plan:
        for group in groups:
            cost = sum(lengths[i] for i in group) if packed else len(group) * max(lengths[i] for i in group or [0])
            assert len(group) <= 1 or cost <= budget, (group, cost)


@pytest.mark.parametrize("kind", ["uniform", "long_tail", "over_budget", "tiny"])
@pytest.mark.parametrize("packed", [True, False])
def test_random_plans_respect_the_budget_and_cover_everything(kind, packed):
    rng = random.Random(f"{kind}{packed}")
    for _ in range(40):
        n, ranks, budget = rng.randint(1, 80), rng.choice([1, 2, 3, 4, 8]), rng.choice([64, 100, 256])
        lengths = random_lengths(kind, n, rng)
        check_plan(plan_micro_batches(lengths, ranks, budget, packed), lengths, budget, packed)


@pytest.mark.parametrize("ranks", [4, 8])
def test_the_papers_shape_fits_its_budget_and_balances_ranks(ranks):
    """One step of the 7B recipe (benchmarks/bench_batching.py: 1,024 rollouts, responses log-normal with median
    1.5k capped at 8,192, budget 16,384), two mini-batches of 512 rollouts."""
    for seed in range(3):
        lengths = sequence_lengths("paper", seed)
        for mini in (lengths[:512], lengths[512:]):
            plan = plan_micro_batches(mini, ranks, 16384)
            check_plan(plan, mini, 16384)
            tokens = [sum(mini[i] for g in groups for i in g) for groups in plan]
            assert max(tokens) / (sum(tokens) / ranks) <= 1.05
            # packing fills micro-batches: at most one more per rank than the tokens strictly need
            assert len(plan[0]) <= -(-max(tokens) // 16384) + 1


def test_fewer_sequences_than_ranks_get_empty_micro_batches():
    plan = plan_micro_batches([500, 10], 4, 64)
    assert [len(groups) for groups in plan] == [1, 1, 1, 1]
    assert sorted(len(groups[0]) for groups in plan) == [0, 0, 1, 1]


def test_split_by_tokens_is_sorted_greedy():
    assert split_by_tokens([5, 1, 4, 3, 3], 2) == [[0, 4], [1, 2, 3]]  # 5, 4, 4+3, 5+3, 7+1
    assert pack_by_tokens([6, 5, 4, 3, 2], 9) == [[0, 3], [1, 2], [4]]


def rollouts_with_values(seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, (p, r) in enumerate([(3, 5), (2, 1), (4, 7), (1, 3)]):
        rollout = Rollout(
            torch.randint(1, 50, (p,), generator=g).tolist(),
            torch.randint(1, 50, (r,), generator=g).tolist(),
            advantage=0.5 * i - 1,
        )
        rollout.per_token.update(
            old_logp=-torch.rand(r, generator=g), teacher_topk_ids=torch.randint(0, 50, (r, 3), generator=g)
        )
        out.append(rollout)
    return out


def test_a_packed_row_concatenates_sequences_with_restarting_positions():
    rollouts = rollouts_with_values()
    mb = collate(rollouts, ["old_logp"], pad_multiple=8)
    lengths = [r.length for r in rollouts]  # 7, 2, 10, 3 = 22, padded to 24
    assert mb.tokens.shape == (1, 24) and mb.cu_seqlens.tolist() == [0, 7, 9, 19, 22, 24]
    assert mb.max_seqlen == 10 and mb.cu_seqlens.dtype == torch.int32
    offset = 0
    for r, n in zip(rollouts, lengths):
        x = r.prompt + r.response
        assert mb.tokens[0, offset : offset + n].tolist() == x[:-1]
        assert mb.labels[0, offset : offset + n].tolist() == x[1:]
        assert mb.position_ids[0, offset : offset + n].tolist() == list(range(n))
        # the loss covers exactly the response labels
        assert mb.loss_mask[0, offset : offset + n].tolist() == [0.0] * (len(r.prompt) - 1) + [1.0] * len(r.response)
        offset += n
    assert mb.loss_mask[0, 22:].sum() == 0 and mb.position_ids[0, 22:].tolist() == [0, 1]


@pytest.mark.parametrize("keys", [["old_logp"], ["old_logp", "teacher_topk_ids"]])
def test_packed_and_padded_micro_batches_hold_the_same_values(keys):
    rollouts = rollouts_with_values()
    groups = [[2, 0], [1, 3]]
    for packed in (True, False):
        mbs = micro_batches(rollouts, groups, keys, packed=packed)
        if not packed:
            assert {mb.tokens.shape for mb in mbs} == {(2, 10)}  # one shape for the call
            # with sequence parallelism the sequence dimension must split over the TP ranks
            assert {mb.tokens.shape for mb in micro_batches(rollouts, groups, keys, packed=False, pad_multiple=4)} == {
                (2, 12)
            }
        for mb, group in zip(mbs, groups):
            for i, labels, mask, adv, *values in zip(
                group,
                mb.per_rollout(mb.labels),
                mb.per_rollout(mb.loss_mask),
                mb.per_rollout(mb.advantages),
                *(mb.per_rollout(mb.values[k]) for k in keys),
            ):
                assert labels.tolist() == rollouts[i].response
                assert mask.tolist() == [1.0] * len(rollouts[i].response)
                assert adv.tolist() == [rollouts[i].advantage] * len(rollouts[i].response)
                for key, value in zip(keys, values):
                    assert torch.equal(value, rollouts[i].per_token[key])


def test_loss_weights_and_input_substitution():
    r = Rollout([7, 8], [1, 2, 3], input_response=[1, 9, 3], per_token={"loss_weight": torch.tensor([1.0, 0.0, 1.0])})
    mb = collate([r])
    assert mb.tokens.tolist() == [[7, 8, 1, 9]] and mb.labels.tolist() == [[8, 1, 2, 3]]
    assert mb.loss_mask.tolist() == [[0.0, 1.0, 0.0, 1.0]] and r.loss_tokens == 2.0


def test_an_empty_micro_batch_is_one_masked_position():
    rollouts = rollouts_with_values()
    (mb,) = micro_batches(rollouts, [[]], ["teacher_topk_ids"])
    assert mb.tokens.shape == (1, 1) and mb.cu_seqlens.tolist() == [0, 1] and mb.loss_mask.sum() == 0
    assert mb.values["teacher_topk_ids"].shape == (1, 1, 3) and mb.spans == []


def test_per_token_keys_outside_the_contract_are_refused():
    r = Rollout([7, 8], [1, 2], per_token={"teacher_idz": torch.tensor([3, 4])})
    with pytest.raises(KeyError, match=r"per-token keys \['teacher_idz'\] are not in batching.PER_TOKEN"):
        collate([r], ["teacher_idz"])


def test_every_key_an_objective_reads_is_in_the_contract():
    from tgpo_megatron.batching import PER_TOKEN
    from tgpo_megatron.losses import ALGORITHMS

    for name, spec in ALGORITHMS.items():
        assert set(spec.per_token_keys) <= set(PER_TOKEN), name


@pytest.mark.parametrize("count", [0, 1, 7, 8, 13])
@pytest.mark.parametrize("parts", [1, 3, 8])
def test_contiguous_shares_cover_everything_in_order_and_differ_by_at_most_one(count, parts):
    shares = [contiguous_share(count, parts, p) for p in range(parts)]
    assert [i for share in shares for i in share] == list(range(count))
    sizes = [len(share) for share in shares]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_a_mini_batch_lists_this_ranks_rollouts_micro_batch_by_micro_batch():
    step = [Rollout([1], [2] * n) for n in (3, 1, 2)]
    mini_batch = MiniBatch(step, [[2], [0, 1]])
    assert [len(r.response) for r in mini_batch.local] == [2, 3, 1]


def test_attach_stores_a_phases_values_and_refuses_a_count_that_does_not_match():
    step = [Rollout([1], [2, 3]), Rollout([1], [4])]
    attach(step, [{"old_logp": torch.zeros(2)}, {"old_logp": torch.ones(1)}])
    assert [r.per_token["old_logp"].tolist() for r in step] == [[0.0, 0.0], [1.0]]
    with pytest.raises(ValueError, match="1 sets of per-token values for 2 rollouts"):
        attach(step, [{}])
