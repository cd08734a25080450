"""Build a Megatron-Core ``GPTModel`` for a supported Hugging Face architecture.

``build_gpt_model(arch, layout, pg_collection)`` returns this rank's pipeline stage (a ``GPTModel`` with its
own process groups, so a student and a teacher with different layouts can live in one job). The vocabulary
is padded so that TP divides it, and the padded logits are masked in the model's output so that no consumer
(sampling, argmax, any softmax) can ever see them.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Literal

import torch
import torch.nn.functional as F
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_config import TransformerConfig

from tgpo_megatron.config.arch import ModelArch, RopeScaling, load_arch
from tgpo_megatron.config.layouts import Layout
from tgpo_megatron.distributed.cpu_compat import allow_moe_without_transformer_engine
from tgpo_megatron.distributed.parallel import seed_model_parallel_rng
from tgpo_megatron.models.attention import SdpaAttention
from tgpo_megatron.models.bridge import load_hf_weights

TransformerImpl = Literal["local", "transformer_engine"]


def transformer_config_kwargs(
    arch: ModelArch,
    layout: Layout,
    dtype: torch.dtype = torch.float32,
    init_std: float = 0.02,
    recompute: str = "none",
    sequence_parallel: bool = False,
    transformer_impl: TransformerImpl = "local",
) -> dict:
    """The ``TransformerConfig`` of ``arch`` as keyword arguments. ``recompute="full"``: each layer keeps only its
    input and is recomputed in backward (training only). ``sequence_parallel``: activations outside the TP
    regions split along the sequence (TE spec). With Transformer Engine, its fused kernels are on: RoPE on
    packed sequences (the unfused path syncs with the host twice per layer), MoE token permutation, and, where
    apex's wgrad kernel is installed (Megatron's own output layer needs it), gradient accumulation into the
    fp32 main gradients inside the GEMM."""
    full = recompute == "full"
    te = transformer_impl == "transformer_engine"
    moe = arch.moe
    moe_options = (
        {}
        if moe is None
        else dict(
            num_moe_experts=moe.num_experts,
            moe_router_topk=moe.experts_per_token,
            moe_ffn_hidden_size=moe.expert_intermediate_size,
            # transformers' Qwen3-MoE routing: softmax over all experts, then the top k, renormalised over them
            # when norm_topk_prob; Megatron's pre-softmax router keeps the softmax weights as they are, its
            # post-softmax router renormalises (a softmax over the top-k logits is exactly that)
            moe_router_score_function="softmax",
            moe_router_pre_softmax=not moe.norm_topk_prob,
            moe_router_load_balancing_type="aux_loss",
            moe_aux_loss_coeff=moe.router_aux_loss_coef,
            moe_router_dtype="fp32",
            moe_token_dispatcher_type="alltoall",
            moe_grouped_gemm=te,
            moe_permute_fusion=te,
            expert_model_parallel_size=layout.ep,
            expert_tensor_parallel_size=1,
        )
    )
    return dict(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        ffn_hidden_size=arch.intermediate_size,
        num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.num_kv_heads,
        kv_channels=arch.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=arch.rms_norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=arch.qkv_bias,
        qk_layernorm=arch.qk_norm,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tensor_model_parallel_size=layout.tp,
        sequence_parallel=sequence_parallel,
        pipeline_model_parallel_size=layout.pp,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        # Fusions below need apex or Transformer Engine kernels; the unfused paths are exact everywhere.
        bias_activation_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        apply_rope_fusion=te,
        gradient_accumulation_fusion=te and importlib.util.find_spec("fused_weight_gradient_mlp_cuda") is not None,
        # Always on: Megatron-Core only tags TP-sharded parameters (which gradient-norm and clipping rely
        # on) inside its initialisation routine, so skipping it would silently miscount norms under TP.
        perform_initialization=True,
        init_method_std=init_std,
        recompute_granularity="full" if full else None,
        recompute_method="uniform" if full else None,
        recompute_num_layers=1 if full else None,
        **moe_options,
    )


def transformer_config(
    arch: ModelArch, layout: Layout, dtype: torch.dtype = torch.float32, **options
) -> TransformerConfig:
    """Megatron's ``TransformerConfig`` of ``arch`` (options: :func:`transformer_config_kwargs`)."""
    return TransformerConfig(**transformer_config_kwargs(arch, layout, dtype, **options))


def layer_spec(arch: ModelArch, transformer_impl: TransformerImpl = "local") -> ModuleSpec:
    """The layer spec: Transformer Engine's fused modules, or Megatron's local modules with SDPA attention."""
    if transformer_impl == "transformer_engine":
        try:
            import transformer_engine  # noqa: F401
        except ImportError:
            raise ImportError(
                "transformer_impl=transformer_engine needs Transformer Engine: "
                "bash tools/install_transformer_engine.sh (docs/gpu.md), or use "
                "transformer_impl=local"
            ) from None
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        return get_gpt_layer_with_transformer_engine_spec(
            num_experts=arch.moe.num_experts if arch.moe else None,
            moe_grouped_gemm=arch.moe is not None,
            qk_layernorm=arch.qk_norm,
        )
    if transformer_impl != "local":
        raise ValueError(f"transformer_impl={transformer_impl!r}; expected 'local' or 'transformer_engine'")
    if arch.moe is not None:
        allow_moe_without_transformer_engine()
    spec = get_gpt_layer_local_spec(
        num_experts=arch.moe.num_experts if arch.moe else None, qk_layernorm=arch.qk_norm, normalization="RMSNorm"
    )
    spec.submodules.self_attention.submodules.core_attention = SdpaAttention
    return spec


def llama3_inv_freq(head_dim: int, theta: float, scaling: RopeScaling) -> torch.Tensor:
    """Llama-3 RoPE frequencies for arbitrary scaling parameters (Megatron-Core hard-codes 1/4/8192)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
    high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def mask_padded_logits(logits: torch.Tensor, vocab_size: int, tp_rank: int) -> torch.Tensor:
    """Give padded vocabulary columns of this shard the lowest finite logit: exp() of it is exactly 0 in
    any softmax, it never wins an argmax or a sample, and (unlike -inf) 0 * logit stays 0 in an entropy."""
    shard = logits.shape[-1]
    valid = vocab_size - tp_rank * shard
    if valid >= shard:
        return logits
    return logits.index_fill(
        -1, torch.arange(max(valid, 0), shard, device=logits.device), torch.finfo(logits.dtype).min
    )


def build_gpt_model(
    arch: ModelArch,
    layout: Layout,
    pg_collection,
    *,
    dtype: torch.dtype = torch.float32,
    transformer_impl: TransformerImpl = "local",
    seed: int = 1234,
    recompute: str = "none",
    sequence_parallel: bool = False,
) -> GPTModel:
    """This rank's stage of ``arch`` under ``layout``, on the current device, in ``dtype``.

    ``pg_collection`` carries the model's own TP/PP groups (see ``tgpo_megatron.distributed.parallel``).
    """
    layout.validate_for(arch)
    ep = pg_collection.ep.size() if getattr(pg_collection, "ep", None) is not None else 1
    if (pg_collection.tp.size(), pg_collection.pp.size(), ep) != (layout.tp, layout.pp, layout.ep):
        raise ValueError(
            f"process groups (tp={pg_collection.tp.size()}, pp={pg_collection.pp.size()}, ep={ep}) do not "
            f"match layout (tp={layout.tp}, pp={layout.pp}, ep={layout.ep})"
        )
    config = transformer_config(
        arch, layout, dtype, recompute=recompute, sequence_parallel=sequence_parallel, transformer_impl=transformer_impl
    )
    pp_rank, pp_size = pg_collection.pp.rank(), pg_collection.pp.size()
    seed_model_parallel_rng(seed, pg_collection)
    model = GPTModel(
        config=config,
        transformer_layer_spec=layer_spec(arch, transformer_impl),
        vocab_size=arch.padded_vocab(layout.tp),
        max_sequence_length=arch.max_position_embeddings,
        pre_process=pp_rank == 0,
        post_process=pp_rank == pp_size - 1,
        share_embeddings_and_output_weights=arch.tie_word_embeddings,
        position_embedding_type="rope",
        rotary_base=arch.rope_theta,
        pg_collection=pg_collection,
    )
    if arch.rope_scaling is not None:
        model.rotary_pos_emb.inv_freq = llama3_inv_freq(arch.head_dim, arch.rope_theta, arch.rope_scaling).to(
            model.rotary_pos_emb.inv_freq.device
        )
    if model.post_process:
        tp_rank = pg_collection.tp.rank()

        def _mask_hook(module, inputs, output):
            logits, bias = output
            return mask_padded_logits(logits, arch.vocab_size, tp_rank), bias

        model.output_layer.register_forward_hook(_mask_hook)
    # Megatron's parallel layers allocate on the current device, but modules it takes from torch (the local
    # spec's RMSNorm) allocate on the default one: move the whole stage, as Megatron's own get_model does
    model.cuda(torch.cuda.current_device())
    model.arch = arch
    return model


def build_from_hf(
    hf_dir: str,
    layout: Layout,
    pg_collection,
    *,
    dtype: torch.dtype = torch.float32,
    transformer_impl: TransformerImpl = "local",
    progress: bool = False,
    recompute: str = "none",
    sequence_parallel: bool = False,
    seed: int = 1234,
) -> GPTModel:
    """This rank's stage of the HF model in ``hf_dir``, built for ``layout`` and filled with its weights."""
    model = build_gpt_model(
        load_arch(hf_dir),
        layout,
        pg_collection,
        dtype=dtype,
        transformer_impl=transformer_impl,
        recompute=recompute,
        sequence_parallel=sequence_parallel,
        seed=seed,
    )
    load_hf_weights(model, hf_dir, pg_collection, progress=progress)
    return model


def build_model(config, pg_collection, dtype: torch.dtype, seed: int) -> GPTModel:
    """The stage a recipe's model section (:class:`~tgpo_megatron.config.ModelConfig`) describes: the HF
    weights, or a Megatron checkpoint's when ``config.checkpoint`` is set. ``seed`` seeds Megatron's RNG
    tracker (the run's seed: the weights themselves are loaded)."""
    from tgpo_megatron.models.checkpoint import load_model

    options = dict(
        dtype=dtype,
        transformer_impl=config.transformer_impl,
        recompute=config.recompute,
        sequence_parallel=config.sequence_parallel,
        seed=seed,
    )
    if not config.checkpoint:
        return build_from_hf(config.hf_path, config.layout, pg_collection, **options)
    model = build_gpt_model(load_arch(config.hf_path), config.layout, pg_collection, **options)
    load_model(model, config.checkpoint)
    return model
