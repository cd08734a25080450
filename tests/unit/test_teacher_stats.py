"""Teacher-side statistics on one shard: argmax, top-K, log-probs and sampling at temperature T."""

import pytest
import torch

from tgpo_megatron.losses import teacher_stats, token_stats


def test_argmax_topk_logps_ignore_padding():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 11, 24, generator=g)
    logits[..., 20:] = 100.0  # padding columns with the largest values
    ids = torch.randint(0, 20, (6, 11), generator=g)
    stats = teacher_stats(logits, vocab_size=20, ids=[ids], topk=4, chunk_tokens=5)
    real = logits[..., :20]
    assert torch.equal(stats.argmax_ids, real.argmax(-1))
    top = real.topk(4, -1)
    assert torch.equal(stats.topk_ids, top.indices)
    torch.testing.assert_close(stats.topk_probs, torch.softmax(top.values, -1))
    torch.testing.assert_close(stats.token_logps[0], torch.log_softmax(real, -1).gather(-1, ids[..., None])[..., 0])


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_samples_follow_the_tempered_distribution(temperature):
    torch.manual_seed(0)
    row = torch.randn(12) * 1.5
    n = 40000
    logits = torch.cat([row, torch.full((4,), 50.0)]).expand(n, 16)  # 4 padding columns
    stats = teacher_stats(logits, vocab_size=12, sample_temperature=temperature, seed=7, chunk_tokens=4096)
    counts = torch.bincount(stats.sampled_ids, minlength=16).double()
    assert counts[12:].sum() == 0
    expected = torch.softmax(row.double() / temperature, -1) * n
    # every bin within 5 standard deviations of its binomial count
    assert torch.all((counts[:12] - expected).abs() <= 5 * (expected * (1 - expected / n)).sqrt() + 1)
    again = teacher_stats(logits, vocab_size=12, sample_temperature=temperature, seed=7, chunk_tokens=999)
    assert torch.equal(again.sampled_ids, stats.sampled_ids)  # same seed, same ids, whatever the chunking


def test_entropy_and_several_id_tensors_in_one_pass():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, 9, dtype=torch.float64, generator=g)
    a, b, c = (torch.randint(0, 9, (3, 5), generator=g) for _ in range(3))
    (la, lb, lc), entropy = token_stats(logits, [a, b, c], vocab_size=9, chunk_tokens=4)
    logp = torch.log_softmax(logits, -1)
    for ours, ids in ((la, a), (lb, b), (lc, c)):
        torch.testing.assert_close(ours, logp.gather(-1, ids[..., None])[..., 0])
    torch.testing.assert_close(entropy, -(logp.exp() * logp).sum(-1))


def test_non_finite_teacher_logits_give_valid_ids_and_nan_log_probs():
    """So that every rank can see the problem in the gathered log-probs and skip the update, instead of one
    rank failing on an id outside the vocabulary."""
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 10, generator=g)
    logits[1, 3] = float("nan")
    logits[1, 5] = float("inf")
    logits[2] = float("nan")
    ids = torch.zeros(4, dtype=torch.long)
    stats = teacher_stats(logits, vocab_size=8, ids=[ids], topk=2, sample_temperature=1.0)
    for out in (stats.argmax_ids, stats.topk_ids.flatten(), stats.sampled_ids):
        assert int(out.min()) >= 0 and int(out.max()) < 8
    assert torch.isnan(stats.token_logps[0][1:3]).all() and torch.isfinite(stats.token_logps[0][[0, 3]]).all()
    assert torch.equal(stats.argmax_ids[[0, 3]], logits[[0, 3], :8].argmax(-1))


def test_teacher_host_copies_are_views_of_one_exact_buffer_per_dtype():
    from tgpo_megatron.teacher import host_copies

    tensors = [torch.randn(3, 5), torch.randn(7, dtype=torch.float64), torch.randn(2, 2), torch.randn(4)]
    locked, unlocked = [], []

    def pin(buffer):  # records what cudaHostRegister would lock (it needs a GPU); the layout is the same
        locked.append((buffer.data_ptr(), buffer.untyped_storage().nbytes()))
        return lambda: unlocked.append(buffer.data_ptr())

    copies, unpin = host_copies(tensors, pin=pin)
    assert all(torch.equal(a, b) and a.shape == b.shape for a, b in zip(tensors, copies))
    float32 = [c for c in copies if c.dtype == torch.float32]
    assert len({c.untyped_storage().data_ptr() for c in float32}) == 1  # one allocation per dtype
    assert float32[0].untyped_storage().nbytes() == (15 + 4 + 4) * 4  # exactly their size, no power of two
    assert sorted(locked) == sorted(
        (c.untyped_storage().data_ptr(), c.untyped_storage().nbytes()) for c in (float32[0], copies[1])
    )  # each buffer locked once, whole
    unpin()
    assert sorted(unlocked) == sorted(address for address, _ in locked)
