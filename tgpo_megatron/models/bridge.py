"""Hugging Face <-> Megatron-Core weights for the Llama-style families (Qwen2, Qwen3, Llama 3, Qwen3-MoE).

One table maps every Megatron parameter to the HF tensors it is made of and how it is sharded over TP (and,
for experts, which EP rank holds it). The same table drives three things: loading HF safetensors straight
into this rank's shards (each rank reads only the slices and experts it needs), exporting a Megatron model
as a stream of ``(hf_name, full_tensor)`` in layer order (gathered over TP, handed over EP and PP), and
therefore the conversion tool and the vLLM refit.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import torch
import torch.distributed as dist

from tgpo_megatron.config.arch import ModelArch
from tgpo_megatron.errors import UserError

# How a Megatron parameter is laid out over TP ranks. Experts are whole on one EP rank (expert TP is 1).
REPLICATED, ROW, VOCAB, QKV, FC1 = "replicated", "row", "vocab", "qkv", "fc1"
EXPERT, EXPERT_FC1 = "expert", "expert_fc1"
_PARTITION_DIM = {REPLICATED: None, ROW: 1, VOCAB: 0, QKV: 0, FC1: 0, EXPERT: None, EXPERT_FC1: None}


class WeightMappingError(UserError, ValueError):
    """A tensor is missing, extra, or has the wrong shape; the message names it."""


@dataclass(frozen=True)
class Rule:
    hf_names: tuple[str, ...]
    kind: str


_LAYER_RULES: dict[str, tuple[tuple[str, ...], str]] = {
    "input_layernorm.weight": (("input_layernorm.weight",), REPLICATED),
    "self_attention.linear_qkv.layer_norm_weight": (("input_layernorm.weight",), REPLICATED),
    "self_attention.linear_qkv.weight": (
        ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
        QKV,
    ),
    "self_attention.linear_qkv.bias": (
        ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
        QKV,
    ),
    "self_attention.q_layernorm.weight": (("self_attn.q_norm.weight",), REPLICATED),
    "self_attention.k_layernorm.weight": (("self_attn.k_norm.weight",), REPLICATED),
    "self_attention.linear_proj.weight": (("self_attn.o_proj.weight",), ROW),
    "pre_mlp_layernorm.weight": (("post_attention_layernorm.weight",), REPLICATED),
    "mlp.linear_fc1.layer_norm_weight": (("post_attention_layernorm.weight",), REPLICATED),
    "mlp.linear_fc1.weight": (("mlp.gate_proj.weight", "mlp.up_proj.weight"), FC1),
    "mlp.linear_fc2.weight": (("mlp.down_proj.weight",), ROW),
    "mlp.router.weight": (("mlp.gate.weight",), REPLICATED),
}
_EXPERT_RULES: dict[str, tuple[tuple[str, ...], str]] = {
    "linear_fc1": (("gate_proj.weight", "up_proj.weight"), EXPERT_FC1),
    "linear_fc2": (("down_proj.weight",), EXPERT),
}
_LAYER_PARAM = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")
# Megatron's sequential experts (local spec) and grouped experts (Transformer Engine spec) name them apart
_EXPERT_PARAM = re.compile(
    r"^mlp\.experts\.(?:local_experts\.(\d+)\.(linear_fc[12])\.weight|"
    r"(linear_fc[12])\.weight(\d+))$"
)


def local_expert(suffix: str) -> Optional[tuple[int, str]]:
    """(local expert index, linear_fc1 or linear_fc2) of a layer-relative expert parameter name, else None."""
    match = _EXPERT_PARAM.match(suffix)
    if match is None:
        return None
    if match.group(1) is not None:
        return int(match.group(1)), match.group(2)
    return int(match.group(4)), match.group(3)


def _layer_index_map(model) -> dict[int, int]:
    """Local layer position -> global (0-based) layer index of this pipeline stage."""
    return {j: layer.layer_number - 1 for j, layer in enumerate(model.decoder.layers)}


def rule_for(name: str, arch: ModelArch, layer_map: dict[int, int], expert_offset: int = 0) -> Optional[Rule]:
    """The HF tensors behind Megatron parameter ``name``; None for a tied output weight (it is the embedding).
    ``expert_offset``: the global index of this rank's first expert (EP rank x experts per rank)."""
    if name == "embedding.word_embeddings.weight":
        return Rule(("model.embed_tokens.weight",), VOCAB)
    if name == "decoder.final_layernorm.weight":
        return Rule(("model.norm.weight",), REPLICATED)
    if name == "output_layer.weight":
        return None if arch.tie_word_embeddings else Rule(("lm_head.weight",), VOCAB)
    match = _LAYER_PARAM.match(name)
    if match and match.group(2) in _LAYER_RULES:
        hf_suffixes, kind = _LAYER_RULES[match.group(2)]
        layer = layer_map[int(match.group(1))]
        return Rule(tuple(f"model.layers.{layer}.{s}" for s in hf_suffixes), kind)
    expert = local_expert(match.group(2)) if match else None
    if expert is not None:
        hf_suffixes, kind = _EXPERT_RULES[expert[1]]
        prefix = f"model.layers.{layer_map[int(match.group(1))]}.mlp.experts.{expert_offset + expert[0]}"
        return Rule(tuple(f"{prefix}.{s}" for s in hf_suffixes), kind)
    raise WeightMappingError(f"no Hugging Face mapping for Megatron parameter {name!r}")


# --------------------------------------------------------------------------------------------------------
# Megatron full (TP-gathered) tensor <-> HF tensors
# --------------------------------------------------------------------------------------------------------


def hf_from_full(kind: str, full: torch.Tensor, arch: ModelArch, tp: int) -> list[torch.Tensor]:
    """Split a TP-gathered Megatron tensor into its HF tensors (inverse of ``shard_from_hf`` over all ranks)."""
    if kind == VOCAB:
        return [full[: arch.vocab_size]]
    if kind == QKV:
        hd, hpg, groups = arch.head_dim, arch.heads_per_group, arch.num_kv_heads
        grouped = full.reshape(groups, (hpg + 2) * hd, *full.shape[1:])
        q, k, v = grouped.split([hpg * hd, hd, hd], dim=1)
        return [t.reshape(-1, *full.shape[1:]) for t in (q, k, v)]
    if kind == EXPERT_FC1:
        return list(full.chunk(2, dim=0))
    if kind == FC1:
        per_rank = full.reshape(tp, 2, -1, *full.shape[1:])
        return [per_rank[:, 0].reshape(-1, *full.shape[1:]), per_rank[:, 1].reshape(-1, *full.shape[1:])]
    return [full]


def shard_from_hf(
    kind: str,
    read: Callable[[int, Optional[slice]], torch.Tensor],
    arch: ModelArch,
    tp_rank: int,
    tp: int,
    local_shape: Sequence[int],
) -> torch.Tensor:
    """This TP rank's shard, reading only the rows it needs.

    ``read(i, rows)`` returns rows ``rows`` (all when None) of the i-th HF tensor of the rule; for ROW
    parameters the caller's ``read`` returns this rank's columns.
    """
    local_rows = local_shape[0]
    if kind == VOCAB:
        start = tp_rank * local_rows
        stop = min(start + local_rows, arch.vocab_size)
        shard = torch.zeros(*local_shape)
        if stop > start:  # a rank can hold padding only
            shard[: stop - start] = read(0, slice(start, stop))
        return shard
    if kind == QKV:
        hd, hpg = arch.head_dim, arch.heads_per_group
        groups = arch.num_kv_heads // tp
        g0 = tp_rank * groups
        q = read(0, slice(g0 * hpg * hd, (g0 + groups) * hpg * hd))
        k = read(1, slice(g0 * hd, (g0 + groups) * hd))
        v = read(2, slice(g0 * hd, (g0 + groups) * hd))
        tail = q.shape[1:]
        parts = [q.reshape(groups, hpg * hd, *tail), k.reshape(groups, hd, *tail), v.reshape(groups, hd, *tail)]
        return torch.cat(parts, dim=1).reshape(-1, *tail)
    if kind == EXPERT_FC1:
        return torch.cat([read(0, None), read(1, None)], dim=0)
    if kind == FC1:
        half = local_rows // 2
        rows = slice(tp_rank * half, (tp_rank + 1) * half)
        return torch.cat([read(0, rows), read(1, rows)], dim=0)
    return read(0, None)


# --------------------------------------------------------------------------------------------------------
# Loading HF safetensors into this rank's shards
# --------------------------------------------------------------------------------------------------------


class SafetensorsReader:
    """Lazy access to the tensors of an HF model directory (single file or sharded with an index)."""

    def __init__(self, path: str):
        from safetensors import safe_open

        self.path = path
        index_path = os.path.join(path, "model.safetensors.index.json")
        single = os.path.join(path, "model.safetensors")
        if os.path.exists(index_path):
            with open(index_path) as f:
                weight_map = json.load(f)["weight_map"]
        elif os.path.exists(single):
            weight_map = None
        else:
            raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json")
        self._handles = {}
        self._open = lambda file: safe_open(os.path.join(path, file), framework="pt")
        if weight_map is None:
            handle = self._handle("model.safetensors")
            weight_map = {name: "model.safetensors" for name in handle.keys()}
        self.weight_map = weight_map

    def _handle(self, file: str):
        if file not in self._handles:
            self._handles[file] = self._open(file)
        return self._handles[file]

    def __contains__(self, name: str) -> bool:
        return name in self.weight_map

    def get_slice(self, name: str):
        if name not in self.weight_map:
            raise WeightMappingError(f"{self.path}: tensor {name!r} is missing from the checkpoint")
        return self._handle(self.weight_map[name]).get_slice(name)


def _slice_reader(slices, kind: str, tp_rank: int, local_shape) -> Callable[[int, Optional[slice]], torch.Tensor]:
    def read(i: int, rows: Optional[slice]) -> torch.Tensor:
        if kind == ROW:
            cols = local_shape[1]
            return slices[i][:, tp_rank * cols : (tp_rank + 1) * cols]
        return slices[i][rows] if rows is not None else slices[i][:]

    return read


def _expert_parallel(model, pg_collection) -> tuple[int, int, int]:
    """(EP rank, EP size, experts per EP rank); (0, 1, 0) for a dense model."""
    ep = getattr(pg_collection, "ep", None)
    rank, size = (ep.rank(), ep.size()) if ep is not None else (0, 1)
    moe = model.arch.moe
    return rank, size, (moe.num_experts // size if moe is not None else 0)


def load_hf_weights(model, hf_dir: str, pg_collection, progress: bool = False) -> None:
    """Fill this rank's stage of ``model`` (its TP shards and its EP rank's experts) from ``hf_dir``."""
    from tqdm import tqdm

    arch: ModelArch = model.arch
    reader = SafetensorsReader(hf_dir)
    tp_rank, tp = pg_collection.tp.rank(), pg_collection.tp.size()
    ep_rank, _, experts_per_rank = _expert_parallel(model, pg_collection)
    layer_map = _layer_index_map(model)
    params = list(model.named_parameters())
    for name, param in tqdm(params, desc=f"load {os.path.basename(hf_dir.rstrip('/'))}", disable=not progress):
        rule = rule_for(name, arch, layer_map, ep_rank * experts_per_rank)
        if rule is None:  # tied output weight on the last pipeline stage: it is the embedding
            rule = Rule(("model.embed_tokens.weight",), VOCAB)
        read = _slice_reader([reader.get_slice(n) for n in rule.hf_names], rule.kind, tp_rank, param.shape)
        shard = shard_from_hf(rule.kind, read, arch, tp_rank, tp, param.shape)
        if shard.shape != param.shape:
            raise WeightMappingError(
                f"{hf_dir}: {', '.join(rule.hf_names)} give shape {tuple(shard.shape)} for Megatron "
                f"{name} {tuple(param.shape)} (tp={tp}); the checkpoint does not match config.json"
            )
        with torch.no_grad():
            param.copy_(shard.to(param.dtype))


# --------------------------------------------------------------------------------------------------------
# Exporting: a stream of (hf_name, full tensor) in layer order, on every rank
# --------------------------------------------------------------------------------------------------------


def _gather_tp(local: torch.Tensor, kind: str, tp_group) -> torch.Tensor:
    dim = _PARTITION_DIM[kind]
    tp = tp_group.size() if tp_group is not None else 1
    if dim is None or tp == 1:
        return local
    # one buffer filled by the collective; split along dim 0 (the vocabulary, the largest tensor) it is the full
    # tensor itself, along dim 1 the ranks' slices still have to be interleaved row by row: one copy more
    shards = local.new_empty(tp * local.shape[0], *local.shape[1:])
    dist.all_gather_into_tensor(shards, local.contiguous(), group=tp_group)
    if dim == 0:
        return shards
    return torch.cat(shards.view(tp, *local.shape).unbind(0), dim=dim)


def _full_shape(local_shape: Sequence[int], kind: str, tp: int) -> list[int]:
    shape = list(local_shape)
    dim = _PARTITION_DIM[kind]
    if dim is not None:
        shape[dim] *= tp
    return shape


ExportItem = tuple[str, str, list[tuple[str, list[int]]], Optional[int]]


def _stage_items(model, arch: ModelArch, tp: int, ep: int) -> list[ExportItem]:
    """(megatron name, kind, [(hf name, full shape), ...], owning EP rank or None) for every tensor this stage
    exports, in order. A layer's experts are listed for every EP rank, in global expert order; an item's
    Megatron name is the owner's local name, the same on every EP rank."""
    layer_map = _layer_index_map(model)
    experts_per_rank = arch.moe.num_experts // ep if arch.moe is not None else 0
    params = list(model.named_parameters())
    expert_params: dict[str, list] = {}  # local layer index -> its experts' (name, param), in order
    for name, param in params:
        match = _LAYER_PARAM.match(name)
        if match and local_expert(match.group(2)) is not None:
            expert_params.setdefault(match.group(1), []).append((name, param))
    expert_names = {name for experts in expert_params.values() for name, _ in experts}
    first_expert = {experts[0][0]: experts for experts in expert_params.values()}
    items: list[ExportItem] = []

    def add(name, param, owner):
        rule = rule_for(name, arch, layer_map, (owner or 0) * experts_per_rank)
        if rule is None:
            return
        meta = torch.empty(_full_shape(param.shape, rule.kind, tp), device="meta")
        shapes = [list(t.shape) for t in hf_from_full(rule.kind, meta, arch, tp)]
        items.append((name, rule.kind, list(zip(rule.hf_names, shapes)), owner))

    for name, param in params:
        if name not in expert_names:
            add(name, param, None)
        elif name in first_expert:  # the layer's experts, every EP rank's in turn: global expert order
            for owner in range(ep):
                for expert_name, expert_param in first_expert[name]:
                    add(expert_name, expert_param, owner)
    return items


def _all_stage_items(model, pg_collection) -> list[list[ExportItem]]:
    _, ep, _ = _expert_parallel(model, pg_collection)
    mine = _stage_items(model, model.arch, pg_collection.tp.size(), ep)
    if pg_collection.pp.size() == 1:  # a one-rank group would still get a communicator of its own
        return [mine]
    stage_items = [None] * pg_collection.pp.size()
    dist.all_gather_object(stage_items, mine, group=pg_collection.pp)
    return stage_items


def export_plan(model, pg_collection) -> list[tuple[str, list[int]]]:
    """``(hf_name, shape)`` of every tensor :func:`export_hf_weights` will yield, in the same order, without
    moving any weights (one small object gather over PP). A receiver checks it before taking any tensor."""
    return [hf for items in _all_stage_items(model, pg_collection) for _, _, hfs, _ in items for hf in hfs]


def export_hf_weights(model, pg_collection, dtype: Optional[torch.dtype] = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield every HF tensor of the model in layer order, on every rank of the model's grid.

    Each tensor is gathered over TP on the stage that owns it (an expert is broadcast over EP from the rank
    that holds it), then broadcast over PP; only one tensor is materialised at a time, so no rank ever holds
    a second copy of the model. All ranks must iterate the stream to the end (it is a sequence of
    collectives).
    """
    arch: ModelArch = model.arch
    tp_group, pp_group = pg_collection.tp, pg_collection.pp
    ep_group = getattr(pg_collection, "ep", None)
    ep_rank, ep, _ = _expert_parallel(model, pg_collection)
    tp = tp_group.size()
    stage_items = _all_stage_items(model, pg_collection)
    params = dict(model.named_parameters())
    my_stage = pp_group.rank()
    device = next(model.parameters()).device
    out_dtype = dtype or params_dtype(model)
    for stage, items in enumerate(stage_items):
        src = dist.get_global_rank(pp_group, stage)
        for name, kind, hf, owner in items:
            tensors = None
            if stage == my_stage and owner in (None, ep_rank):
                full = _gather_tp(params[name].detach(), kind, tp_group)
                tensors = [t.contiguous().to(out_dtype) for t in hf_from_full(kind, full, arch, tp)]
            for i, (hf_name, shape) in enumerate(hf):
                out = tensors[i] if tensors is not None else torch.empty(shape, dtype=out_dtype, device=device)
                if stage == my_stage and owner is not None and ep > 1:
                    dist.broadcast(out, src=dist.get_global_rank(ep_group, owner), group=ep_group)
                if pp_group.size() > 1:
                    dist.broadcast(out, src=src, group=pp_group)
                yield hf_name, out


def params_dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype
