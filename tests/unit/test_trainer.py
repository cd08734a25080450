"""The trainer's pure phases: the mini-batch split, the loss aggregation's weights, LUFFY's off-policy trace; its
exit codes."""

import os

import pytest
import torch

from tgpo_megatron.batching import MiniBatch, Rollout
from tgpo_megatron.data.prompts import PromptExample
from tgpo_megatron.data.tokenizer import build_char_tokenizer, load_tokenizer
from tgpo_megatron.errors import EXIT_CRASH, TrainingDiverged, UserError
from tgpo_megatron.run.loop import StopRequested
from tgpo_megatron.trainer import aggregate, off_policy_trace, reward_metrics, split_mini_batches

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def rollouts(lengths, weight=None):
    return [
        Rollout(
            prompt=[1, 2],
            response=list(range(3, 3 + n)),
            per_token={} if weight is None else {"loss_weight": torch.full((n,), weight)},
        )
        for n in lengths
    ]


def test_mini_batches_are_consecutive_groups_of_the_step():
    step = rollouts([1, 2, 3, 4, 5, 6])
    groups = split_mini_batches(step, 2)
    assert [[len(r.response) for r in g] for g in groups] == [[1, 2, 3], [4, 5, 6]]


def whole(step: list[Rollout]) -> MiniBatch:
    """The step as one mini-batch, in one micro-batch."""
    return MiniBatch(step, [list(range(len(step)))])


def test_token_mean_leaves_the_rollouts_and_the_normalizer_to_the_student():
    mini_batch = whole(rollouts([2, 4]))
    assert aggregate(mini_batch, "token-mean", "batch", 8, 1) == (mini_batch, None)


@pytest.mark.parametrize(
    "mode, weights, normalizer, entropy",
    [  # the entropy weight: normalizer / tokens, so that it is a token mean (times k·W/n = 1/2 for sum-norm)
        ("seq-mean-token-mean", [0.5, 0.25], 2.0, 2 / 6),
        ("seq-mean-token-sum", [1.0, 1.0], 2.0, 2 / 6),
        ("seq-mean-token-sum-norm", [0.125, 0.125], 2.0, 2 / 6 / 2),
    ],
)
def test_aggregation_weights_land_in_the_loss_weights(mode, weights, normalizer, entropy):
    mini_batch = whole(rollouts([2, 4]))
    weighted, n = aggregate(mini_batch, mode, "batch", 8, 1)
    assert n == normalizer and weighted.micro_batches == mini_batch.micro_batches
    for r, w in zip(weighted.rollouts, weights):
        assert torch.equal(r.per_token["loss_weight"], torch.full((len(r.response),), w))
        torch.testing.assert_close(r.per_token["entropy_weight"], torch.full((len(r.response),), entropy))
    assert all("loss_weight" not in r.per_token for r in mini_batch.rollouts)  # the step's are not modified
    # a weight already there (supervised masking) is multiplied, not replaced; a lone 4-token rollout gets
    # the 4-token rollout's weight above
    again, _ = aggregate(whole(rollouts([4], weight=0.5)), mode, "batch", 8, 1)
    (again,) = again.rollouts
    assert torch.equal(again.per_token["loss_weight"], torch.full((4,), 0.5 * weights[1]))


def test_micro_batch_sum_weights_each_micro_batch_by_its_own_tokens():
    """The authors' scale on a rank that computes rollouts 0 and 2 (one micro-batch each) of 2 ranks: each
    rollout's tokens weigh 1 / (its micro-batch's tokens x ranks); rollout 1 is another rank's."""
    mini_batch = MiniBatch(rollouts([2, 4, 5]), [[0], [2]])
    weighted, n = aggregate(mini_batch, "token-mean", "micro-batch-sum", 8, 2)
    assert n == 1.0
    for r, w in zip(weighted.rollouts, [1 / 4, 0.0, 1 / 10]):
        assert torch.equal(r.per_token["loss_weight"], torch.full((len(r.response),), w))
        assert torch.equal(r.per_token["entropy_weight"], torch.full((len(r.response),), w))


def test_evaluation_schedule_skips_final_only_sets():
    from tgpo_megatron.config import EvalConfig, EvalDataset
    from tgpo_megatron.trainer import eval_due

    math = EvalDataset(name="math500", path="m.parquet")
    final_only = EvalDataset(name="mmlu_pro", path="p.parquet", judge="choice", during_training=False)
    assert eval_due(EvalConfig(datasets=[math, final_only], every_n_steps=20), 40)
    assert not eval_due(EvalConfig(datasets=[math], every_n_steps=20), 30)
    assert not eval_due(EvalConfig(datasets=[final_only], every_n_steps=20), 40)
    assert not eval_due(EvalConfig(datasets=[math], every_n_steps=0), 40)


def test_an_off_policy_trace_is_the_rows_solution_with_eos_cut_at_the_budget(tmp_path):
    tokenizer = load_tokenizer(build_char_tokenizer(str(tmp_path / "tok")))
    example = PromptExample([5, 6], "7", "rows.jsonl:3", target="3+4</think>\\boxed{7}")
    solution = tokenizer("3+4</think>\\boxed{7}", add_special_tokens=False)["input_ids"]
    whole = off_policy_trace(example, tokenizer, max_tokens=64)
    assert (whole.prompt, whole.response, whole.answer) == ([5, 6], solution + [tokenizer.eos_token_id], "7")
    assert whole.finish_reason == "stop" and whole.engine_logprobs == []
    cut = off_policy_trace(example, tokenizer, max_tokens=len(solution))
    assert cut.response == solution and cut.finish_reason == "length"


def test_a_trace_that_opens_its_thoughts_again_is_stripped_of_the_prefix(tmp_path):
    """Every prompt already ends with data.response_prefix: a dataset trace that starts with it (an R1 trace's
    ``<think>\n``) loses it, as the authors strip it; one that does not is kept whole."""
    from tgpo_megatron.config import DataConfig
    from tgpo_megatron.data import load_prompts
    from tgpo_megatron.data.synthetic import write_rows

    tokenizer = load_tokenizer(build_char_tokenizer(str(tmp_path / "tok")))
    rows = [
        {"problem": "1+2=", "answer": "3", "solution": "<think>\n1+2</think>\\boxed{3}"},
        {"problem": "2+2=", "answer": "4", "solution": "2+2</think>\\boxed{4}"},
    ]
    dataset = load_prompts([write_rows(rows, str(tmp_path / "rows.jsonl"))], tokenizer, DataConfig(system_prompt=None))
    assert [e.target for e in dataset.examples] == ["1+2</think>\\boxed{3}", "2+2</think>\\boxed{4}"]
    assert tokenizer.decode(dataset.examples[0].prompt_ids).endswith("<think>\n")


@pytest.mark.parametrize(
    "raised, code",
    [
        (None, 0),
        (StopRequested("stopped after step 1 on request"), 75),
        (TrainingDiverged("2 non-finite"), 3),
        (UserError("teacher.pp=3 does not divide"), 2),
        (RuntimeError("a bug"), 1),
    ],
)
def test_tgpo_train_exits_with_the_code_of_its_outcome_and_records_it(tmp_path, monkeypatch, raised, code):
    """The codes of tgpo_megatron/errors.py, written where the Slurm job reads them (torchrun reports 1)."""
    import tgpo_megatron.trainer as trainer

    def fake_train(config):
        if raised is not None:
            raise raised

    monkeypatch.setattr(trainer, "train", fake_train)
    argv = ["--config", os.path.join(ROOT, "examples", "recipes", "tiny_cpu.yaml"), f"trainer.output_dir={tmp_path}"]
    if code == EXIT_CRASH:  # a crash keeps its traceback
        with pytest.raises(RuntimeError, match="a bug"):
            trainer.main(argv)
    else:
        assert trainer.main(argv) == code
    assert (tmp_path / "exit_code").read_text() == f"{code}\n"


def test_reward_metrics_of_a_step_from_every_ranks_verdicts():
    rewards = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]  # 3 prompts x 3 rollouts: all right, none, mixed
    metrics = reward_metrics(rewards, [{"correct": 3, "wrong": 2}, {"correct": 1, "no_think_end": 3}], 3)
    assert metrics == pytest.approx(
        {
            "reward/mean": 4 / 9,
            "reward/all_correct": 1 / 3,
            "reward/none_correct": 1 / 3,
            "reward/reason/correct": 4 / 9,
            "reward/reason/no_think_end": 3 / 9,
            "reward/reason/wrong": 2 / 9,
        }
    )
