"""align_tokenizer: one family with different added tokens aligns; a Qwen-style vs Llama-style pair refuses."""

import json
import logging
import re

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tests import qwen_vocabulary
from tgpo_megatron.data.align import TokenizerMismatchError, align, check_id_collisions, main
from tgpo_megatron.models.tiny import save_tiny_hf_model

CORPUS = [
    "the teacher guides the student through every token of its own rollout",
    "two plus three is five and seven minus four is three",
    "think step by step then answer",
] * 20


# The first added tokens after the base vocabulary (ids 151643-151652 in the real models), from the published
# tables in tests/qwen_vocabulary.py: Qwen2.5 (and Qwen2.5-Math) and DeepSeek-R1-Distill-Qwen.
QWEN25_ADDED = tuple(text for text, _ in qwen_vocabulary.QWEN25_ADDED[:10])
R1_DISTILL_ADDED = tuple(text for text, _ in qwen_vocabulary.R1_DISTILL_ADDED[:10])


def qwen_style(out, extra_added=(), added=QWEN25_ADDED[:3]):
    """Byte-level BPE ('Ġ' for spaces) with Qwen's special tokens after the base vocabulary."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, initial_alphabet=alphabet, show_progress=False))
    tok.add_special_tokens([*added, *extra_added])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=added[min(2, len(added) - 1)], pad_token=added[0])
    hf.save_pretrained(out)
    return tok


def llama_style(out):
    """Metaspace BPE ('▁' for spaces) with <unk>, <s>, </s> at ids 0-2."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(
        CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    )
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>").save_pretrained(out)
    return tok


def model_dir(path, tok, vocab_size, eos):
    save_tiny_hf_model(
        str(path),
        "qwen2",
        vocab_size=vocab_size,
        eos_token_id=eos,
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    return str(path)


def test_one_family_differing_only_in_added_tokens_is_aligned(tmp_path):
    s_tok = qwen_style(tmp_path / "student")
    t_tok = qwen_style(tmp_path / "teacher", extra_added=("<think>", "</think>"))
    n = s_tok.get_vocab_size()
    student = model_dir(tmp_path / "student", s_tok, n, eos=s_tok.token_to_id("<|im_end|>"))
    teacher = model_dir(tmp_path / "teacher", t_tok, n + 8, eos=t_tok.token_to_id("<|endoftext|>"))
    result = align(student, teacher, str(tmp_path / "s_out"), str(tmp_path / "t_out"))

    think = t_tok.token_to_id("<think>")
    assert result.vocab_size == n + 8  # the larger of the two model vocabularies
    assert result.teacher_only == {think: "<think>", think + 1: "</think>"}
    assert result.differing == [
        f"id {think}: '<think>' only in the teacher; the student decodes it as this text",
        f"id {think + 1}: '</think>' only in the teacher; the student decodes it as this text",
    ]
    text = "<|im_start|>two plus three<think>five</think><|im_end|>"
    for side, own in (("s_out", s_tok), ("t_out", t_tok)):
        out = tmp_path / side
        assert Tokenizer.from_file(str(out / "tokenizer.json")).encode(text).ids == own.encode(text).ids  # its own
        report = json.loads((out / "align_report.json").read_text())
        assert report["teacher_only_tokens"] == {str(think): "<think>", str(think + 1): "</think>"}
        config = json.loads((out / "config.json").read_text())
        assert config["vocab_size"] == n + 8 and config["eos_token_id"] == s_tok.token_to_id("<|im_end|>")
        assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == config["eos_token_id"]
        weights = load_file(str(out / "model.safetensors"))
        assert weights["model.embed_tokens.weight"].shape[0] == n + 8
    original = load_file(str(tmp_path / "student" / "model.safetensors"))["model.embed_tokens.weight"]
    padded = load_file(str(tmp_path / "s_out" / "model.safetensors"))["model.embed_tokens.weight"]
    assert torch.equal(padded[:n], original)
    assert torch.allclose(padded[n:], original.mean(0).expand(8, -1))


def test_qwen_style_and_llama_style_are_refused_with_an_explanation(tmp_path):
    q_tok = qwen_style(tmp_path / "qwen")
    l_tok = llama_style(tmp_path / "llama")
    student = model_dir(tmp_path / "qwen", q_tok, q_tok.get_vocab_size(), eos=0)
    teacher = model_dir(tmp_path / "llama", l_tok, l_tok.get_vocab_size(), eos=2)
    with pytest.raises(TokenizerMismatchError) as err:
        align(student, teacher, str(tmp_path / "a"), str(tmp_path / "b"))
    message = str(err.value)
    assert "the base vocabularies differ" in message and "shared ids are different tokens" in message
    assert "TGPO passes the teacher's argmax token ids to the student" in message
    assert not (tmp_path / "a").exists()  # nothing written


def test_the_tool_exits_2_with_one_line(tmp_path, capsys):
    q_tok, l_tok = qwen_style(tmp_path / "qwen"), llama_style(tmp_path / "llama")
    model_dir(tmp_path / "qwen", q_tok, q_tok.get_vocab_size(), eos=0)
    model_dir(tmp_path / "llama", l_tok, l_tok.get_vocab_size(), eos=2)
    capsys.readouterr()
    code = main(
        [
            "--student",
            str(tmp_path / "qwen"),
            "--teacher",
            str(tmp_path / "llama"),
            "--out-student",
            str(tmp_path / "a"),
            "--out-teacher",
            str(tmp_path / "b"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: the base vocabularies differ") and err.count("\n") == 1


def test_ids_that_mean_different_text_are_refused_naming_each_unless_allowed(tmp_path, caplog):
    """R1-Distill-Qwen's added tokens against Qwen2.5's (the real tables, after a tiny base vocabulary): ids
    +0..+6 mean different text to the two models, +7..+9 agree."""
    s_tok = qwen_style(tmp_path / "student", added=QWEN25_ADDED)
    t_tok = qwen_style(tmp_path / "teacher", added=R1_DISTILL_ADDED)
    n = s_tok.get_vocab_size()
    base = n - len(QWEN25_ADDED)
    student = model_dir(tmp_path / "student", s_tok, n, eos=s_tok.token_to_id("<|im_end|>"))
    teacher = model_dir(tmp_path / "teacher", t_tok, n, eos=t_tok.token_to_id("<｜end▁of▁sentence｜>"))
    expected = [(base + k, QWEN25_ADDED[k], R1_DISTILL_ADDED[k]) for k in range(7)]
    with pytest.raises(TokenizerMismatchError) as err:
        align(student, teacher, str(tmp_path / "s_out"), str(tmp_path / "t_out"))
    message = str(err.value)
    assert message.startswith("7 ids mean different text to the two models: ")
    for i, mine, theirs in expected:
        assert f"id {i}: {mine!r} (student) vs {theirs!r} (teacher)" in message
    assert "--allow-id-collisions" in message and "teacher.allow_id_collisions" in message
    assert not (tmp_path / "s_out").exists()

    result = align(student, teacher, str(tmp_path / "s_out"), str(tmp_path / "t_out"), allow_id_collisions=True)
    assert result.collisions == expected
    assert Tokenizer.from_file(str(tmp_path / "s_out" / "tokenizer.json")).id_to_token(base + 6) == "<|box_end|>"
    # a run refuses the aligned teacher unless it opts in, and logs the collisions when it does
    with pytest.raises(TokenizerMismatchError, match="accepting 7 ids .*" + re.escape(f"id {base + 6}: '<|box_end|>'")):
        check_id_collisions(str(tmp_path / "t_out"), allowed=False)
    with caplog.at_level(logging.WARNING):
        assert check_id_collisions(str(tmp_path / "t_out"), allowed=True) == expected
    assert "7 ids mean different text" in caplog.text and "'</think>' (teacher)" in caplog.text
    assert check_id_collisions(str(tmp_path / "student"), allowed=False) == []  # not an aligned copy


def test_the_paper_teacher_adds_tokens_without_collisions(tmp_path):
    """Qwen3's table extends Qwen2.5's (<think> and </think> after it): nothing to opt in to."""
    s_tok = qwen_style(tmp_path / "student", added=QWEN25_ADDED)
    t_tok = qwen_style(tmp_path / "teacher", added=QWEN25_ADDED, extra_added=("<think>", "</think>"))
    student = model_dir(tmp_path / "student", s_tok, s_tok.get_vocab_size(), eos=s_tok.token_to_id("<|im_end|>"))
    teacher = model_dir(tmp_path / "teacher", t_tok, t_tok.get_vocab_size(), eos=t_tok.token_to_id("<|im_end|>"))
    result = align(student, teacher, str(tmp_path / "s_out"), str(tmp_path / "t_out"))
    assert result.collisions == [] and sorted(result.teacher_only.values()) == ["</think>", "<think>"]
