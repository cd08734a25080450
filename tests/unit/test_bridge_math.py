"""The HF <-> Megatron tensor layout transforms, checked against an independent re-derivation of
Megatron's fused layouts (QKV interleaved per query group; gate/up stacked per TP rank)."""

import pytest
import torch

from tests.unit.test_arch import QWEN25_15B
from tgpo_megatron.config.arch import arch_from_hf_config
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


def te_style_moe_stage(arch, first_layer: int, layers: int, experts: int):
    """A module tree named as Megatron's Transformer Engine spec names a Qwen3-MoE stage: the input norm fused
    into ``linear_qkv`` (``layer_norm_weight``), a separate ``pre_mlp_layernorm`` before the router, and
    grouped experts with one ``weight{i}`` parameter per local expert. Shapes at TP=1 (meta tensors)."""
    from torch import nn

    h, hd, ffn = arch.hidden_size, arch.head_dim, arch.moe.expert_intermediate_size
    qkv = (arch.num_attention_heads + 2 * arch.num_kv_heads) * hd

    def param(*shape):
        return nn.Parameter(torch.empty(*shape, device="meta"))

    class Layer(nn.Module):
        def __init__(self, number):
            super().__init__()
            self.layer_number = number
            self.self_attention = nn.Module()
            self.self_attention.linear_qkv = nn.Module()
            self.self_attention.linear_qkv.layer_norm_weight = param(h)
            self.self_attention.linear_qkv.weight = param(qkv, h)
            self.self_attention.q_layernorm = nn.Module()
            self.self_attention.q_layernorm.weight = param(hd)
            self.self_attention.k_layernorm = nn.Module()
            self.self_attention.k_layernorm.weight = param(hd)
            self.self_attention.linear_proj = nn.Module()
            self.self_attention.linear_proj.weight = param(h, arch.num_attention_heads * hd)
            self.pre_mlp_layernorm = nn.Module()
            self.pre_mlp_layernorm.weight = param(h)
            self.mlp = nn.Module()
            self.mlp.router = nn.Module()
            self.mlp.router.weight = param(arch.moe.num_experts, h)
            self.mlp.experts = nn.Module()
            self.mlp.experts.linear_fc1 = nn.Module()
            self.mlp.experts.linear_fc2 = nn.Module()
            for i in range(experts):
                setattr(self.mlp.experts.linear_fc1, f"weight{i}", param(2 * ffn, h))
                setattr(self.mlp.experts.linear_fc2, f"weight{i}", param(h, ffn))

    model = nn.Module()
    model.decoder = nn.Module()
    model.decoder.layers = nn.ModuleList([Layer(first_layer + j + 1) for j in range(layers)])
    return model


def test_transformer_engine_names_map_to_hugging_face_names():
    """The names Megatron's TE spec gives a Qwen3-MoE layer (none of which the local spec uses) map to the HF
    tensors, expert ``weight{i}`` of EP rank r to global expert r x experts-per-rank + i, in export order."""
    from tests.model_shapes import CONFIGS
    from tgpo_megatron.models.bridge import EXPERT, EXPERT_FC1, _stage_items, rule_for

    arch = arch_from_hf_config(CONFIGS["Qwen3-30B-A3B-Thinking-2507-aligned"])  # 128 experts, 48 layers
    layer_map = {0: 24}  # the first layer of the second of two pipeline stages
    expected = {
        "self_attention.linear_qkv.layer_norm_weight": ((".input_layernorm.weight",), REPLICATED),
        "self_attention.linear_qkv.weight": (
            (".self_attn.q_proj.weight", ".self_attn.k_proj.weight", ".self_attn.v_proj.weight"),
            QKV,
        ),
        "self_attention.q_layernorm.weight": ((".self_attn.q_norm.weight",), REPLICATED),
        "self_attention.linear_proj.weight": ((".self_attn.o_proj.weight",), ROW),
        "pre_mlp_layernorm.weight": ((".post_attention_layernorm.weight",), REPLICATED),
        "mlp.router.weight": ((".mlp.gate.weight",), REPLICATED),
        "mlp.experts.linear_fc1.weight15": (
            (".mlp.experts.31.gate_proj.weight", ".mlp.experts.31.up_proj.weight"),
            EXPERT_FC1,
        ),
        "mlp.experts.linear_fc2.weight0": ((".mlp.experts.16.down_proj.weight",), EXPERT),
    }
    for suffix, (hf_suffixes, kind) in expected.items():
        rule = rule_for(f"decoder.layers.0.{suffix}", arch, layer_map, expert_offset=16)
        assert rule.hf_names == tuple(f"model.layers.24{s}" for s in hf_suffixes) and rule.kind == kind, suffix
    # export order over 8 EP ranks of 16 experts: each layer's experts in global order, 0..127
    items = _stage_items(te_style_moe_stage(arch, 24, 1, experts=16), arch, tp=1, ep=8)
    down = [hfs[0][0] for _, kind, hfs, _ in items if kind == EXPERT]
    assert down == [f"model.layers.24.mlp.experts.{e}.down_proj.weight" for e in range(128)]
    gate_up = [hfs for _, kind, hfs, _ in items if kind == EXPERT_FC1][37]
    assert gate_up == [
        ("model.layers.24.mlp.experts.37.gate_proj.weight", [arch.moe.expert_intermediate_size, arch.hidden_size]),
        ("model.layers.24.mlp.experts.37.up_proj.weight", [arch.moe.expert_intermediate_size, arch.hidden_size]),
    ]


class NewStorageBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Bytes of every new storage an operation creates (views and in-place writes create none)."""

    def __init__(self):
        super().__init__()
        self.seen, self.bytes = set(), 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr()
            for t in torch.utils._pytree.tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor)
        }
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                ptr = t.untyped_storage().data_ptr()
                if ptr not in inputs and ptr not in self.seen:
                    self.seen.add(ptr)
                    self.bytes += t.untyped_storage().nbytes()
        return out


@pytest.mark.parametrize("kind, copies", [(VOCAB, 1), (QKV, 1), (FC1, 1), (ROW, 2)])
def test_the_tp_gather_of_a_refit_holds_one_full_copy(monkeypatch, kind, copies):
    """The refit gathers each tensor over TP beside the resident student: one buffer that the collective fills
    is the full tensor (split along dim 0: the vocabulary, the largest); a row-parallel tensor costs one copy
    more to interleave the ranks' slices. A list of parts and their concatenation would be two copies of
    everything."""
    import torch.distributed as dist

    from tgpo_megatron.models import bridge

    tp = 4

    local = torch.randn(64, 48)
    slices = [local + rank for rank in range(tp)]  # what each rank holds

    def all_gather_into_tensor(out, mine, group):  # as the ranks fill it, in place
        for chunk, theirs in zip(out.chunk(tp), slices):
            chunk.copy_(theirs)

    monkeypatch.setattr(dist, "all_gather_into_tensor", all_gather_into_tensor)
    group = type("Group", (), {"size": lambda self: tp})()
    with NewStorageBytes() as allocated:
        full = bridge._gather_tp(local, kind, group)
    assert allocated.bytes == copies * full.numel() * full.element_size()
    expected = torch.cat(slices, dim=1 if kind == ROW else 0)
    assert torch.equal(full, expected)
