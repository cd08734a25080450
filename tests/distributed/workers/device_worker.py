"""The teacher's annotate, the student's old log-probs and one update, with the communicators' warm-up, on a
simulated accelerator (tests/simulated_accelerator.py): a host tensor meeting a device tensor, or a host
tensor in a collective, raises as it would on a GPU.

    torchrun --nproc-per-node 2 device_worker.py --hf DIR --out RESULT.json [--fault KIND]

Student at TP=2 and at PP=2 (teacher at TP=1: two replicas), packed micro-batches. ``--fault`` puts back a
bug of each kind the check exists for: ``unmoved`` runs the schedule on host micro-batches (no move to the
model's device), ``host_collective`` all-reduces a host token count as the trainer's update once did,
``stage_on_host`` leaves the modules Megatron takes from torch (the local spec's RMSNorm) on the host.
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))

from tests.simulated_accelerator import SIMULATED, simulated_accelerator  # noqa: E402


def run(hf: str, fault: str, accelerator) -> dict:
    import torch.distributed as dist

    import tgpo_megatron.models.pipeline as pipeline
    from tgpo_megatron.batching import Rollout
    from tgpo_megatron.config import ModelConfig, TrainerConfig
    from tgpo_megatron.config.layouts import Layout
    from tgpo_megatron.distributed.parallel import (
        initialize_global_parallel,
        model_process_groups,
        warm_up_communicators,
    )
    from tgpo_megatron.distributed.platform import Platform, init_distributed
    from tgpo_megatron.losses import LossConfig, compute_loss
    from tgpo_megatron.student import Student
    from tgpo_megatron.teacher import Teacher

    if fault == "stage_on_host":
        from megatron.core.models.gpt import GPTModel

        GPTModel.cuda = lambda self, *args, **kwargs: self
    if fault == "unmoved":

        def run_on_host(model, pg, forward_step, mbs, *, forward_only):
            rows, width = mbs[0].tokens.shape
            model.config.variable_seq_lengths = len({tuple(mb.tokens.shape) for mb in mbs}) > 1
            return pipeline.forward_backward(
                model, pg, forward_step, mbs, seq_length=width, micro_batch_size=rows, forward_only=forward_only
            )

        pipeline.run_micro_batches = run_on_host
    platform = init_distributed(Platform(SIMULATED, "gloo"))
    g = torch.Generator().manual_seed(0)
    result = {}
    for name, layout in (("tp2", Layout(2, 1)), ("pp2", Layout(1, 2))):
        pg = initialize_global_parallel(layout)
        teacher = Teacher(ModelConfig(hf_path=hf), model_process_groups(Layout(1, 1)), torch.float32, 64, offload=False)
        student = Student(
            ModelConfig(hf_path=hf, tp=layout.tp, pp=layout.pp), TrainerConfig(micro_batch_tokens=64), pg, torch.float32
        )
        warm_up_communicators(
            student.groups + teacher.groups + [dist.group.WORLD], platform.device, pipelines=[pg.pp, teacher.pg.pp]
        )
        if fault == "host_collective":
            dist.all_reduce(torch.tensor(1.0, dtype=torch.float64), group=pg.dp)
        rollouts = [
            Rollout(
                torch.randint(1, 200, (4 + i,), generator=g).tolist(),
                torch.randint(1, 200, (3 + 5 * i,), generator=g).tolist(),
                advantage=0.5 - 0.2 * i,
            )
            for i in range(6)
        ]
        teacher.annotate(rollouts, seed=0)
        for r, (logp,) in zip(rollouts, student.token_logprobs(rollouts)):
            r.per_token["old_logp"] = logp

        def loss_fn(logits, batch, normalizer, student=student):
            return compute_loss(
                "tgpo_reg",
                logits,
                batch,
                step=1,
                config=LossConfig(),
                tp_group=student.pg.tp,
                vocab_size=student.vocab_size,
                normalizer=normalizer,
            )

        metrics = student.train_step(rollouts, ["old_logp", "teacher_ids"], loss_fn)
        host_reads = {}  # of one update, with the mini-batch in one micro-batch and in several
        for budget in (4096, 16):
            student.token_budget, before = budget, accelerator.host_reads.copy()
            micro = len(student.plan(rollouts)[0])
            student.train_step(rollouts, ["old_logp", "teacher_ids"], loss_fn)
            host_reads[micro] = dict(accelerator.host_reads - before)
        result[name] = {
            "host_reads_by_micro_batches": host_reads,
            "model_device": str(next(student.model.parameters()).device),
            "results_on_host": all(
                r.per_token[k].device.type == "cpu" for r in rollouts for k in ("teacher_ids", "old_logp")
            ),
            "grad_norm": metrics["optim/grad_norm"],
            "skipped": metrics["optim/skipped"],
        }
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hf", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--fault", default="")
    args = p.parse_args()
    with simulated_accelerator() as accelerator:
        try:
            result = {"ok": True, **run(args.hf, args.fault, accelerator)}
        except Exception as e:  # the test reads which check fired
            result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    import torch.distributed as dist

    if dist.get_rank() == 0:
        with open(args.out, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
