"""The objective library on a vocabulary sharded over TP ranks against the same computation unsharded.

    torchrun --nproc-per-node N loss_tp_worker.py --out RESULT.json

Every rank holds its V/N columns of the same logits; rank 0 gathers the gradient shards and compares loss,
gradient and the teacher statistics with TP=1 computed in the same process.
"""

import argparse
import json
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))
from tests.unit.test_correction import TP_CASES, batch_weights  # noqa: E402
from tests.unit.test_losses import CONFIG, V_PADDED, V, make_batch  # noqa: E402
from tgpo_megatron.losses import ALGORITHMS, LOSS_AGG_MODES, compute_loss, loss_aggregation, teacher_stats  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    args = p.parse_args()
    dist.init_process_group("gloo")
    tp, rank = dist.get_world_size(), dist.get_rank()
    group = dist.group.WORLD
    width = V_PADDED // tp
    mine = slice(rank * width, (rank + 1) * width)
    logits, batch = make_batch(seed=3)
    result = {"tp": tp, "loss_diff": {}, "grad_diff": {}, "metric_diff": {}}
    cases = {algorithm: (algorithm, batch, None) for algorithm in sorted(ALGORITHMS)}
    mask = batch["loss_mask"]
    for mode in LOSS_AGG_MODES:  # tgpo_reg under each loss aggregation: weighted masks, its normalizer
        weights, normalizer = loss_aggregation(mode, [int(n) for n in mask.sum(-1)], 12)
        cases[mode] = ("tgpo_reg", dict(batch, loss_mask=mask * torch.tensor(weights)[:, None]), normalizer)
    engine = batch["old_logp"] + 0.4 * torch.randn(batch["old_logp"].shape, generator=torch.Generator().manual_seed(7))
    for mode, algorithm in TP_CASES.items():  # the engine-mismatch correction's weights on the policy term
        cases[f"{mode}:{algorithm}"] = (
            algorithm,
            dict(batch, correction_weight=batch_weights(batch, engine, mode)[0]),
            None,
        )
    for name, (algorithm, case_batch, normalizer) in cases.items():
        shard = logits[..., mine].clone().requires_grad_()
        loss, metrics = compute_loss(
            algorithm, shard, case_batch, step=2, config=CONFIG, tp_group=group, vocab_size=V, normalizer=normalizer
        )
        loss.backward()
        grads = [torch.empty_like(shard.grad) for _ in range(tp)]
        dist.all_gather(grads, shard.grad)
        full = logits.clone().requires_grad_()
        ref_loss, ref_metrics = compute_loss(
            algorithm, full, case_batch, step=2, config=CONFIG, vocab_size=V, normalizer=normalizer
        )
        ref_loss.backward()
        result["loss_diff"][name] = abs(loss.item() - ref_loss.item())
        result["grad_diff"][name] = (torch.cat(grads, -1) - full.grad).abs().max().item()
        result["metric_diff"][name] = max(abs(metrics[k].item() - ref_metrics[k].item()) for k in ref_metrics)

    teacher_logits = logits.float()  # the teacher path in fp32, as it runs in training
    kwargs = dict(
        vocab_size=V, ids=[batch["labels"].clamp(min=0)], topk=5, sample_temperature=0.7, seed=11, chunk_tokens=5
    )
    sharded = teacher_stats(teacher_logits[..., mine], tp_group=group, **kwargs)
    unsharded = teacher_stats(teacher_logits, **kwargs)
    result["teacher"] = {
        "argmax_equal": torch.equal(sharded.argmax_ids, unsharded.argmax_ids),
        "argmax_is_true_argmax": torch.equal(unsharded.argmax_ids, teacher_logits[..., :V].argmax(-1)),
        "topk_ids_equal": torch.equal(sharded.topk_ids, unsharded.topk_ids),
        "topk_is_true_topk": torch.equal(unsharded.topk_ids, teacher_logits[..., :V].topk(5, -1).indices),
        "topk_probs_diff": (sharded.topk_probs - unsharded.topk_probs).abs().max().item(),
        "sample_equal": torch.equal(sharded.sampled_ids, unsharded.sampled_ids),
        "sample_in_vocab": bool((sharded.sampled_ids < V).all()),
        "logp_diff": (sharded.token_logps[0] - unsharded.token_logps[0]).abs().max().item(),
    }
    if rank == 0:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
