"""The teacher's labels, the student's old log-probs and one update, with the communicators' warm-up, on a
simulated accelerator (tests/simulated_accelerator.py): a host tensor meeting a device tensor, or a host
tensor in a collective, raises as it would on a GPU.

    torchrun --nproc-per-node 2 device_worker.py --hf DIR --out RESULT.json [--faults ,KIND,...]

Student at TP=2 and at PP=2 (teacher at TP=1: two replicas), packed micro-batches. Each name of ``--faults``
is one pass of the whole check in this launch, in turn; the empty name is the real code, each other puts back
a bug of one kind the check exists for (undone when its pass ends): ``unmoved`` runs the schedule on host
micro-batches (no move to the model's device), ``host_collective`` all-reduces a host token count as the
trainer's update once did, ``stage_on_host`` leaves the modules Megatron takes from torch (the local spec's
RMSNorm) on the host. Every rank meets each bug at the same point, so a pass that fails leaves no collective
waiting.
"""

import argparse
import contextlib
import json
import os
import sys
from unittest import mock

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))

from tests.simulated_accelerator import SIMULATED, simulated_accelerator  # noqa: E402


def bug(fault: str) -> list:
    """The ``mock.patch.object`` contexts that put back the bug ``fault`` names."""
    import tgpo_megatron.models.pipeline as pipeline

    if fault == "stage_on_host":
        from megatron.core.models.gpt import GPTModel

        return [mock.patch.object(GPTModel, "cuda", lambda self, *args, **kwargs: self)]
    if fault == "unmoved":

        def run_on_host(model, pg, forward_step, mbs, *, forward_only):
            rows, width = mbs[0].tokens.shape
            model.config.variable_seq_lengths = len({tuple(mb.tokens.shape) for mb in mbs}) > 1
            return pipeline.forward_backward(
                model, pg, forward_step, mbs, seq_length=width, micro_batch_size=rows, forward_only=forward_only
            )

        return [mock.patch.object(pipeline, "run_micro_batches", run_on_host)]
    return []


def run(hf: str, fault: str, accelerator, platform) -> dict:
    import torch.distributed as dist

    from tgpo_megatron.batching import Rollout, attach
    from tgpo_megatron.config import ModelConfig, TrainerConfig
    from tgpo_megatron.config.layouts import Layout
    from tgpo_megatron.distributed.parallel import (
        initialize_global_parallel,
        model_process_groups,
        warm_up_communicators,
    )
    from tgpo_megatron.losses import LossConfig, compute_loss
    from tgpo_megatron.student import Student
    from tgpo_megatron.teacher import Teacher

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
        attach(rollouts, teacher.label(rollouts, seed=0))
        mini_batch = student.plan(rollouts)
        for r, (logp,) in zip(mini_batch.local, student.token_logprobs([mini_batch])):
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

        metrics = student.train_step(mini_batch, ["old_logp", "teacher_ids"], loss_fn)
        host_reads = {}  # of one update, with the mini-batch in one micro-batch and in several
        for budget in (4096, 16):
            student.token_budget, before = budget, accelerator.host_reads.copy()
            mini_batch = student.plan(rollouts)
            student.train_step(mini_batch, ["old_logp", "teacher_ids"], loss_fn)
            micro = len(mini_batch.micro_batches)
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
    p.add_argument("--faults", default="")
    args = p.parse_args()
    with simulated_accelerator() as accelerator:
        import torch.distributed as dist

        from tgpo_megatron.distributed.parallel import destroy_global_parallel
        from tgpo_megatron.distributed.platform import Platform, init_distributed

        platform = init_distributed(Platform(SIMULATED, "gloo"))
        results = {}
        for fault in args.faults.split(","):
            with contextlib.ExitStack() as patches:
                for patch in bug(fault):
                    patches.enter_context(patch)
                try:
                    results[fault] = {"ok": True, **run(args.hf, fault, accelerator, platform)}
                except Exception as e:  # the test reads which check fired
                    results[fault] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            destroy_global_parallel()
    if dist.get_rank() == 0:
        with open(args.out, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main()
