"""Tokenizers: loading the user's (never with remote code), and a tiny character tokenizer for tests and the demo.

The tiny tokenizer is a real ``tokenizers`` tokenizer saved in Hugging Face format (``tokenizer.json``,
``tokenizer_config.json`` with a chat template), so everything downstream (vLLM, transformers, our data
pipeline) treats it exactly like a production tokenizer.
"""

from __future__ import annotations

import os
import string
from typing import Optional

from tgpo_megatron.errors import UserError

PAD, EOS, UNK = "<|pad|>", "<|end|>", "<|unk|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
# Multi-character pieces of the math answer format, one token each so that a tiny model can emit them.
FORMAT_TOKENS = ("<think>", "</think>", "\\boxed{")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def char_vocabulary() -> list[str]:
    """Special tokens first (pad=0, eos=1, unk=2), then the format tokens, then printable ASCII."""
    chars = [c for c in string.printable if c not in "\t\r\x0b\x0c"]
    return [PAD, EOS, UNK, *ROLE_TOKENS, *FORMAT_TOKENS, *chars]


def build_char_tokenizer(out_dir: str) -> str:
    """Write a character-level tokenizer with a chat template to ``out_dir``; returns ``out_dir``."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(char_vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (PAD, EOS, UNK, *ROLE_TOKENS)])
    tok.add_tokens([AddedToken(t, normalized=False) for t in FORMAT_TOKENS])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, unk_token=UNK)
    hf.chat_template = CHAT_TEMPLATE
    os.makedirs(out_dir, exist_ok=True)
    hf.save_pretrained(out_dir)
    return out_dir


def load_tokenizer(path: str, trust_remote_code: bool = False):
    """A Hugging Face tokenizer from a local directory, with a clear error when there is none.

    A directory with a ``tokenizer.json`` loads exactly that pipeline. ``AutoTokenizer`` in transformers 5
    rebuilds it from the class the model type names instead: a tokenizer whose pipeline differs from its model
    family's default (our character tokenizer beside a Qwen2 config; R1-Distill-Qwen's, which names
    LlamaTokenizer) then splits text differently, silently (spaces and newlines vanished from the toy task).
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if not os.path.isdir(path):
        raise UserError(f"tokenizer directory not found: {path}")
    try:
        if os.path.isfile(os.path.join(path, "tokenizer.json")) and not trust_remote_code:
            return PreTrainedTokenizerFast.from_pretrained(path)
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot load a tokenizer ({e})") from None


def eos_token_ids(tokenizer, hf_dir: str) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS and the model's generation/config EOS ids
    (Qwen instruct models list two)."""
    import json

    ids = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    for name in ("generation_config.json", "config.json"):
        path = os.path.join(hf_dir, name)
        if os.path.isfile(path):
            with open(path) as f:
                value = json.load(f).get("eos_token_id")
            ids += value if isinstance(value, list) else [] if value is None else [value]
    if not ids:
        raise UserError(f"{hf_dir}: neither the tokenizer nor the model config defines an EOS token")
    return sorted(set(ids))


class ResponseDecoder:
    """Response ids -> the text the reward and the eval judges read (docs/method.md §7, "Teacher id space").

    Special tokens are kept, as the authors' reward decodes them: a ``</think>`` that is a special token must
    not vanish (a response without it scores 0). Only the stop tokens that end the response are dropped.
    An id the student's tokenizer does not have but the teacher's does (``align_report.json`` of an aligned
    model lists them: Qwen3's ``</think>`` for a Qwen2.5-Math student) decodes as the teacher's text, since the
    student learns to emit it from the teacher's argmax; the tokenizer alone would decode it as nothing.
    """

    def __init__(self, tokenizer, stop_ids, teacher_only: Optional[dict[int, str]] = None):
        self.tokenizer = tokenizer
        self.stop_ids = frozenset(stop_ids)
        self.teacher_only = dict(teacher_only or {})

    @classmethod
    def for_model(cls, tokenizer, hf_dir: str) -> "ResponseDecoder":
        from tgpo_megatron.data.align import teacher_only_tokens

        stops = set(eos_token_ids(tokenizer, hf_dir))
        if tokenizer.pad_token_id is not None:
            stops.add(tokenizer.pad_token_id)
        return cls(tokenizer, stops, teacher_only_tokens(hf_dir))

    def decode(self, ids) -> str:
        ids = list(ids)
        while ids and ids[-1] in self.stop_ids:
            ids.pop()
        parts, run = [], []
        for i in ids:
            if i in self.teacher_only:
                parts += [self.tokenizer.decode(run, skip_special_tokens=False), self.teacher_only[i]]
                run = []
            else:
                run.append(i)
        parts.append(self.tokenizer.decode(run, skip_special_tokens=False))
        return "".join(parts)
