"""Synthetic task, tiny tokenizer, prompt datasets and the resumable prompt order."""

import json
import logging

import pytest

from tgpo_megatron.config import DataConfig
from tgpo_megatron.data import PromptSampler, load_prompts
from tgpo_megatron.data.synthetic import Problem, problem_rows, sample_problems, write_rows
from tgpo_megatron.data.tokenizer import build_char_tokenizer, char_vocabulary, load_tokenizer
from tgpo_megatron.errors import UserError
from tgpo_megatron.rewards.math import score_response


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return load_tokenizer(build_char_tokenizer(str(tmp_path_factory.mktemp("tok"))))


def test_scratchpad_worked_by_hand():
    p = Problem(357, 68, 3)
    assert p.prompt == "357+068="
    # 7+8=15 -> 5 carry 1; 5+6+1=12 -> 2 carry 1; 3+0+1=4 -> 4 carry 0
    assert p.scratchpad(",") == "51,21,40"
    assert p.solution(";") == "51;21;40</think>\\boxed{0425}"
    assert p.answer == "425"
    assert Problem(999, 1, 3).solution(",") == "01,01,01</think>\\boxed{1000}"


def test_every_solution_earns_the_reward_and_wrong_ones_do_not():
    for p in sample_problems(50, seed=3, digits=3):
        assert score_response(p.solution(","), p.answer)[0] == 1.0
        wrong = Problem(p.a, (p.b + 1) % 1000, 3)
        if wrong.answer != p.answer:
            assert score_response(wrong.solution(","), p.answer)[0] == 0.0


def test_problems_are_deterministic_distinct_and_respect_exclusions():
    first = sample_problems(200, seed=7, digits=2)
    assert first == sample_problems(200, seed=7, digits=2)
    assert first != sample_problems(200, seed=8, digits=2)
    assert len({(p.a, p.b) for p in first}) == 200
    held_out = sample_problems(100, seed=9, digits=2, exclude=frozenset((p.a, p.b) for p in first))
    assert not {(p.a, p.b) for p in held_out} & {(p.a, p.b) for p in first}
    with pytest.raises(ValueError, match="distinct"):
        sample_problems(101, seed=0, digits=1)


def test_char_tokenizer_round_trips_and_has_a_chat_template(tokenizer):
    text = "357+068=<think>\n51,21,40</think>\\boxed{0425}"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    # the format pieces are single tokens, the digits one token each
    assert len(ids) == len("357+068=") + 2 + len("51,21,40") + 2 + len("0425}")
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "1+2="}], add_generation_prompt=True, tokenize=False
    )
    assert rendered == "<|user|>1+2=<|assistant|>"
    assert tokenizer.eos_token == "<|end|>" and tokenizer.pad_token_id == 0


@pytest.mark.parametrize("ext", ["jsonl", "parquet"])
@pytest.mark.parametrize("layout", ["plain", "verl"])
def test_both_layouts_and_formats_give_the_same_prompts(tmp_path, tokenizer, ext, layout):
    problems = sample_problems(5, seed=1)
    path = write_rows(problem_rows(problems, layout=layout), str(tmp_path / f"d.{ext}"))
    ds = load_prompts([path], tokenizer, DataConfig(system_prompt="Add."))
    assert len(ds) == 5 and not ds.skipped
    assert [e.answer for e in ds.examples] == [p.answer for p in problems]
    assert tokenizer.decode(ds[0].prompt_ids) == f"<|system|>Add.<|user|>{problems[0].prompt}<|assistant|><think>\n"
    assert ds[2].source == f"d.{ext}:3"


def test_a_rows_own_system_message_wins(tmp_path, tokenizer):
    rows = problem_rows(sample_problems(2, seed=1), layout="verl", system_prompt="Mine.")
    ds = load_prompts([write_rows(rows, str(tmp_path / "d.jsonl"))], tokenizer, DataConfig(system_prompt="Other."))
    assert tokenizer.decode(ds[0].prompt_ids).startswith("<|system|>Mine.<|user|>")


def test_malformed_rows_are_skipped_counted_and_logged_with_row_numbers(tmp_path, tokenizer, caplog, fault_row):
    good = {"problem": "1+2=", "answer": "3"}
    lines = [
        json.dumps(good),
        json.dumps({"problem": "1+1="}),
        json.dumps({"problem": 5, "answer": "5"}),
        json.dumps({"problem": "  ", "answer": "1"}),
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"problem": "2+2=", "answer": 4}),
        json.dumps({"problem": "1+" * 40 + "1=", "answer": "41"}),
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        ds = load_prompts([str(path)], tokenizer, DataConfig(system_prompt=None, max_prompt_length=40))
    assert [e.answer for e in ds.examples] == ["3", "4"]  # a numeric answer is accepted as its text
    assert sum(ds.skipped.values()) == 6 and ds.skipped["too long"] == 1
    log = caplog.text
    for number, reason in [
        (2, "missing or empty answer 'answer'"),
        (3, "'problem' must be a string, got int"),
        (4, "'problem' is empty"),
        (5, "not valid JSON"),
        (6, "expected an object, got list"),
    ]:
        assert f"row {number} skipped: {reason}" in log
    fault_row(
        "malformed dataset rows (a missing or non-string field, an empty problem, bad JSON, an over-long prompt)",
        "each skipped, named by file, row and reason, counted in one summary line; training goes on with the rest",
        "those rows",
        None,
    )


def test_a_file_without_usable_rows_is_one_clear_error(tmp_path, tokenizer):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "1+1=", "solution": "2"}) + "\n")
    with pytest.raises(UserError, match=r"bad.jsonl: no usable row .*'problem' must be a string"):
        load_prompts([str(path)], tokenizer, DataConfig())
    with pytest.raises(UserError, match="not found"):
        load_prompts([str(tmp_path / "missing.parquet")], tokenizer, DataConfig())
    (tmp_path / "data.csv").write_text("problem,answer\n1+1=,2\n")
    with pytest.raises(UserError, match=".parquet or .jsonl"):
        load_prompts([str(tmp_path / "data.csv")], tokenizer, DataConfig())


def test_verl_rows_need_a_ground_truth(tmp_path, tokenizer):
    rows = problem_rows(sample_problems(3, seed=1), layout="verl")
    del rows[1]["reward_model"]["ground_truth"]
    rows[2]["prompt"] = [{"role": "system", "content": "x"}]
    ds = load_prompts([write_rows(rows, str(tmp_path / "d.jsonl"))], tokenizer, DataConfig(schema="verl"))
    assert len(ds) == 1
    assert ds.skipped == {
        "missing or empty answer 'reward_model.ground_truth'": 1,
        "'prompt' has no non-empty user message": 1,
    }


def test_sampler_resumes_the_same_order_and_shards_it():
    full = PromptSampler(num_examples=10, batch_size=4, seed=5)
    batches = [full.next_batch() for _ in range(6)]
    # an epoch yields two batches of 4 (the tail of 2 is dropped); every batch is distinct within an epoch
    assert len(set(batches[0]) | set(batches[1])) == 8
    assert batches[0:2] != batches[2:4]  # a new permutation per epoch
    resumed = PromptSampler(num_examples=10, batch_size=4, seed=5)
    for _ in range(3):
        resumed.next_batch()
    state = resumed.state_dict()
    restored = PromptSampler(num_examples=10, batch_size=4, seed=5)
    restored.load_state_dict(state)
    assert [restored.next_batch() for _ in range(3)] == batches[3:]
    with pytest.raises(UserError, match="batch_size=4, this run 8"):
        PromptSampler(num_examples=10, batch_size=8, seed=5).load_state_dict(state)


def test_response_prefix_is_appended_once(tokenizer, caplog):
    from tgpo_megatron.data import render_prompt

    messages = [{"role": "user", "content": "1+2="}]
    assert render_prompt(tokenizer, messages, "<think>\n") == "<|user|>1+2=<|assistant|><think>\n"
    opens_thoughts = load_tokenizer(tokenizer.name_or_path)  # a copy whose template opens the thoughts itself
    opens_thoughts.chat_template = tokenizer.chat_template.replace("<|assistant|>", "<|assistant|><think>\n")
    with caplog.at_level(logging.WARNING):
        assert render_prompt(opens_thoughts, messages, "<think>\n") == "<|user|>1+2=<|assistant|><think>\n"
    assert "already ends with '<think>'" in caplog.text


def test_luffy_system_prompt_has_newlines_not_backslashes():
    from tgpo_megatron.config import LUFFY_SYSTEM_PROMPT

    assert '"<think>\n {thoughts} </think>\n"' in LUFFY_SYSTEM_PROMPT and "\\n" not in LUFFY_SYSTEM_PROMPT


def test_a_tokenizer_loads_as_its_tokenizer_json_says_beside_any_model_config(tmp_path):
    """transformers 5's AutoTokenizer would rebuild the character tokenizer as Qwen2's byte-level one next to
    a qwen2 config.json, and drop every space and newline."""
    from tgpo_megatron.models.tiny import save_tiny_hf_model

    save_tiny_hf_model(str(tmp_path), "qwen2", vocab_size=len(char_vocabulary()), eos_token_id=1)
    tokenizer = load_tokenizer(build_char_tokenizer(str(tmp_path)))
    ids = tokenizer("1 + 2\n<think>\n", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == "1 + 2\n<think>\n" and len(ids) == 8


def test_derived_seeds_are_deterministic_distinct_and_in_range():
    from tgpo_megatron.seeds import derive_seed

    seeds = {
        (purpose, step): derive_seed(7, purpose, step)
        for purpose in ("rollout", "teacher-sample", "prompt-order")
        for step in range(1000)
    }
    assert len(set(seeds.values())) == len(seeds)  # no two streams coincide
    assert all(0 <= s < 2**31 for s in seeds.values())
    assert derive_seed(7, "rollout", 3) == seeds[("rollout", 3)] != derive_seed(8, "rollout", 3)
