"""The training set the paper used: the prompts its teacher solves, with the teacher's solution as ``target``.

The authors generated one solution per prompt of LUFFY's OpenR1-Math set with the teacher (vLLM, temperature
0.7, 8192 tokens) and kept the prompts whose answer passes the training judge (about 35k of 46k); the kept
solution is the off-policy trace the LUFFY baseline learns from (docs/method.md §4, §6).

    python tools/prepare_data.py filter --input openr1.parquet --teacher /models/Qwen3-30B-A3B-Thinking-2507 \\
        --out openr1.teacher_correct.parquet [--config RECIPE] [section.key=value ...]
    torchrun --nproc-per-node 8 tools/prepare_data.py filter ... rollout.tp=2

Prompts are formatted as training formats them (the recipe's ``data`` section: system prompt, chat template,
``<think>\\n``) with the teacher's tokenizer; vLLM's replicas split them. Rows the trainer could not use are
skipped and counted, like in training. The output keeps each kept row as it was, plus its solution: verl rows
get ``target: [{role: assistant, content}]``, plain rows the ``data.response_key`` column.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from tgpo_megatron.data.prompts import read_prompts
from tgpo_megatron.errors import UserError

log = logging.getLogger(__name__)
CHUNK_PROMPTS = 1024
"""Prompts handed to vLLM at once: bounds the host memory of the completions, and shows progress."""


@dataclass
class FilterResult:
    kept: int = 0
    prompts: int = 0
    skipped: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    """The training judge's verdicts on every sample."""


def filter_by_teacher(
    input_path: str,
    out_path: str,
    teacher_dir: str,
    config,
    *,
    temperature: float = 0.7,
    max_tokens: int = 8192,
    samples: int = 1,
    seed: int = 0,
) -> FilterResult:
    """Keep the rows of ``input_path`` whose prompt the teacher answers correctly in one of ``samples`` tries
    (the first correct solution becomes the row's reference); every rank returns the result, rank 0 writes."""
    import torch.distributed as dist

    from tgpo_megatron.data.synthetic import write_rows
    from tgpo_megatron.data.tokenizer import ResponseDecoder, eos_token_ids, load_tokenizer
    from tgpo_megatron.platform import init_distributed
    from tgpo_megatron.rewards import RewardScorer
    from tgpo_megatron.rollout import SamplingSpec
    from tgpo_megatron.rollout.vllm_engine import VLLMEngine

    init_distributed()
    tokenizer = load_tokenizer(teacher_dir)
    result, rows, prompts = FilterResult(), [], []
    for _, row, schema, ids, answer in read_prompts(input_path, tokenizer, config.data, result.skipped):
        rows.append((row, answer, schema))
        prompts.append(ids)
    result.prompts = len(rows)
    engine = VLLMEngine.from_config(
        config.rollout,
        config.teacher,
        hf_dir=teacher_dir,
        max_model_len=max(map(len, prompts)) + max_tokens,
        eos_token_ids=eos_token_ids(tokenizer, teacher_dir),
        seed=seed,
    )
    decoder = ResponseDecoder.for_model(tokenizer, teacher_dir)
    scorer = RewardScorer(workers=config.reward.workers, timeout_s=config.reward.timeout_s)
    kept = []
    try:
        for start in range(0, len(rows), CHUNK_PROMPTS):
            spec = SamplingSpec(n=samples, temperature=temperature, top_p=1.0, max_tokens=max_tokens, seed=seed + start)
            completions = engine.generate(prompts[start : start + CHUNK_PROMPTS], spec)
            texts = [decoder.decode(c.token_ids) for cs in completions for c in cs]
            answers = [answer for _, answer, _ in rows[start : start + CHUNK_PROMPTS] for _ in range(samples)]
            scores, verdicts = scorer.score(texts, answers)
            result.reasons.update(verdicts)
            for i, (row, _, schema) in enumerate(rows[start : start + CHUNK_PROMPTS]):
                correct = [
                    t
                    for t, s in zip(texts[i * samples : (i + 1) * samples], scores[i * samples : (i + 1) * samples])
                    if s > 0
                ]
                if correct:
                    kept.append(with_reference(row, correct[0], schema, config.data.response_key))
            log.info(
                "teacher filter: %d of %d prompts done, %d kept",
                min(start + CHUNK_PROMPTS, len(rows)),
                len(rows),
                len(kept),
            )
        if kept and dist.get_rank() == 0:
            write_rows(kept, out_path)
        dist.barrier()
    finally:
        scorer.close()
        engine.close()  # last: vLLM's teardown destroys the default process group
    result.kept = len(kept)
    if not kept:
        raise UserError(
            f"the teacher ({teacher_dir}) solved none of the {len(rows)} prompts of {input_path}; "
            f"verdicts: {dict(result.reasons)}"
        )
    return result


def with_reference(row: dict, solution: str, schema: str, response_key: str) -> dict:
    """``row`` with ``solution`` where training reads a reference response (``PromptExample.target``)."""
    if schema == "verl":
        return {**row, "target": [{"role": "assistant", "content": solution}]}
    return {**row, response_key: solution}
