"""`tools/prepare_data.py filter` end to end: vLLM generates with a tiny teacher, the training judge keeps the
prompts it solves, and the kept rows carry its solution as the off-policy trace training reads."""

import json
import os

import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file, save_file

from tests.e2e.conftest import char_model, run_cli
from tgpo_megatron.config import DataConfig
from tgpo_megatron.data import load_prompts
from tgpo_megatron.data.synthetic import write_rows
from tgpo_megatron.data.tokenizer import EOS, char_vocabulary, load_tokenizer
from tgpo_megatron.prepare_data import with_reference

TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "prepare_data.py")
SOLUTION = "</think>\\boxed{7}"


def answering_teacher(path) -> str:
    """A tiny teacher that answers every prompt with ``</think>\\boxed{7}``: its layers write nothing to the
    residual stream (zero output projections), so each next token depends on the current one alone, and the
    embeddings chain the prompt's last token ("\\n") to that answer and EOS."""
    char_model(path, seed=5)
    vocab = {t: i for i, t in enumerate(char_vocabulary())}
    weights = load_file(str(path / "model.safetensors"))
    for name, tensor in weights.items():
        if name.endswith(("o_proj.weight", "down_proj.weight", "lm_head.weight", "embed_tokens.weight")):
            tensor.zero_()
    weights["model.norm.weight"] = torch.ones_like(weights["model.norm.weight"])
    chain = ["\n", "</think>", "\\boxed{", "7", "}", EOS]
    for k, (current, following) in enumerate(zip(chain, chain[1:])):
        weights["model.embed_tokens.weight"][vocab[current], k] = 1.0
        weights["lm_head.weight"][vocab[following], k] = 30.0
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    return str(path)


def verl_row(problem, answer):
    return {
        "data_source": "openr1",
        "prompt": [{"role": "user", "content": problem}],
        "reward_model": {"style": "rule", "ground_truth": answer},
    }


def test_the_prompts_the_teacher_solves_are_kept_with_its_solution(tmp_path):
    teacher = answering_teacher(tmp_path / "teacher")
    rows = [
        verl_row("3+4=?", "7"),
        verl_row("1+1=?", "2"),
        verl_row("5+2=?", "7"),
        {"data_source": "openr1", "prompt": []},
    ]  # unusable: skipped and counted, as training would
    source = write_rows(rows, str(tmp_path / "train.parquet"))
    out = tmp_path / "kept.parquet"
    run = run_cli(
        TOOL,
        "filter",
        "--input",
        source,
        "--teacher",
        teacher,
        "--out",
        out,
        "--max-tokens",
        "12",
        "data.system_prompt=null",
        "rollout.kv_cache_gb=0.0625",
        "rollout.enforce_eager=true",
        "reward.workers=1",
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "kept 2 of 3 prompts (1 rows skipped" in run.stdout
    kept = pq.read_table(str(out)).to_pylist()
    assert [r["prompt"][0]["content"] for r in kept] == ["3+4=?", "5+2=?"]
    assert all(r["target"] == [{"role": "assistant", "content": SOLUTION}] for r in kept)
    tokenizer = load_tokenizer(teacher)
    examples = load_prompts([str(out)], tokenizer, DataConfig(system_prompt=None)).examples
    assert [(e.answer, e.target) for e in examples] == [("7", SOLUTION), ("7", SOLUTION)]


def test_plain_rows_get_the_solution_in_the_response_column():
    row = {"problem": "3+4=?", "answer": "7"}
    assert with_reference(row, SOLUTION, "plain", "solution") == {**row, "solution": SOLUTION}
    assert (
        json.dumps(with_reference(verl_row("q", "1"), "s", "verl", "solution")["target"])
        == '[{"role": "assistant", "content": "s"}]'
    )
