"""Core attention for the local (non-Transformer-Engine) layer spec, on torch SDPA.

Megatron-Core's own local ``DotProductAttention`` allocates its score buffer through a CUDA-only global
memory buffer and materialises ``[b, heads, s, s]`` scores. This module is a drop-in ``core_attention``
with the same constructor and ``forward`` contract, backed by ``scaled_dot_product_attention``, which picks
flash/memory-efficient kernels on GPU and runs on CPU too.

Packed sequences (Megatron's THD format: ``[t, heads, head_dim]`` and ``cu_seqlens``) run one causal SDPA
call per sequence, which costs Σ L_i² and keeps the flash kernels; a block-diagonal mask over the whole row
would cost T² and, on GPU, force the kernels that materialise the mask (docs/benchmarks.md compares them).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig


class SdpaAttention(MegatronModule):
    """Causal self-attention over ``[s, b, heads, head_dim]`` query/key/value (GQA without copies)."""

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: Optional[float] = None,
        softmax_scale: Optional[float] = None,
        cp_comm_type: Optional[str] = None,
        pg_collection=None,
    ):
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise ValueError("context parallelism needs transformer_impl=transformer_engine")
        tp_size = pg_collection.tp.size() if pg_collection is not None else config.tensor_model_parallel_size
        self.heads_per_partition = config.num_attention_heads // tp_size
        self.attn_mask_type = attn_mask_type
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout
        self.softmax_scale = softmax_scale

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        attn_mask_type: Optional[AttnMaskType] = None,
        attention_bias: Optional[torch.Tensor] = None,
        packed_seq_params=None,
    ) -> torch.Tensor:
        if attention_bias is not None:
            raise NotImplementedError("attention bias needs transformer_impl=transformer_engine")
        if packed_seq_params is not None:
            return self._packed(query, key, value, packed_seq_params)
        seq, batch = query.shape[0], query.shape[1]
        # [s, b, h, d] -> [b, h, s, d]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        mask_type = attn_mask_type or self.attn_mask_type
        mask = None
        if attention_mask is not None:
            # Megatron masks are True where attention is forbidden; SDPA wants True where it is allowed.
            mask = ~attention_mask.bool()
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=mask is None and mask_type == AttnMaskType.causal,
            scale=self.softmax_scale,
            enable_gqa=k.shape[1] != q.shape[1],
        )
        # [b, h, s, d] -> [s, b, h*d]
        return out.permute(2, 0, 1, 3).reshape(seq, batch, -1)

    def _packed(self, query, key, value, params) -> torch.Tensor:
        """``[t, h, d]`` packed query/key/value -> ``[t, h*d]``, attention within each sequence."""
        if params.qkv_format != "thd":
            raise NotImplementedError(f"packed format {params.qkv_format!r}; only 'thd' is supported")
        bounds = getattr(params, "host_cu_seqlens", None) or params.cu_seqlens_q.tolist()
        outputs = []
        for start, end in zip(bounds[:-1], bounds[1:]):
            # [L, h, d] -> [1, h, L, d]
            q, k, v = (t[start:end].transpose(0, 1).unsqueeze(0) for t in (query, key, value))
            out = F.scaled_dot_product_attention(
                q,
                k,
                v,
                dropout_p=self.dropout if self.training else 0.0,
                is_causal=True,
                scale=self.softmax_scale,
                enable_gqa=k.shape[1] != q.shape[1],
            )
            outputs.append(out.squeeze(0).transpose(0, 1))
        return torch.cat(outputs).reshape(query.shape[0], -1)
