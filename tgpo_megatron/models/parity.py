"""Logits parity between our Megatron-Core models and Hugging Face transformers (``tgpo check-parity``)."""

from __future__ import annotations

import json
from typing import Optional

import torch
import torch.distributed as dist

from tgpo_megatron.batching import MicroBatch
from tgpo_megatron.cli import command_parser
from tgpo_megatron.config.arch import load_arch
from tgpo_megatron.config.layouts import Layout
from tgpo_megatron.distributed.parallel import initialize_global_parallel
from tgpo_megatron.distributed.platform import init_distributed, torch_dtype
from tgpo_megatron.errors import exit_on_user_error
from tgpo_megatron.models import build_from_hf
from tgpo_megatron.models.builder import build_gpt_model
from tgpo_megatron.models.checkpoint import check_checkpoint_dir, load_model
from tgpo_megatron.models.pipeline import collect_forward


def fixed_batch(vocab_size: int, batch: int = 2, seq: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab_size, (batch, seq), generator=torch.Generator().manual_seed(seed))


def gather_vocab(logits_shard: torch.Tensor, tp_group, vocab_size: int) -> torch.Tensor:
    """Full-vocabulary logits from TP shards, padding dropped (for checks, never in training paths)."""
    parts = [torch.empty_like(logits_shard) for _ in range(tp_group.size())]
    dist.all_gather(parts, logits_shard.contiguous(), group=tp_group)
    return torch.cat(parts, dim=-1)[..., :vocab_size]


def megatron_logits(model, pg_collection, tokens: torch.Tensor, packed: bool = False) -> torch.Tensor:
    """Full ``[b, s, V]`` logits of ``tokens`` on every rank of the model's TP x PP grid (on its device).
    ``packed``: the b sequences run as one packed row (THD: attention within each, positions restarting), the
    layout every training pass uses."""
    device = next(model.parameters()).device
    rows, width = tokens.shape
    if packed:
        bounds = tuple(range(0, rows * width + 1, width))
        row = tokens.reshape(1, -1)
        batch = MicroBatch(
            row,
            torch.arange(width).repeat(rows).reshape(1, -1),
            labels=row,
            loss_mask=torch.zeros(row.shape),
            values={},
            advantages=torch.zeros(row.shape),
            spans=[],
            cu_seqlens=torch.tensor(bounds, dtype=torch.int32),
            max_seqlen=width,
            bounds=bounds,
        )
    else:
        batch = MicroBatch(
            tokens,
            torch.arange(width).expand_as(tokens),
            labels=tokens,
            loss_mask=torch.zeros(tokens.shape),
            values={},
            advantages=torch.zeros(tokens.shape),
            spans=[],
        )
    outputs = collect_forward(
        model,
        pg_collection,
        [batch],
        lambda logits, mb: (
            gather_vocab(logits, pg_collection.tp, model.arch.vocab_size).float().reshape(rows, width, -1).contiguous()
        ),
    )
    pp = pg_collection.pp
    full: Optional[torch.Tensor] = outputs[0].to(device) if outputs else None
    if pp.size() > 1:
        if full is None:
            full = torch.empty(*tokens.shape, model.arch.vocab_size, device=device)
        dist.broadcast(full, src=dist.get_global_rank(pp, pp.size() - 1), group=pp)
    return full


def hf_logits(
    hf_dir: str, tokens: torch.Tensor, dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None
) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=dtype).to(device or "cpu").eval()
    with torch.no_grad():
        return model(tokens.to(model.device)).logits.float()


USAGE = """Compare our Megatron-Core model's logits with Hugging Face transformers on a fixed batch.

Builds the model described by an HF directory at the given tensor/pipeline sizes, fills it from the HF
safetensors (or from a Megatron checkpoint with --megatron), runs a fixed random batch through Megatron's
pipeline schedule, and prints the largest absolute logit difference against transformers. Exits 1 when the
difference exceeds --tolerance, so it can gate a conversion or a new model family.

    torchrun --nproc-per-node 2 tools/check_parity.py --hf /models/Qwen2.5-1.5B --tp 2 --pp 1
    torchrun --nproc-per-node 8 tools/check_parity.py --hf /models/Qwen3-30B-A3B-Thinking-2507 --ep 8 \
        --dtype bfloat16
    torchrun --nproc-per-node 2 tools/check_parity.py --hf /models/Qwen2.5-1.5B \
        --megatron ckpt/student --tp 1 --pp 2
"""


def default_tolerance(dtype: torch.dtype, transformer_impl: str) -> float:
    """The largest |Δlogit| against transformers that passes. Transformer Engine runs fp32 GEMMs as TF32
    (``transformer_engine/common/gemm/cublaslt_gemm.cu``): about 3-6e-3 on the tiny models, where the local
    spec's true fp32 is within 1e-4 (``NVIDIA_TF32_OVERRIDE=0`` turns TF32 off; tests/gpu/run_all.sh sets it).
    bf16, the dtype training runs in, is the gate for both."""
    if dtype == torch.float32:
        return 1e-2 if transformer_impl == "transformer_engine" else 1e-4
    return 0.1


def parse_args(argv=None):
    p = command_parser(None, USAGE)
    p.add_argument("--hf", required=True, help="Hugging Face model directory (config.json + safetensors)")
    p.add_argument("--megatron", help="Megatron checkpoint to load instead of the HF weights")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size (default 1)")
    p.add_argument("--pp", type=int, default=1, help="pipeline-parallel size (default 1)")
    p.add_argument("--ep", type=int, default=1, help="expert-parallel size (mixture-of-experts models; default 1)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="compute dtype")
    p.add_argument("--transformer-impl", default="local", choices=["local", "transformer_engine"])
    p.add_argument("--packed", action="store_true", help="run the batch as one packed row (THD), as training does")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=32)
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="max allowed |Δlogit| (default 1e-4 in float32, 1e-2 with TE's TF32 GEMMs, 0.1 in bfloat16)",
    )
    p.add_argument("--json", help="also write the result as JSON to this path (rank 0)")
    return p.parse_args(argv)


@exit_on_user_error
def main(argv=None) -> int:
    args = parse_args(argv)
    dtype = torch_dtype(args.dtype)
    tolerance = args.tolerance if args.tolerance is not None else default_tolerance(dtype, args.transformer_impl)
    # Everything that can be wrong with the input is checked before any process group exists.
    arch = load_arch(args.hf)
    layout = Layout(args.tp, args.pp, args.ep)
    layout.validate_for(arch)
    if args.megatron:
        check_checkpoint_dir(args.megatron)
    platform = init_distributed()
    layout.validate_for(arch, dist.get_world_size())
    pg = initialize_global_parallel(layout)
    if args.megatron:
        model = build_gpt_model(arch, layout, pg, dtype=dtype, transformer_impl=args.transformer_impl)
        load_model(model, args.megatron)
    else:
        model = build_from_hf(args.hf, layout, pg, dtype=dtype, transformer_impl=args.transformer_impl)
    model.to(platform.device).eval()
    tokens = fixed_batch(arch.vocab_size, args.batch, args.seq)
    ours = megatron_logits(model, pg, tokens, packed=args.packed)
    status = 0
    if dist.get_rank() == 0:
        ref = hf_logits(args.hf, tokens, dtype, platform.device)
        diff = (ours.to(ref.device) - ref).abs().max().item()
        ok = diff <= tolerance
        print(
            f"max |Δlogit| = {diff:.3e} (tolerance {tolerance:.1e}, tp={args.tp}, pp={args.pp}, ep={args.ep}, "
            f"{args.dtype}, {args.transformer_impl}{', packed' if args.packed else ''}, {platform.device.type}): "
            f"{'OK' if ok else 'FAIL'}",
            flush=True,
        )
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"max_abs_diff": diff, "tolerance": tolerance, "ok": ok}, f)
        status = 0 if ok else 1
    flag = torch.tensor([status], device=platform.device)  # NCCL groups take device tensors only
    dist.broadcast(flag, src=0)
    dist.destroy_process_group()
    return int(flag.item())
