"""Which weights each step's rollouts come from (rollout.pipeline), on an engine that writes its weights' version
into every token it samples: staleness 0 and 1, the batch a checkpoint holds, and the checks on both sides'
counts."""

import io

import pytest
import torch

from tgpo_megatron.rollout.base import Completion, SamplingSpec
from tgpo_megatron.rollout.pipeline import RolloutPipeline
from tgpo_megatron.rollout.remote import Report


class VersionedEngine:
    """Answers each prompt with tokens [weights, prompt id] and log-probs that no float32 holds exactly."""

    def __init__(self):
        self.weights, self.loads, self.orders = 0, 0, []
        self.last_report, self.collect_wait_s, self._order = None, 0.0, None

    def generate(self, prompts, sampling):
        self.submit(prompts, sampling)
        return self.collect()

    def submit(self, prompts, sampling):
        assert self._order is None, "an order in progress"
        self.orders.append((prompts[0][0], self.weights))
        self._order = (
            [
                [Completion([self.weights, p[0], s], [-0.1 * (s + 1) / 3, -1 / 7, 1e-300], "stop") for s in range(2)]
                for p in prompts
            ],
            Report(self.loads, 0.5, 0.25),
        )

    def collect(self):
        (completions, self.last_report), self._order = self._order, None
        return completions

    def update_weights(self, version):
        assert self._order is None, "a refit while generating"
        self.weights, self.loads = version, self.loads + 1


def order(step):
    """Step k's prompts: rows 10k and 10k + 1."""
    rows = [10 * step, 10 * step + 1]
    return rows, [[row] for row in rows], SamplingSpec(n=2, seed=step)


def train(pipeline, engine, steps, start=0):
    """The trainer's calls, step by step: take, (update), collect, refit."""
    batches = []
    for step in range(start + 1, start + steps + 1):
        batches.append(pipeline.take(step))
        pipeline.collect()
        engine.update_weights(step)
        pipeline.refitted(step)
    return batches


def started(max_staleness, version=0):
    engine = VersionedEngine()
    pipeline = RolloutPipeline(engine, max_staleness, order)
    engine.update_weights(version)  # the run's first refit
    pipeline.refitted(version)
    return engine, pipeline


@pytest.mark.parametrize("max_staleness", [0, 1])
def test_each_batch_comes_from_the_weights_it_says(max_staleness):
    engine, pipeline = started(max_staleness)
    batches = train(pipeline, engine, 4)
    versions = [0, 1, 2, 3] if max_staleness == 0 else [0, 0, 1, 2]
    assert [b.version for b in batches] == versions
    staleness = [0, 0, 0, 0] if max_staleness == 0 else [0, 1, 1, 1]
    assert [b.metrics()["rollout/staleness"] for b in batches] == staleness
    for b in batches:  # the tokens carry the weights that really sampled them
        assert all(c.token_ids[0] == b.version for group in b.completions for c in group)
        assert b.indices == [10 * b.step, 10 * b.step + 1]
        assert b.metrics()["timing/rollout_generate"] == 0.5
    ordered = [1, 2, 3, 4] if max_staleness == 0 else [1, 2, 3, 4, 5]  # one step ahead, the last one too
    assert [prompt // 10 for prompt, _ in engine.orders] == ordered


def test_a_checkpointed_batch_resumes_exactly():
    engine, pipeline = started(1)
    reference = train(pipeline, engine, 4)
    engine, pipeline = started(1)
    train(pipeline, engine, 2)
    buffer = io.BytesIO()
    torch.save(pipeline.state_dict(), buffer)  # as a checkpoint holds it
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    engine, resumed = started(1, version=2)  # a new job: the engine refit with the checkpoint's weights
    resumed.load_state_dict(state)
    batches = train(resumed, engine, 2, start=2)
    for got, want in zip(batches, reference[2:]):
        assert (got.step, got.indices, got.version, got.completions) == (
            want.step,
            want.indices,
            want.version,
            want.completions,
        )  # the log-probs to the last bit


def test_a_batch_for_another_step_or_weights_out_of_step_are_errors():
    engine, pipeline = started(1)
    pipeline.take(1)
    pipeline.collect()
    with pytest.raises(RuntimeError, match="collected for step 2 were asked for step 3"):
        pipeline.take(3)
    engine, pipeline = started(1)
    engine.loads += 1  # the rollout ranks count a weight stream the training ranks did not send
    with pytest.raises(RuntimeError, match="out of step"):
        pipeline.take(1)


def test_no_checkpoint_state_without_a_batch_in_hand():
    engine, pipeline = started(0)
    train(pipeline, engine, 1)
    assert pipeline.state_dict() is None
