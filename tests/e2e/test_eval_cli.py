"""`tgpo eval` end to end: a recipe, a tiny model with the character tokenizer, vLLM, the reward, the report."""

import json

from tests.e2e.conftest import run_cli
from tgpo_megatron.data.synthetic import problem_rows, sample_problems, write_rows
from tgpo_megatron.data.tokenizer import EOS


def test_tgpo_eval_writes_the_report(tmp_path, char_models):
    model = char_models["a"]
    write_rows(problem_rows(sample_problems(6, seed=2, digits=2)), str(tmp_path / "add2.parquet"))
    write_rows(problem_rows(sample_problems(4, seed=3, digits=3)), str(tmp_path / "add3.jsonl"))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
student: {{hf_path: {model}}}
data: {{system_prompt: null}}
rollout: {{kv_cache_gb: 0.0625, enforce_eager: true}}
eval:
  max_tokens: 16
  datasets:
    - {{name: add2, path: {tmp_path / "add2.parquet"}, n: 3}}
    - {{name: add3, path: {tmp_path / "add3.jsonl"}, n: 1}}
""")
    run = run_cli("-m", "tgpo_megatron.cli", "eval", "--config", recipe, "--out", tmp_path / "out", "reward.workers=1")
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads((tmp_path / "out" / "eval.json").read_text())["results"]
    assert [(r["dataset"], r["problems"], r["n"]) for r in report] == [("add2", 6, 3), ("add3", 4, 1)]
    for r in report:
        n = r["n"]
        assert 0.0 <= r[f"avg@{n}"] <= r[f"pass@{n}"] <= 1.0 and 0 < r["mean_response_tokens"] <= 16
        assert sum(r["reasons"].values()) == r["problems"] * n  # every sample was scored and given a reason
    assert "| add2 | 6 | 3 |" in run.stdout and EOS not in run.stdout


def test_tgpo_eval_rejects_a_recipe_typo(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("eval:\n  temprature: 0.6\n")
    run = run_cli("-m", "tgpo_megatron.cli", "eval", "--config", recipe, timeout=120)
    assert run.returncode == 2
    assert "unknown config key 'eval.temprature' (did you mean eval.temperature?)" in run.stderr
