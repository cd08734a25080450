"""One optimizer step of a tiny model through Megatron-Core's DDP, optimizer and pipeline schedule on CPU.

    torchrun --nproc-per-node 2 train_step_worker.py --hf DIR --out RESULT.pt NAME=TP,PP,OPTIMIZER ...

For each layout in turn (OPTIMIZER: megatron or distributed), in one launch: the loss, the gradient norm and the
updated weights (as HF tensors, gathered), so the test can compare layouts.
"""

import argparse

import torch
import torch.distributed as dist
from megatron.core import tensor_parallel
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

from tgpo_megatron.config.layouts import Layout
from tgpo_megatron.distributed.parallel import destroy_global_parallel, initialize_global_parallel
from tgpo_megatron.distributed.platform import init_distributed
from tgpo_megatron.models import build_from_hf, export_hf_weights
from tgpo_megatron.models.pipeline import forward_backward


def one_step(hf: str, layout: Layout, distributed: bool) -> dict:
    pg = initialize_global_parallel(layout)
    model = build_from_hf(hf, layout, pg)
    ddp = DistributedDataParallel(
        config=model.config,
        ddp_config=DistributedDataParallelConfig(grad_reduce_in_fp32=True, use_distributed_optimizer=distributed),
        module=model,
    )
    optimizer = get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam",
            lr=1.0,
            adam_eps=1.0,
            weight_decay=0.0,
            clip_grad=1.0,
            use_distributed_optimizer=distributed,
            bf16=False,
            params_dtype=torch.float32,
        ),
        [ddp],
    )
    model.config.finalize_model_grads_func = finalize_model_grads
    model.config.no_sync_func = ddp.no_sync
    model.config.grad_scale_func = optimizer.scale_loss

    # The same 4 sequences on every layout; each data-parallel rank takes its share as micro-batches of 1.
    tokens = torch.randint(0, model.arch.vocab_size, (4, 16), generator=torch.Generator().manual_seed(0))
    dp_rank, dp = pg.dp.rank(), pg.dp.size()
    mine = tokens[dp_rank::dp]
    microbatches = [{"tokens": mine[i : i + 1]} for i in range(mine.shape[0])]
    positions = torch.arange(15).unsqueeze(0)

    def step(mb, m):
        logits = m(mb["tokens"][:, :-1], positions, None)

        def loss_func(logits):
            nll = tensor_parallel.vocab_parallel_cross_entropy(logits.float(), mb["tokens"][:, 1:])
            # Mean over all 4 * 15 predicted tokens of the global batch, as one big batch would have it:
            # Megatron divides each micro-batch loss by their number and DDP averages over DP; undo both.
            return nll.sum() * dp * len(microbatches) / 60.0, {"loss": nll.sum().detach() / 60.0}

        return logits, loss_func

    ddp.zero_grad_buffer()
    optimizer.zero_grad()
    losses = forward_backward(ddp, pg, step, microbatches, seq_length=15, micro_batch_size=1, forward_only=False)
    ok, grad_norm, _ = optimizer.step()
    loss = torch.tensor(sum(float(out["loss"]) for out in losses), dtype=torch.float64)
    dist.all_reduce(loss)  # last-stage ranks of each DP replica hold the loss; others contribute 0
    weights = {name: t.clone() for name, t in export_hf_weights(model, pg)}
    result = {"loss": loss.item() / pg.tp.size(), "grad_norm": float(grad_norm), "ok": bool(ok), "weights": weights}
    destroy_global_parallel()
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hf", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("layouts", nargs="+", help="NAME=TP,PP,OPTIMIZER")
    args = p.parse_args()
    init_distributed()
    results = {}
    for spec in args.layouts:
        name, value = spec.split("=")
        tp, pp, optimizer = value.split(",")
        results[name] = one_step(args.hf, Layout(int(tp), int(pp)), distributed=optimizer == "distributed")
    if dist.get_rank() == 0:
        torch.save(results, args.out)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
