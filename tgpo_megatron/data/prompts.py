"""Prompt datasets: parquet/jsonl rows -> chat-templated token ids with their ground-truth answers.

Two row layouts are understood:
- ``verl`` (LUFFY's, and what verl writes): ``prompt`` is a list of ``{role, content}`` messages and the answer is
  ``reward_model.ground_truth``;
- ``plain``: a ``problem`` string and an ``answer`` (column names configurable).

A row that cannot be used (no answer, wrong types, an empty prompt) is skipped and logged with its row number;
prompts longer than ``max_prompt_length`` tokens are dropped and counted. A file with no usable row is an error.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

from tgpo_megatron.config import DataConfig
from tgpo_megatron.errors import UserError

log = logging.getLogger(__name__)
MAX_LOGGED_SKIPS = 20


@dataclass(frozen=True)
class PromptExample:
    prompt_ids: list[int]
    answer: str
    source: str
    """``file:row`` the example came from."""
    target: str = ""
    """A reference response (``solution`` / verl ``target``) when the row has one, for supervised fine-tuning."""


@dataclass
class PromptDataset:
    examples: list[PromptExample]
    skipped: Counter = field(default_factory=Counter)
    """Reasons rows were not used (``too long`` included), with counts."""

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> PromptExample:
        return self.examples[index]


class RowError(ValueError):
    """A row that cannot be used; the message is the reason."""


def iter_rows(path: str) -> Iterator[tuple[int, object]]:
    """``(row number, row)`` for each row of a ``.parquet`` or ``.jsonl`` file (row numbers start at 1)."""
    if not os.path.isfile(path):
        raise UserError(f"dataset file not found: {path}")
    if path.endswith(".jsonl"):
        with open(path) as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as e:
                    yield number, RowError(f"not valid JSON ({e.msg})")
    elif path.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise UserError(f"{path}: cannot read parquet ({e})") from None
        yield from enumerate(table.to_pylist(), start=1)
    else:
        raise UserError(f"{path}: dataset files must end in .parquet or .jsonl")


def detect_schema(row: object) -> str:
    if isinstance(row, dict) and "prompt" in row and "reward_model" in row:
        return "verl"
    return "plain"


def parse_row(row: object, schema: str, config: DataConfig) -> tuple[list[dict], str]:
    """Chat messages and ground-truth answer of one row; raises :class:`RowError` with the reason."""
    if isinstance(row, RowError):
        raise row
    if not isinstance(row, dict):
        raise RowError(f"expected an object, got {type(row).__name__}")
    if schema == "verl":
        messages = row.get("prompt")
        if not isinstance(messages, list) or not messages:
            raise RowError("'prompt' must be a non-empty list of messages")
        for m in messages:
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise RowError("every 'prompt' message needs string 'role' and 'content'")
        if not any(m["role"] == "user" and m["content"].strip() for m in messages):
            raise RowError("'prompt' has no non-empty user message")
        reward_model = row.get("reward_model")
        answer = reward_model.get("ground_truth") if isinstance(reward_model, dict) else None
        answer_field = "reward_model.ground_truth"
    else:
        problem = row.get(config.problem_key)
        if not isinstance(problem, str):
            raise RowError(f"'{config.problem_key}' must be a string, got {type(problem).__name__}")
        if not problem.strip():
            raise RowError(f"'{config.problem_key}' is empty")
        messages = [{"role": "user", "content": problem}]
        answer = row.get(config.answer_key)
        answer_field = config.answer_key
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        raise RowError(f"missing or empty answer '{answer_field}'")
    if config.system_prompt and not any(m["role"] == "system" for m in messages):
        messages = [{"role": "system", "content": config.system_prompt}] + list(messages)
    return messages, answer


def reference_response(row: dict, schema: str, config: DataConfig) -> str:
    """The row's reference response, without a leading ``data.response_prefix``: every rendered prompt already
    ends with it (``render_prompt``), and the authors strip it from a trace that opens its thoughts again (an
    R1 trace starting ``<think>\n`` would otherwise teach the student to write ``<think>`` twice)."""
    content = _reference_text(row, schema, config)
    prefix = config.response_prefix
    return content[len(prefix) :] if prefix and content.startswith(prefix) else content


def _reference_text(row: dict, schema: str, config: DataConfig) -> str:
    if schema == "verl":
        target = row.get("target")
        content = (
            target[0].get("content") if isinstance(target, list) and target and isinstance(target[0], dict) else None
        )
    else:
        content = row.get(config.response_key)
    return content if isinstance(content, str) else ""


def render_prompt(tokenizer, messages: list[dict], response_prefix: str) -> str:
    """The chat template with the generation prompt, followed by ``response_prefix`` (e.g. "<think>\\n"),
    unless the template already ends with it (R1-Distill's and some Qwen3 templates open the thoughts
    themselves): a second ``<think>`` would be text no model was trained on."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; "
            "TGPO formats prompts with the student's chat template"
        )
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    opening = response_prefix.strip()
    if opening and text.rstrip().endswith(opening):
        _warn_template_opens(opening)
        return text
    return text + response_prefix


@functools.lru_cache(maxsize=None)
def _warn_template_opens(opening: str) -> None:
    log.warning("the chat template already ends with %r: data.response_prefix is not appended again", opening)


def read_prompts(
    path: str, tokenizer, config: DataConfig, skipped: Counter
) -> Iterator[tuple[int, dict, str, list, str]]:
    """``(row number, row, schema, prompt ids, answer)`` of every usable row of ``path``, in file order. Rows
    that cannot be used are counted in ``skipped`` by reason (the first ones logged with their row number),
    prompts over ``max_prompt_length`` as "too long"; a file with no usable row is an error."""
    usable, schema, logged = 0, None if config.schema == "auto" else config.schema, 0
    for number, row in iter_rows(path):
        schema = schema or detect_schema(row)
        try:
            messages, answer = parse_row(row, schema, config)
        except RowError as e:
            skipped[str(e)] += 1
            if logged < MAX_LOGGED_SKIPS:
                log.warning("%s row %d skipped: %s", path, number, e)
                logged += 1
            continue
        ids = tokenizer(render_prompt(tokenizer, messages, config.response_prefix), add_special_tokens=False)[
            "input_ids"
        ]
        if len(ids) > config.max_prompt_length:
            skipped["too long"] += 1
            continue
        usable += 1
        yield number, row, schema, list(ids), answer
    if usable == 0:
        reasons = "; ".join(f"{n}x {r}" for r, n in skipped.most_common(3)) or "the file has no rows"
        raise UserError(f"{path}: no usable row (schema {schema or config.schema}; {reasons})")


def load_prompts(paths: list[str], tokenizer, config: DataConfig) -> PromptDataset:
    """Every usable example of ``paths``, in file order."""
    if not paths:
        raise UserError("no dataset files given (data.train_files is empty)")
    examples, skipped = [], Counter()
    for path in paths:
        for number, row, schema, ids, answer in read_prompts(path, tokenizer, config, skipped):
            source = f"{os.path.basename(path)}:{number}"
            examples.append(PromptExample(ids, answer.strip(), source, reference_response(row, schema, config)))
    if skipped:
        log.warning(
            "dataset: %d examples kept, %d rows skipped (%s)",
            len(examples),
            sum(skipped.values()),
            ", ".join(f"{r}: {n}" for r, n in skipped.most_common()),
        )
    return PromptDataset(examples, skipped)
