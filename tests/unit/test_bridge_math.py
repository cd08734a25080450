"""The HF <-> Megatron tensor layout transforms, checked against an independent re-derivation of
Megatron's fused layouts (QKV interleaved per query group; gate/up stacked per TP rank)."""

import pytest
import torch

from tests.unit.test_arch import QWEN25_15B
from tgpo_megatron.models.arch import arch_from_hf_config
from tgpo_megatron.models.bridge import FC1, QKV, REPLICATED, ROW, VOCAB, hf_from_full, shard_from_hf

ARCH = arch_from_hf_config(
    {
        **QWEN25_15B,
        "vocab_size": 251,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
    }
)  # head_dim 8, 2 heads/group


def hf_tensors(kind, bias=False):
    h, hd = ARCH.hidden_size, ARCH.head_dim
    tail = () if bias else (h,)
    if kind == QKV:
        return [
            torch.randn(ARCH.num_attention_heads * hd, *tail),
            torch.randn(ARCH.num_kv_heads * hd, *tail),
            torch.randn(ARCH.num_kv_heads * hd, *tail),
        ]
    if kind == FC1:
        return [torch.randn(ARCH.intermediate_size, h), torch.randn(ARCH.intermediate_size, h)]
    if kind == VOCAB:
        return [torch.randn(ARCH.vocab_size, h)]
    return [torch.randn(ARCH.intermediate_size, h)]


def reference_megatron_qkv_shard(q, k, v, rank, tp):
    """Megatron's linear_qkv rows on TP rank ``rank``: for each of its query groups, that group's query
    heads, then its key head, then its value head."""
    hd, hpg = ARCH.head_dim, ARCH.heads_per_group
    rows = []
    for g in range(rank * ARCH.num_kv_heads // tp, (rank + 1) * ARCH.num_kv_heads // tp):
        for head in range(g * hpg, (g + 1) * hpg):
            rows.append(q[head * hd : (head + 1) * hd])
        rows.append(k[g * hd : (g + 1) * hd])
        rows.append(v[g * hd : (g + 1) * hd])
    return torch.cat(rows)


def shards(kind, tensors, tp, local_shape):
    def reader(rank):
        def read(i, rows):
            if kind == ROW:
                cols = local_shape[1]
                return tensors[i][:, rank * cols : (rank + 1) * cols]
            return tensors[i][rows] if rows is not None else tensors[i]

        return read

    return [shard_from_hf(kind, reader(r), ARCH, r, tp, local_shape) for r in range(tp)]


@pytest.mark.parametrize("tp", [1, 2, 4])
@pytest.mark.parametrize("bias", [False, True])
def test_qkv_layout_and_inverse(tp, bias):
    q, k, v = hf_tensors(QKV, bias)
    local = ((q.shape[0] + 2 * k.shape[0]) // tp, *q.shape[1:])
    parts = shards(QKV, [q, k, v], tp, local)
    for rank, part in enumerate(parts):
        assert torch.equal(part, reference_megatron_qkv_shard(q, k, v, rank, tp))
    back = hf_from_full(QKV, torch.cat(parts), ARCH, tp)
    assert all(torch.equal(a, b) for a, b in zip(back, (q, k, v)))


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_fc1_layout_and_inverse(tp):
    gate, up = hf_tensors(FC1)
    per_rank = ARCH.intermediate_size // tp
    parts = shards(FC1, [gate, up], tp, (2 * per_rank, ARCH.hidden_size))
    for rank, part in enumerate(parts):
        rows = slice(rank * per_rank, (rank + 1) * per_rank)
        assert torch.equal(part, torch.cat([gate[rows], up[rows]]))
    back = hf_from_full(FC1, torch.cat(parts), ARCH, tp)
    assert torch.equal(back[0], gate) and torch.equal(back[1], up)


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_vocab_padding_rows_are_zero_and_dropped(tp):
    (emb,) = hf_tensors(VOCAB)
    padded = 256
    parts = shards(VOCAB, [emb], tp, (padded // tp, ARCH.hidden_size))
    full = torch.cat(parts)
    assert torch.equal(full[: ARCH.vocab_size], emb) and torch.all(full[ARCH.vocab_size :] == 0)
    assert torch.equal(hf_from_full(VOCAB, full, ARCH, tp)[0], emb)


@pytest.mark.parametrize("kind, dim", [(ROW, 1), (REPLICATED, None)])
def test_plain_splits(kind, dim):
    (w,) = hf_tensors(kind)
    tp = 2
    local = list(w.shape)
    if dim is not None:
        local[dim] //= tp
    parts = shards(kind, [w], tp, local)
    full = parts[0] if dim is None else torch.cat(parts, dim=dim)
    assert torch.equal(hf_from_full(kind, full, ARCH, tp)[0], w)
