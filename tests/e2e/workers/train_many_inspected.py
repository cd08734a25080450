"""`tgpo train-many` with the process groups and the runs' models watched, for the tests of what one run leaves
to the next and of the communicators' warm-up. Nothing it records changes what the runs compute.

    torchrun --nproc-per-node 2 train_many_inspected.py --inspect OUT runs.json

Each rank writes ``OUT.<rank>.json``, per run:
- ``warmed``: the groups ``warm_up_communicators`` made communicate (ranks, as lists);
- ``used_after_warm_up``: the groups any collective used from then until the run ended, except those the
  rollout engine created for itself (vLLM sizes its memory with its own communicators in place);
- ``groups_at_start``: how many process groups existed when the run's set-up began;
- ``previous_models_alive``: whether the previous run's student and teacher models were still alive then;
- ``chunk_tokens``: the loss-head chunk each pass used (the teacher's statistics, the student's old log-probs,
  the training loss).
"""

import argparse
import functools
import json
import os
import sys
import weakref

import torch.distributed as dist

import tgpo_megatron.losses.compute as compute
import tgpo_megatron.services as services
import tgpo_megatron.student as student
import tgpo_megatron.teacher as teacher
import tgpo_megatron.trainer as trainer
from tgpo_megatron import train_many

COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "reduce_scatter_tensor",
    "broadcast",
    "reduce",
    "all_to_all_single",
    "send",
    "recv",
    "barrier",
    "all_gather_object",
    "broadcast_object_list",
    "gather_object",
    "batch_isend_irecv",
    "_reduce_scatter_base",
    "_all_gather_base",
    "all_to_all",
    "gather",
    "scatter",
)


def jsonable(value):
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, set):
        return sorted(list(v) if isinstance(v, tuple) else v for v in value)
    return value


def group_map() -> dict:
    return dict(dist.distributed_c10d._world.pg_map)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--inspect", required=True)
    args, argv = parser.parse_known_args()
    runs, state = [], {"recording": False, "engine_groups": set(), "models": []}

    def ranks(group) -> list:
        return dist.get_process_group_ranks(group or dist.group.WORLD)

    def record(name, original):
        @functools.wraps(original)
        def collective(*a, **kw):
            if state["recording"]:
                if name == "batch_isend_irecv":
                    groups = [op.group for op in a[0]]
                else:
                    groups = [kw.get("group")]
                for group in groups:
                    group = group or dist.group.WORLD
                    if group not in state["engine_groups"]:
                        runs[-1]["used_after_warm_up"].add(tuple(ranks(group)) + (id(group),))
            return original(*a, **kw)

        return collective

    for name in COLLECTIVES:
        setattr(dist, name, record(name, getattr(dist, name)))

    def chunk_of(pass_name, module, function):
        original = getattr(module, function)

        @functools.wraps(original)
        def recorded(*a, **kw):
            runs[-1]["chunk_tokens"].setdefault(pass_name, set()).add(kw["chunk_tokens"])
            return original(*a, **kw)

        setattr(module, function, recorded)

    chunk_of("teacher", teacher, "teacher_stats")
    chunk_of("old log-probs", student, "token_stats")
    chunk_of("loss", compute, "token_stats")
    new_group = dist.new_group

    def watched_new_group(*a, **kw):
        group = new_group(*a, **kw)
        if state["recording"] and group in group_map():
            frame = sys._getframe(1)
            while frame.f_back is not None and "/torch/" in frame.f_code.co_filename:
                frame = frame.f_back
            where = f"{frame.f_code.co_filename.rsplit('site-packages/', 1)[-1]}:{frame.f_lineno}"
            runs[-1]["created_after_warm_up"].add((where,))
        return group

    dist.new_group = watched_new_group

    setup, warm_up, engine_for = trainer.setup, trainer.warm_up_communicators, services.Services.engine_for

    def watched_setup(config, svc):
        state["recording"] = False
        alive = [ref() is not None for ref in state["models"]]
        runs.append(
            {
                "groups_at_start": len(group_map()),
                "previous_models_alive": alive,
                "warmed": set(),
                "used_after_warm_up": set(),
                "created_after_warm_up": set(),
                "chunk_tokens": {},
            }
        )
        c = setup(config, svc)
        state["models"] = [weakref.ref(c.student.model)] + ([weakref.ref(c.teacher.model)] if c.teacher else [])
        return c

    def watched_warm_up(groups, device, pipelines=()):
        warmed = []
        all_reduce, batch_isend_irecv = dist.all_reduce, dist.batch_isend_irecv

        def counting_all_reduce(tensor, *a, **kw):
            warmed.append(kw.get("group") or dist.group.WORLD)
            return all_reduce(tensor, *a, **kw)

        def counting_batch(ops):
            warmed.extend(op.group for op in ops)
            return batch_isend_irecv(ops)

        dist.all_reduce, dist.batch_isend_irecv = counting_all_reduce, counting_batch
        try:
            warm_up(groups, device, pipelines)
        finally:
            dist.all_reduce, dist.batch_isend_irecv = all_reduce, batch_isend_irecv
        runs[-1]["warmed"] = {tuple(ranks(g)) + (id(g),) for g in warmed}
        state["recording"] = True

    def watched_engine_for(self, config, tokenizer):
        before, recording = set(group_map()), state["recording"]
        state["recording"] = False  # what vLLM does while it starts is measured by vLLM itself
        try:
            engine = engine_for(self, config, tokenizer)
        finally:
            state["recording"] = recording
        state["engine_groups"] |= set(group_map()) - before
        return engine

    trainer.setup, trainer.warm_up_communicators = watched_setup, watched_warm_up
    services.Services.engine_for = watched_engine_for
    code = train_many.main(argv)
    rank = os.environ.get("RANK", "0")  # the engine's teardown destroyed the default group
    with open(f"{args.inspect}.{rank}.json", "w") as f:
        json.dump([{k: jsonable(v) for k, v in run.items()} for run in runs], f)
    sys.exit(code)


if __name__ == "__main__":
    main()
