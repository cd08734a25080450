"""Checkpoint conversion between Hugging Face directories and Megatron distributed checkpoints.

Both directions go through the bridge, so they use exactly the mapping that training and the vLLM refit
use. A Megatron checkpoint stores global tensors and loads at any TP/PP, so converting on one process is
enough unless the model does not fit in one process's memory; then run under torchrun with tp * pp ranks
(or ep * pp for a mixture of experts).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os

import torch.distributed as dist

from tgpo_megatron.cli import command_parser
from tgpo_megatron.config.arch import load_arch
from tgpo_megatron.config.layouts import Layout
from tgpo_megatron.distributed.parallel import initialize_global_parallel
from tgpo_megatron.distributed.platform import init_distributed, torch_dtype
from tgpo_megatron.errors import exit_on_user_error
from tgpo_megatron.models import build_from_hf
from tgpo_megatron.models.bridge import export_hf_weights
from tgpo_megatron.models.builder import build_gpt_model
from tgpo_megatron.models.checkpoint import ARCH_FILE, load_checkpoint_arch, load_model, save_model
from tgpo_megatron.models.hf_export import write_hf_checkpoint

logger = logging.getLogger(__name__)

HF_TO_MEGATRON = """Convert a Hugging Face model directory into a Megatron distributed checkpoint.

    python tools/convert_hf_to_megatron.py --hf /models/Qwen2.5-Math-7B --out ckpt/qwen7b
    torchrun --nproc-per-node 4 tools/convert_hf_to_megatron.py --hf /models/Llama-3.3-70B \\
        --out ckpt/llama70b --tp 4 --dtype bfloat16

The checkpoint loads at any TP/PP/EP; --tp/--pp/--ep only choose how the conversion itself is sharded (a
mixture of experts too large for one process: --ep N on N ranks, each reading only its experts).
Training can also start from the HF directory directly; converting first saves the HF read at start-up.
"""

MEGATRON_TO_HF = """Convert a Megatron checkpoint into a Hugging Face directory: a training checkpoint as `tgpo train`
writes it, or a model checkpoint directory (`tgpo convert-hf-to-megatron`'s, or a training checkpoint's student).

    python tools/convert_megatron_to_hf.py --ckpt runs/x/checkpoints/iter_0000300 --out hf/
    python tools/convert_megatron_to_hf.py --ckpt ckpt/qwen7b --out hf/ --tokenizer /models/Qwen2.5-Math-7B

Writes sharded safetensors, config.json, generation_config.json and the tokenizer files (a training checkpoint
carries its own; --tokenizer takes them from another directory), so that transformers and vLLM load the
directory as it is.
"""


def model_checkpoint_of(path: str) -> str:
    """``path`` if it is a model checkpoint; else the one model checkpoint among its subdirectories (a training
    checkpoint holds the student's, beside its RNG states); else ``path``, whose check then names the problem."""
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, ARCH_FILE)):
        inside = [os.path.join(path, d) for d in sorted(os.listdir(path))]
        models = [d for d in inside if os.path.isfile(os.path.join(d, ARCH_FILE))]
        if len(models) == 1:
            return models[0]
    return path


def _parser(usage: str) -> argparse.ArgumentParser:
    p = command_parser(None, usage)
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size of this conversion run (default 1)")
    p.add_argument("--pp", type=int, default=1, help="pipeline-parallel size of this conversion run (default 1)")
    p.add_argument(
        "--ep",
        type=int,
        default=1,
        help="expert-parallel size of this conversion run (mixture-of-experts models; default 1)",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="dtype of the converted weights (default float32)",
    )
    return p


def _setup(args, arch):
    """Validate the layout against the model, then start the process groups for it."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    layout = Layout(args.tp, args.pp, args.ep)
    layout.validate_for(arch)
    init_distributed()
    layout.validate_for(arch, dist.get_world_size())
    return layout, initialize_global_parallel(layout)


@exit_on_user_error
def hf_to_megatron_main(argv=None) -> int:
    p = _parser(HF_TO_MEGATRON)
    p.add_argument("--hf", required=True, help="Hugging Face model directory (config.json + safetensors)")
    p.add_argument("--out", required=True, help="output checkpoint directory")
    args = p.parse_args(argv)
    arch = load_arch(args.hf)
    layout, pg = _setup(args, arch)
    model = build_from_hf(args.hf, layout, pg, dtype=torch_dtype(args.dtype), progress=dist.get_rank() == 0)
    save_model(model, args.out)
    if dist.get_rank() == 0:
        logger.info("wrote %s (%s, %d layers)", args.out, arch.family, arch.num_layers)
    dist.destroy_process_group()
    return 0


@exit_on_user_error
def megatron_to_hf_main(argv=None) -> int:
    p = _parser(MEGATRON_TO_HF)
    p.add_argument("--ckpt", required=True, help="a training checkpoint (iter_N) or a model checkpoint directory")
    p.add_argument("--out", required=True, help="output Hugging Face directory")
    p.add_argument(
        "--tokenizer", help="directory whose tokenizer files are copied next to the weights (default: the checkpoint's)"
    )
    p.add_argument("--max-shard-gb", type=float, default=4.0, help="safetensors shard size (default 4 GB)")
    args = p.parse_args(argv)
    ckpt = model_checkpoint_of(args.ckpt)
    arch = load_checkpoint_arch(ckpt)
    layout, pg = _setup(args, arch)
    dtype = torch_dtype(args.dtype)
    model = build_gpt_model(arch, layout, pg, dtype=dtype)
    load_model(model, ckpt)
    rank0 = dist.get_rank() == 0
    write_hf_checkpoint(
        export_hf_weights(model, pg),
        args.out,
        dataclasses.replace(arch, torch_dtype=args.dtype),
        tokenizer_dir=args.tokenizer or ckpt,
        max_shard_bytes=int(args.max_shard_gb * 1024**3),
        write=rank0,
        progress=rank0,
    )
    if rank0:
        logger.info("wrote %s", args.out)
    dist.barrier()
    dist.destroy_process_group()
    return 0
