"""Data preparation the paper's protocol needs (``tools/prepare_data.py``).

``split``: LUFFY's validation file (one parquet of every benchmark, verl layout, a ``data_source`` column)
becomes one de-duplicated file per benchmark, and the ``eval.datasets`` entries that evaluate them with the
authors' number of samples per problem: avg@32 for AIME24, AIME25 and AMC, pass@1 of one sample for the
others (MATH-500, Minerva, OlympiadBench).

``filter``: the training prompts the teacher solves, each with the teacher's solution as ``target`` (the
off-policy trace LUFFY learns from): how the paper's 35k set was made. The authors generated one solution per
prompt of LUFFY's OpenR1-Math set with the teacher (vLLM, temperature 0.7, 8192 tokens) and kept the prompts
whose solution ``math_verify`` accepts, reading the **whole** text (their ``data/my_verify.py``: no
``</think>`` split; about 35k of 46k; docs/method.md §4, §6). ``--judge whole-text`` is that judge;
the default, ``--judge training``, is the training reward (the answer after the first ``</think>``), which
also drops the truncated traces whose reasoning already stated the right answer, so it keeps slightly
fewer rows: every kept trace then earns the reward it will be trained with. Prompts are formatted as
training formats them (the recipe's ``data`` section: system prompt, chat template, ``<think>\n``) with the
teacher's tokenizer; vLLM's replicas split them (``torchrun ... filter ... rollout.tp=2``). Rows the trainer could
not use are skipped and counted, like in training. The output keeps each kept row as it was, plus its solution:
verl rows get ``target: [{role: assistant, content}]``, plain rows the ``data.response_key`` column.

    python tools/prepare_data.py split --input data/valid.all.parquet --out data/eval
    python tools/prepare_data.py filter --input openr1.parquet --teacher /models/Qwen3-30B-A3B-Thinking-2507 \
        --out openr1.teacher_correct.parquet [--config RECIPE] [section.key=value ...]
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from tgpo_megatron.cli import command_parser
from tgpo_megatron.data.prompts import iter_rows, read_prompts
from tgpo_megatron.errors import UserError, exit_on_user_error
from tgpo_megatron.rewards.math import score_response, whole_text_score

log = logging.getLogger(__name__)

# avg@32 for the small competition sets (their 30-83 problems are too few for one sample each); 1 otherwise
SAMPLES_BY_PREFIX = {"aime": 32, "amc": 32}


def samples_for(benchmark: str) -> int:
    key = re.sub(r"[^a-z0-9]", "", benchmark.lower())
    return next((n for prefix, n in SAMPLES_BY_PREFIX.items() if key.startswith(prefix)), 1)


def _problem_key(row: dict) -> str:
    """What makes two rows the same problem: the prompt's messages and the ground truth."""
    reward_model = row.get("reward_model") or {}
    return json.dumps([row.get("prompt"), reward_model.get("ground_truth")], sort_keys=True, default=str)


def split_eval_sets(path: str, out_dir: str, samples: dict[str, int] | None = None) -> list[dict]:
    """One parquet per ``data_source`` of ``path`` in ``out_dir``, each problem once; returns the
    ``eval.datasets`` entries (``name``, ``path``, ``n``) with the row counts kept and dropped."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    groups: OrderedDict[str, OrderedDict[str, dict]] = OrderedDict()
    duplicates: dict[str, int] = {}
    for number, row in iter_rows(path):
        if not isinstance(row, dict) or not isinstance(row.get("data_source"), str) or not row["data_source"]:
            raise UserError(
                f"{path} row {number}: no 'data_source' naming the benchmark (a LUFFY/verl "
                "validation file has one per row)"
            )
        rows = groups.setdefault(row["data_source"], OrderedDict())
        key = _problem_key(row)
        if key in rows:
            duplicates[row["data_source"]] = duplicates.get(row["data_source"], 0) + 1
        else:
            rows[key] = row
    if not groups:
        raise UserError(f"{path}: no rows")
    os.makedirs(out_dir, exist_ok=True)
    entries = []
    for benchmark, rows in groups.items():
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", benchmark)
        out = os.path.join(out_dir, f"{name}.parquet")
        pq.write_table(pa.Table.from_pylist(list(rows.values())), out)
        n = (samples or {}).get(benchmark, samples_for(benchmark))
        entries.append(
            {
                "name": name,
                "path": out,
                "n": n,
                "problems": len(rows),
                "duplicates_dropped": duplicates.get(benchmark, 0),
            }
        )
    return entries


CHUNK_PROMPTS = 1024
"""Prompts handed to vLLM at once: bounds the host memory of the completions, and shows progress."""


FILTER_JUDGES = {"training": score_response, "whole-text": whole_text_score}
"""``prepare_data.py filter --judge``: the training reward, or the authors' filter (``math_verify`` on the whole
text)."""


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
    judge: str = "training",
) -> FilterResult:
    """Keep the rows of ``input_path`` whose prompt the teacher answers correctly in one of ``samples`` tries
    (the first correct solution becomes the row's reference) by ``judge`` (``FILTER_JUDGES``); every rank returns
    the result, rank 0 writes."""
    import torch.distributed as dist

    from tgpo_megatron.data.synthetic import write_rows
    from tgpo_megatron.data.tokenizer import ResponseDecoder, eos_token_ids, load_tokenizer
    from tgpo_megatron.distributed.platform import init_distributed
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
    scorer = RewardScorer(workers=config.reward.workers, timeout_s=config.reward.timeout_s, fn=FILTER_JUDGES[judge])
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


def _filter(args) -> int:
    from tgpo_megatron.config import load_config

    config = load_config(args.config, args.overrides)
    teacher = args.teacher or config.teacher.hf_path
    if not teacher:
        raise UserError("give --teacher or a recipe with teacher.hf_path")
    if args.samples < 1 or args.max_tokens < 1:
        raise UserError("--samples and --max-tokens must be >= 1")
    result = filter_by_teacher(
        args.input,
        args.out,
        teacher,
        config,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        samples=args.samples,
        seed=args.seed,
        judge=args.judge,
    )
    skipped = sum(result.skipped.values())
    print(
        f"kept {result.kept} of {result.prompts} prompts ({skipped} rows skipped: {dict(result.skipped)}); "
        f"verdicts {dict(result.reasons)}; wrote {args.out}"
    )
    return 0


def _parse_samples(items: list[str]) -> dict[str, int]:
    samples = {}
    for item in items:
        name, _, value = item.partition("=")
        if not name or not value.isdigit() or int(value) < 1:
            raise UserError(f"--n {item!r}: expected BENCHMARK=K with K >= 1")
        samples[name] = int(value)
    return samples


@exit_on_user_error
def main(argv=None) -> int:
    p = command_parser("prepare_data.py", __doc__)
    sub = p.add_subparsers(dest="command", required=True)
    split = sub.add_parser("split", help="one de-duplicated file per benchmark, with the authors' n")
    split.add_argument("--input", required=True, help="validation parquet/jsonl with a data_source column")
    split.add_argument("--out", required=True, help="output directory")
    split.add_argument(
        "--n",
        nargs="*",
        default=[],
        metavar="BENCHMARK=K",
        help="samples per problem for a benchmark (default: 32 for AIME/AMC, else 1)",
    )
    keep = sub.add_parser("filter", help="keep the prompts the teacher solves, with its solution as target")
    keep.add_argument("--input", required=True, help="training prompts (parquet/jsonl, verl or plain rows)")
    keep.add_argument("--out", required=True, help="output .parquet or .jsonl")
    keep.add_argument("--teacher", help="teacher HF directory (default: the recipe's teacher.hf_path)")
    keep.add_argument("--config", help="recipe whose data, rollout and reward sections apply (default: built-in)")
    keep.add_argument("--temperature", type=float, default=0.7, help="the authors': 0.7")
    keep.add_argument("--max-tokens", type=int, default=8192, help="the authors': 8192")
    keep.add_argument("--samples", type=int, default=1, help="tries per prompt (the authors': 1)")
    keep.add_argument("--seed", type=int, default=0)
    keep.add_argument(
        "--judge",
        choices=sorted(FILTER_JUDGES),
        default="training",
        help="training: the training reward (default); whole-text: the authors' filter, math_verify on the whole text",
    )
    keep.add_argument("overrides", nargs="*", help="dotted recipe overrides, e.g. rollout.tp=2")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "filter":
        return _filter(args)
    entries = split_eval_sets(args.input, args.out, _parse_samples(args.n))
    for e in entries:
        log.info(
            "%s: %d problems (%d duplicate rows dropped), n=%d -> %s",
            e["name"],
            e["problems"],
            e["duplicates_dropped"],
            e["n"],
            e["path"],
        )
    print("eval:\n  datasets:")
    for e in entries:
        print(f"    - {{name: {e['name']}, path: {e['path']}, n: {e['n']}}}")
    return 0
