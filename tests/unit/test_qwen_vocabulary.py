"""The authors' token alignment on the real Qwen vocabulary (tests/qwen_vocabulary.py: Qwen2.5-Math-7B student,
Qwen3-30B-A3B-Thinking-2507 teacher, DeepSeek-R1-Distill-Qwen-7B for the collisions). The student's tokenizer is
left as it is, a teacher-only ``</think>`` the student emits is read by the training reward and by ``tgpo eval``,
and ids that mean different text to the two models are refused unless the run opts in."""

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.qwen_vocabulary import write_qwen_model
from tgpo_megatron.config import DataConfig, EvalConfig
from tgpo_megatron.config.validation import check_tokenizers
from tgpo_megatron.data import load_prompts
from tgpo_megatron.data.align import TokenizerMismatchError, align, check_id_collisions
from tgpo_megatron.data.tokenizer import ResponseDecoder, load_tokenizer
from tgpo_megatron.errors import UserError
from tgpo_megatron.eval import evaluate
from tgpo_megatron.rewards import RewardScorer, eval_score, score_response
from tgpo_megatron.rollout import Completion

STUDENT, TEACHER, R1 = "Qwen2.5-Math-7B", "Qwen3-30B-A3B-Thinking-2507", "DeepSeek-R1-Distill-Qwen-7B"
THINK, THINK_END, ENDOFTEXT = 151667, 151668, 151643
QUESTION = {"problem": "What is $1+2$?", "answer": "3"}


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen")
    dirs = {name: write_qwen_model(name, str(root / name)) for name in (STUDENT, TEACHER, R1)}
    align(dirs[STUDENT], dirs[TEACHER], str(root / "student-aligned"), str(root / "teacher-aligned"))
    (root / "q.jsonl").write_text(json.dumps(QUESTION) + "\n")
    return SimpleNamespace(
        root=root,
        dirs=dirs,
        student=str(root / "student-aligned"),
        teacher=str(root / "teacher-aligned"),
        prompts=str(root / "q.jsonl"),
    )


def luffy_prompt(tokenizer, path):
    """The prompt as training reads it: the built-in LUFFY system prompt, the chat template, ``<think>\\n``."""
    (example,) = load_prompts([path], tokenizer, DataConfig()).examples
    return example.prompt_ids


def test_the_student_tokenises_a_luffy_prompt_as_before_alignment(qwen):
    before = load_tokenizer(qwen.dirs[STUDENT])
    after = load_tokenizer(qwen.student)
    ids = luffy_prompt(after, qwen.prompts)
    assert ids == luffy_prompt(before, qwen.prompts)
    assert after("Hello, world!", add_special_tokens=False)["input_ids"] == [9707, 11, 1879, 0]  # Qwen's own ids
    assert THINK not in ids and after.decode(ids).endswith("<|im_start|>assistant\n<think>\n")
    # what a tokenizer with the teacher's <think> makes of the same text: one id the student never trained on
    assert THINK in load_tokenizer(qwen.teacher)(after.decode(ids), add_special_tokens=False)["input_ids"]
    for out in (qwen.student, qwen.teacher):
        config = json.loads(Path(out, "config.json").read_text())
        assert (config["vocab_size"], config["eos_token_id"]) == (152064, ENDOFTEXT)
    report = json.loads(Path(qwen.student, "align_report.json").read_text())
    assert report["teacher_only_tokens"] == {
        "151665": "<tool_response>",
        "151666": "</tool_response>",
        "151667": "<think>",
        "151668": "</think>",
    }
    teacher_tokenizer = load_tokenizer(qwen.teacher)
    assert teacher_tokenizer.eos_token_id == ENDOFTEXT  # unified to the student's EOS, named in its own table
    arch = SimpleNamespace(vocab_size=152064)
    check_tokenizers(after, teacher_tokenizer, arch, arch, ResponseDecoder.for_model(after, qwen.student))
    with pytest.raises(UserError, match="cannot decode the teacher-only tokens"):
        check_tokenizers(after, teacher_tokenizer, arch, arch, ResponseDecoder(after, [ENDOFTEXT]))


class OneResponseEngine:
    def __init__(self, token_ids):
        self.token_ids = token_ids

    def generate(self, prompts, sampling):
        return [[Completion(list(self.token_ids), [], "stop")] * sampling.n for _ in prompts]


def test_a_teacher_only_think_end_is_read_by_the_training_reward_and_by_eval(qwen):
    tokenizer = load_tokenizer(qwen.student)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
    response = encode("One plus two is three.") + [THINK_END] + encode(" The answer is $\\boxed{3}$.") + [ENDOFTEXT]
    decoder = ResponseDecoder.for_model(tokenizer, qwen.student)
    text = decoder.decode(response)
    assert text == "One plus two is three.</think> The answer is $\\boxed{3}$."
    assert score_response(text, "3")[0] == 1.0 and eval_score(text, "3")[0] == 1.0
    # the student's tokenizer alone decodes the teacher's id as nothing, and the training reward then gives 0
    assert score_response(tokenizer.decode(response, skip_special_tokens=True), "3")[0] == 0.0

    dataset = load_prompts([qwen.prompts], tokenizer, DataConfig())
    scorer = RewardScorer(workers=1)
    try:
        (result,) = evaluate(
            OneResponseEngine(response), decoder, [("q", 4, dataset, "math")], EvalConfig(), scorer, progress=False
        )
    finally:
        scorer.close()
    assert result["avg@4"] == 1.0 and result["reasons"] == {"correct": 4}


def test_r1_distill_ids_that_collide_with_qwen25_are_refused_naming_each_unless_allowed(qwen, caplog):
    out_student, out_teacher = str(qwen.root / "s-r1"), str(qwen.root / "t-r1")
    student_table = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|object_ref_start|>",
        "<|object_ref_end|>",
        "<|box_start|>",
        "<|box_end|>",
    ]
    teacher_table = [
        "<｜end▁of▁sentence｜>",
        "<｜User｜>",
        "<｜Assistant｜>",
        "<｜begin▁of▁sentence｜>",
        "<|EOT|>",
        "<think>",
        "</think>",
    ]
    expected = [(ENDOFTEXT + k, s, t) for k, (s, t) in enumerate(zip(student_table, teacher_table))]
    with pytest.raises(TokenizerMismatchError) as err:
        align(qwen.dirs[STUDENT], qwen.dirs[R1], out_student, out_teacher)
    assert str(err.value).startswith("7 ids mean different text to the two models: ")
    for i, mine, theirs in expected:
        assert f"id {i}: {mine!r} (student) vs {theirs!r} (teacher)" in str(err.value)

    result = align(qwen.dirs[STUDENT], qwen.dirs[R1], out_student, out_teacher, allow_id_collisions=True)
    assert result.collisions == expected and result.teacher_only == {}
    with caplog.at_level(logging.WARNING):
        accepted = check_id_collisions(out_teacher, allowed=True)  # what `tgpo train` logs at start
    assert accepted == expected and "7 ids mean different text" in caplog.text
    student, teacher = load_tokenizer(out_student), load_tokenizer(out_teacher)
    assert teacher.eos_token_id == ENDOFTEXT  # R1's own <｜end▁of▁sentence｜> sits at the student's EOS id
    arch = SimpleNamespace(vocab_size=152064)
    decoder = ResponseDecoder.for_model(student, out_student)
    check_tokenizers(student, teacher, arch, arch, decoder, accepted)
    with pytest.raises(UserError, match="sampled ids decode differently"):
        check_tokenizers(student, teacher, arch, arch, decoder)
