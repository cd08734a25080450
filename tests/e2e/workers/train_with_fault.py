"""`tgpo train` with a fault injected, for the robustness tests.

    torchrun --nproc-per-node 2 train_with_fault.py --fault kill_in_save:3 --config R.yaml [overrides]
    torchrun --nproc-per-node 2 train_with_fault.py --fault nan_loss:2 --config R.yaml [overrides]

kill_in_save:N  SIGKILLs every rank in the middle of the N-th checkpoint write (after the tensors are
                written into the temporary directory, before it is renamed and `latest` replaced);
kill_after_save:N  SIGKILLs every rank as soon as the N-th checkpoint is complete;
nan_loss:K      makes the loss NaN from step K on;
nan_logits:R:K  puts a NaN into the student's logits on rank R only, at step K only;
nan_teacher:R:K puts a NaN into the teacher's logits on rank R only, at step K only;
bad_teacher_id:R:K makes the teacher's argmax id of one token, on rank R only, at step K only, an id
                outside the vocabulary.
"""

import argparse
import os
import signal
import sys

import torch.distributed as dist

import tgpo_megatron.run.checkpoints as checkpointing
import tgpo_megatron.teacher as teacher
import tgpo_megatron.trainer as trainer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fault", required=True)
    args, argv = parser.parse_known_args()
    kind, value = args.fault.split(":", 1)
    if kind == "kill_in_save":
        saves, rng_state = [0], checkpointing.rng_state

        def die_on_nth_save():  # called by the save once the student's tensors are written
            saves[0] += 1
            if saves[0] == int(value):
                os.kill(os.getpid(), signal.SIGKILL)
            return rng_state()

        checkpointing.rng_state = die_on_nth_save
    elif kind == "kill_after_save":
        saves, save = [0], checkpointing.Checkpoints.save

        def die_after_nth_save(self, *args, **kwargs):
            path = save(self, *args, **kwargs)
            saves[0] += 1
            if saves[0] == int(value):
                os.kill(os.getpid(), signal.SIGKILL)
            return path

        checkpointing.Checkpoints.save = die_after_nth_save
    elif kind == "nan_loss":
        compute_loss = trainer.compute_loss

        def nan_from_step(*args, step, **kwargs):
            loss, metrics = compute_loss(*args, step=step, **kwargs)
            return (loss * float("nan") if step >= int(value) else loss), metrics

        trainer.compute_loss = nan_from_step
    elif kind == "nan_logits":
        rank, at_step = map(int, value.split(":"))
        compute_loss = trainer.compute_loss

        def nan_on_one_rank(algorithm, logits, *args, step, **kwargs):
            if step == at_step and dist.get_rank() == rank:
                logits = logits.clone()
                logits[..., -1, 0] = float("nan")  # the last position of a packed row: a response token
            return compute_loss(algorithm, logits, *args, step=step, **kwargs)

        trainer.compute_loss = nan_on_one_rank
    elif kind in ("nan_teacher", "bad_teacher_id"):
        rank, at_step = map(int, value.split(":"))
        teacher_stats, calls = teacher.teacher_stats, [0]
        annotate = teacher.Teacher.annotate

        def count_steps(self, *args, **kwargs):
            calls[0] += 1
            return annotate(self, *args, **kwargs)

        def fault_on_one_rank(logits, **kwargs):
            now = calls[0] == at_step and dist.get_rank() == rank
            if now and kind == "nan_teacher":
                logits = logits.clone()
                logits[..., -1, 0] = float("nan")  # the last position of a packed row: a response token
            stats = teacher_stats(logits, **kwargs)
            if now and kind == "bad_teacher_id":
                stats.argmax_ids[..., -1] = kwargs["vocab_size"]
            return stats

        teacher.Teacher.annotate, teacher.teacher_stats = count_steps, fault_on_one_rank
    else:
        raise SystemExit(f"unknown fault {kind}")
    sys.exit(trainer.main(argv))


if __name__ == "__main__":
    main()
