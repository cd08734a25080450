"""avg@n, pass@1 and pass@n on fixed fake generations, with numbers worked out by hand."""

import json
from pathlib import Path

import pytest

from tgpo_megatron.config import DataConfig, EvalConfig
from tgpo_megatron.data import load_prompts
from tgpo_megatron.data.synthetic import problem_rows, sample_problems, write_rows
from tgpo_megatron.data.tokenizer import ResponseDecoder, build_char_tokenizer, load_tokenizer
from tgpo_megatron.eval import evaluate, summarize, write_report
from tgpo_megatron.rewards import RewardScorer
from tgpo_megatron.rollout import Completion


def test_summary_by_hand():
    rewards = [[1, 0, 0, 1], [0, 0, 0, 0], [0, 1, 1, 1]]
    s = summarize("toy", rewards, lengths=[[10, 20, 30, 40]] * 3, finishes=[["stop", "length", "stop", "stop"]] * 3)
    assert s["avg@4"] == pytest.approx(5 / 12)  # 5 correct of 12 samples
    assert s["pass@1"] == pytest.approx(1 / 3)  # first samples: 1, 0, 0
    assert s["pass@4"] == pytest.approx(2 / 3)  # problems 1 and 3 have a correct sample
    assert s["mean_response_tokens"] == 25 and s["truncated"] == 0.25
    with pytest.raises(ValueError, match="same, non-zero number of samples"):
        summarize("ragged", [[1, 0], [1]])


class FakeEngine:
    """Returns fixed texts: sample j of problem i is right when plan[i][j] is 1."""

    def __init__(self, tokenizer, problems, plan):
        self.tokenizer, self.problems, self.plan, self.calls = tokenizer, problems, plan, []

    def generate(self, prompts, sampling):
        self.calls.append((len(prompts), sampling.n, sampling.temperature, sampling.seed))
        out = []
        for prompt in prompts:
            i = next(
                k
                for k, p in enumerate(self.problems)
                if self.tokenizer.decode(prompt).endswith(f"{p.prompt}<|assistant|><think>\n")
            )
            texts = [self.problems[i].solution() if ok else "no idea</think>\\boxed{7}" for ok in self.plan[i]]
            out.append(
                [Completion(self.tokenizer(t, add_special_tokens=False)["input_ids"] + [1], [], "stop") for t in texts]
            )
        return out


def test_evaluate_scores_generations_with_the_real_reward(tmp_path):
    tokenizer = load_tokenizer(build_char_tokenizer(str(tmp_path / "tok")))
    problems = sample_problems(3, seed=4)
    ds = load_prompts(
        [write_rows(problem_rows(problems), str(tmp_path / "e.jsonl"))], tokenizer, DataConfig(system_prompt=None)
    )
    engine = FakeEngine(tokenizer, problems, [[1, 1], [0, 1], [0, 0]])
    scorer = RewardScorer(workers=1)
    try:
        (result,) = evaluate(
            engine, ResponseDecoder(tokenizer, [1]), [("add3", 2, ds, "math")], EvalConfig(), scorer, progress=False
        )
    finally:
        scorer.close()
    assert engine.calls == [(3, 2, 0.6, 0)]  # the LUFFY decoding temperature
    assert result["avg@2"] == pytest.approx(3 / 6) and result["pass@1"] == pytest.approx(1 / 3)
    assert result["pass@2"] == pytest.approx(2 / 3) and result["truncated"] == 0.0
    json_path, md_path = write_report([result], str(tmp_path / "out"), step=20)
    assert json.loads(Path(json_path).read_text())["step"] == 20
    assert "| add3 | 3 | 2 | 50.0 | 33.3 | 66.7 |" in Path(md_path).read_text()


def test_an_extra_judge_scores_the_same_responses_as_its_own_set(tmp_path):
    """extra_judges: the multiple-choice judge and the authors' math judge on one set of generations."""
    tokenizer = load_tokenizer(build_char_tokenizer(str(tmp_path / "tok")))
    problems = sample_problems(2, seed=4)
    ds = load_prompts(
        [write_rows(problem_rows(problems), str(tmp_path / "e.jsonl"))], tokenizer, DataConfig(system_prompt=None)
    )
    engine = FakeEngine(tokenizer, problems, [[1], [0]])
    scorer = RewardScorer(workers=1)
    try:
        results = evaluate(
            engine,
            ResponseDecoder(tokenizer, [1]),
            [("add3", 1, ds, ["choice", "math"])],
            EvalConfig(),
            scorer,
            progress=False,
        )
    finally:
        scorer.close()
    assert len(engine.calls) == 1  # generated once, judged twice
    assert [r["dataset"] for r in results] == ["add3", "add3.math"]
    assert results[0]["pass@1"] == 0.0  # no letter anywhere: the choice judge credits nothing
    assert results[1]["pass@1"] == pytest.approx(1 / 2)  # the math judge: the first solution is right


class CountingEngine:
    """Records the size of every call; every sample is wrong."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, sampling):
        self.calls.append((len(prompts), sampling.seed))
        return [[Completion([1], [], "stop")] * sampling.n for _ in prompts]


@pytest.mark.parametrize("n, calls", [(1, [(600, 0)]), (32, [(64, 0), (64, 64), (64, 128), (64, 192)])])
def test_evaluate_generates_thousands_of_samples_per_engine_call(tmp_path, n, calls):
    """A call waits for its longest response: 600 problems at n=1 are one call (2,048 samples at most), not one
    per 64 problems; problem i keeps seed i whatever call it lands in."""
    tokenizer = load_tokenizer(build_char_tokenizer(str(tmp_path / "tok")))
    problems = sample_problems(600 if n == 1 else 256, seed=4)
    ds = load_prompts(
        [write_rows(problem_rows(problems), str(tmp_path / "e.jsonl"))], tokenizer, DataConfig(system_prompt=None)
    )
    engine, scorer = CountingEngine(), RewardScorer(workers=1)
    try:
        evaluate(
            engine, ResponseDecoder(tokenizer, [1]), [("set", n, ds, "math")], EvalConfig(), scorer, progress=False
        )
    finally:
        scorer.close()
    assert engine.calls == calls
