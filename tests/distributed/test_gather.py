"""models.pipeline.gather_rollout_values, which hands the teacher's ids and the student's log-probs to the ranks
that need them: bit-exact for every dtype and shape the trainer sends, with non-sending and non-holding ranks, an
empty rollout and a subgroup (3 gloo processes)."""

import re

from tests.distributed.conftest import torchrun


def test_every_rank_gets_each_rollouts_values_bit_exact():
    run = torchrun("gather_worker.py", nproc=3)
    # the ranks' lines may interleave in the shared stdout
    passed = set(re.findall(r"rank (\d): (.+?) ok", run.stdout))
    assert len(passed) == 3 * 4 + 2, run.stdout[-3000:]
