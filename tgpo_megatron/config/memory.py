"""What Megatron-Core and vLLM hold on one GPU, in bytes or elements, from a model's shape and a layout: the
arithmetic ``tgpo plan`` (``config.plan``) adds up. Counts follow what Megatron-Core allocates for our layer
specs (checked against models built on the meta device in the tests); activation sizes follow what autograd
keeps for backward (checked against a tiny model's saved tensors on CPU). Imports without torch."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tgpo_megatron.config.arch import ModelArch
from tgpo_megatron.losses.coefficients import CHUNK_TOKENS

GIB = 1024**3


def bytes_of(dtype: str) -> int:
    """``auto`` is bfloat16 on a GPU, which is what a plan is for."""
    return 4 if dtype == "float32" else 2


# -- parameters ----------------------------------------------------------------------------------------------


def stage_parameter_groups(arch: ModelArch, tp: int, pp: int, stage: int, ep: int = 1) -> tuple[list[int], list[int]]:
    """Element counts of the parameter tensors of pipeline ``stage`` on one TP (and EP) rank, as Megatron-Core
    builds them for our layer specs (embedding on the first stage, final norm and output layer on the last; a
    tied output layer is a separate copy when the stages differ): the dense ones, and this rank's experts."""
    h, hd, tp_vocab = arch.hidden_size, arch.head_dim, arch.padded_vocab(tp) // tp
    qkv = (arch.num_attention_heads + 2 * arch.num_kv_heads) * hd // tp
    layer = [
        h,
        qkv * h,
        *([qkv] if arch.qkv_bias else []),
        *([hd, hd] if arch.qk_norm else []),
        h * arch.num_attention_heads * hd // tp,
        h,
    ]
    experts: list[int] = []
    if arch.moe is None:
        layer += [2 * arch.intermediate_size // tp * h, h * arch.intermediate_size // tp]
    else:  # a router (replicated over TP) and whole experts (expert TP is 1)
        layer.append(arch.moe.num_experts * h)
        experts = [2 * arch.moe.expert_intermediate_size * h, h * arch.moe.expert_intermediate_size] * (
            arch.moe.num_experts // ep
        )
    first, last = stage == 0, stage == pp - 1
    layers = arch.num_layers // pp
    tensors = [tp_vocab * h] if first else []
    tensors += layer * layers
    if last:
        tensors.append(h)
        if not (arch.tie_word_embeddings and first):
            tensors.append(tp_vocab * h)
    return tensors, experts * layers


def stage_parameters(arch: ModelArch, tp: int, pp: int, stage: int, ep: int = 1) -> list[int]:
    dense, experts = stage_parameter_groups(arch, tp, pp, stage, ep)
    return dense + experts


def grad_buffer_elements(tensors: list[int], dp: int) -> int:
    """Megatron's DDP buffer with the distributed optimizer: each tensor starts at a multiple of 64 elements,
    the buffer ends at a multiple of lcm(dp, 128) (one bucket: no gradient overlap)."""
    end = 0
    for n in tensors:
        end = math.ceil(end / 64) * 64 + n
    divisor = math.lcm(dp, 128)
    return math.ceil(end / divisor) * divisor


@dataclass(frozen=True)
class StudentState:
    parameters: int
    weights: float
    gradients: float
    optimizer: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer


def student_state(arch: ModelArch, tp: int, pp: int, dp: int, dtype_bytes: int, ep: int = 1) -> StudentState:
    """The largest pipeline stage's resident training state, in bytes: weights in their dtype, fp32 gradients
    (``grad_reduce_in_fp32``), the distributed optimizer's shard of Adam m, v and, for 16-bit weights, the
    fp32 main copy (fp32 weights are their own main copy). Experts have a buffer of their own, sharded over
    the expert-data-parallel ranks (tp x dp / ep)."""
    stages = [stage_parameter_groups(arch, tp, pp, s, ep) for s in range(pp)]
    dense, experts = max(stages, key=lambda groups: sum(map(sum, groups)))
    expert_dp = tp * dp // ep
    params = sum(dense) + sum(experts)
    buffers = [(grad_buffer_elements(dense, dp), dp)] + (
        [(grad_buffer_elements(experts, expert_dp), expert_dp)] if experts else []
    )
    per_element = 8 + (4 if dtype_bytes < 4 else 0)
    return StudentState(
        params,
        params * dtype_bytes,
        sum(b for b, _ in buffers) * 4,
        sum(b // ranks for b, ranks in buffers) * per_element,
    )


# -- activations ---------------------------------------------------------------------------------------------


def layer_activation_elements(arch: ModelArch, tokens: int, tp: int, sequence_parallel: bool = False) -> float:
    """Elements one transformer layer keeps for backward over ``tokens`` tokens on one TP rank.

    Per token, as autograd saves them in our layers (measured on CPU, tests/distributed/test_plan_memory.py):
    for each of the two norms, its input, its normalised output and the next linear layer's input copy (3H,
    split over TP only with sequence parallelism) and its 1/rms; the fused QKV output (kept alive through V),
    the rotated Q and K, the attention output and the output projection's input (flash-style attention keeps
    no scores); the query/key norms' inputs and outputs; RoPE's cos/sin of Q and K (4 x head_dim); the MLP's
    fc1 output (2I), SiLU output, gated product and fc2 input (3I). Transformer Engine's fused modules keep
    a little less (the norm's output is the linear's input), so this is an upper bound there. A mixture of
    experts keeps its router's logits and probabilities (2E) and, for each of the k copies of a token sent to
    an expert, the permuted input and the combined output (2H) and the expert's MLP (5I); with tokens routed
    evenly each rank computes k copies per token of its own, whatever the expert parallelism.
    """
    heads, kv, hd = arch.num_attention_heads, arch.num_kv_heads, arch.head_dim
    norms = 2 * (3 * arch.hidden_size / (tp if sequence_parallel else 1) + 1)
    attention = ((heads + 2 * kv) + (heads + kv) + 2 * heads) * hd / tp
    qk_norm = 2 * (heads + kv) * hd / tp if arch.qk_norm else 0
    rope = 4 * hd
    moe = arch.moe
    if moe is None:
        mlp = 5 * arch.intermediate_size / tp
    else:
        mlp = 2 * moe.num_experts + moe.experts_per_token * (2 * arch.hidden_size + 5 * moe.expert_intermediate_size)
    return tokens * (norms + attention + qk_norm + rope + mlp)


@dataclass(frozen=True)
class Activations:
    """Bytes of one micro-batch of the student's forward/backward on the busiest stage."""

    layers: float
    """What the layers keep for backward (all micro-batches in flight on the first stage under 1F1B)."""
    logits: float
    """The last stage's head: the final norm's tensors (3H) and the logits the loss head keeps."""
    backward: float
    """Transient in backward: the logits' gradient and the loss head's two fp32 chunk buffers, or (with full
    recompute) one layer's activations rebuilt."""

    @property
    def total(self) -> float:
        return self.layers + self.logits + self.backward


def student_activations(
    arch: ModelArch,
    tokens: int,
    tp: int,
    pp: int,
    dtype_bytes: int,
    recompute: str,
    micro_batches: int = 1,
    sequence_parallel: bool = False,
    chunk_tokens: int = CHUNK_TOKENS,
) -> Activations:
    """``recompute``: ``none`` keeps every layer's activations; ``full`` keeps each layer's input only and
    rebuilds one layer at a time in backward (Megatron's uniform full recompute of 1 layer per checkpoint).
    ``chunk_tokens``: the loss head's (``algorithm.chunk_tokens``)."""
    layer = layer_activation_elements(arch, tokens, tp, sequence_parallel) * dtype_bytes
    layer_input = tokens * arch.hidden_size / (tp if sequence_parallel else 1) * dtype_bytes
    in_flight = min(pp, micro_batches)
    per_layer = layer_input if recompute == "full" else layer
    logits = tokens * arch.padded_vocab(tp) / tp * dtype_bytes
    final_norm = tokens * 3 * arch.hidden_size * dtype_bytes
    head = loss_head_chunks(arch, tp, chunk_tokens)
    rebuilt = layer if recompute == "full" else 0.0
    return Activations(
        layers=per_layer * arch.num_layers // pp * in_flight,
        logits=logits + final_norm,
        backward=max(logits + head, rebuilt),
    )


def loss_head_chunks(arch: ModelArch, tp: int, chunk_tokens: int) -> float:
    """The fused loss head's two fp32 ``[chunk, V/TP]`` buffers (``losses.vocab_parallel``)."""
    return 2 * chunk_tokens * arch.padded_vocab(tp) / tp * 4


def forward_only_peak(
    arch: ModelArch, tokens: int, tp: int, dtype_bytes: int, chunk_tokens: int = CHUNK_TOKENS
) -> float:
    """A no-grad forward of ``tokens`` tokens: one layer's transients, the logits and the head's chunks."""
    layer = layer_activation_elements(arch, tokens, tp) * dtype_bytes
    logits = tokens * arch.padded_vocab(tp) / tp * dtype_bytes
    return layer + logits + loss_head_chunks(arch, tp, chunk_tokens)


def refit_gather_peak(arch: ModelArch, tp: int, dtype_bytes: int) -> float:
    """The most a refit holds beside the resident state for one tensor (``models.bridge.export_hf_weights``).
    At TP > 1 each tensor is gathered into one buffer: the (TP-padded) vocabulary matrix is that buffer (one
    full copy); fused QKV and gate/up are then split into their HF tensors, and a row-parallel tensor's slices
    interleaved, each a second full copy. At TP = 1 nothing is gathered and only the splits copy."""
    h, hd = arch.hidden_size, arch.head_dim
    qkv = (arch.num_attention_heads + 2 * arch.num_kv_heads) * hd * h
    gate_up = 2 * arch.intermediate_size * h if arch.moe is None else 0  # experts are whole: chunks are views
    if tp == 1:
        return max(qkv, gate_up) * dtype_bytes
    down = arch.intermediate_size * h if arch.moe is None else 0
    row = max(down, arch.num_attention_heads * hd * h)
    return max(arch.padded_vocab(tp) * h, 2 * qkv, 2 * gate_up, 2 * row) * dtype_bytes


def largest_tensor(arch: ModelArch) -> int:
    """Elements of the largest Hugging Face tensor of ``arch``: the embedding (or LM head), else a layer's query
    or MLP projection."""
    h = arch.hidden_size
    return max(arch.vocab_size * h, arch.num_attention_heads * arch.head_dim * h, arch.intermediate_size * h)


def kv_bytes_per_token(arch: ModelArch, tp: int, dtype_bytes: int) -> float:
    """K and V of every layer for one token, on one GPU of a TP group."""
    return 2 * arch.num_layers * arch.num_kv_heads * arch.head_dim * dtype_bytes / tp
