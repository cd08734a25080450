"""Evaluation with the LUFFY protocol: n samples per problem at T=0.6, the math reward, avg@n and pass@1.

    tgpo eval --config examples/recipes/tiny_cpu.yaml [--model HF_DIR] [--out DIR] [section.key=value ...]
    torchrun --nproc-per-node 8 -m tgpo_megatron.cli eval --config R.yaml rollout.tp=2   # 4 vLLM replicas

Per dataset it reports:
- ``avg@n``: the mean reward over all n samples of all problems (AIME/AMC use avg@32); it is the unbiased
  estimate of pass@1;
- ``pass@1``: the accuracy of each problem's first sample (the single-sample protocol of MATH-500);
- ``pass@n``: the share of problems with at least one correct sample;
plus response length, truncation and the reward's reasons. Results go to ``eval.json`` and ``eval.md``.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from typing import Optional, Sequence

from tgpo_megatron.cli import command_parser
from tgpo_megatron.errors import exit_on_user_error
from tgpo_megatron.run.layout import RunDir

log = logging.getLogger(__name__)
SAMPLES_PER_CALL = 2048
"""Samples (problems x n) per engine call. A call lasts as long as its longest response, so small calls of 8k
-token decodes would each wait on their own long tail: MATH-500 at n=1 is one call, AIME at n=32 two of 32
problems; the bound keeps the host's results and the progress bar moving on large sets."""


def summarize(
    name: str,
    rewards: Sequence[Sequence[float]],
    lengths: Sequence[Sequence[int]] = (),
    finishes: Sequence[Sequence[str]] = (),
) -> dict:
    """Metrics of one dataset from per-problem lists of per-sample rewards (and token lengths, finish reasons)."""
    if not rewards or any(len(r) != len(rewards[0]) or not r for r in rewards):
        raise ValueError(f"{name}: every problem needs the same, non-zero number of samples")
    n = len(rewards[0])
    flat = [x for r in rewards for x in r]
    out = {
        "dataset": name,
        "problems": len(rewards),
        "n": n,
        f"avg@{n}": sum(flat) / len(flat),
        "pass@1": sum(r[0] for r in rewards) / len(rewards),
        f"pass@{n}": sum(max(r) > 0 for r in rewards) / len(rewards),
    }
    if lengths:
        flat_lengths = [x for r in lengths for x in r]
        out["mean_response_tokens"] = sum(flat_lengths) / len(flat_lengths)
    if finishes:
        flat_finishes = [x for r in finishes for x in r]
        out["truncated"] = flat_finishes.count("length") / len(flat_finishes)
    return out


def markdown_table(results: list[dict]) -> str:
    lines = [
        "| dataset | problems | n | avg@n | pass@1 | pass@n | mean tokens | truncated |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        n = r["n"]
        lines.append(
            f"| {r['dataset']} | {r['problems']} | {n} | {100 * r[f'avg@{n}']:.1f} | "
            f"{100 * r['pass@1']:.1f} | {100 * r[f'pass@{n}']:.1f} | "
            f"{r.get('mean_response_tokens', float('nan')):.0f} | {100 * r.get('truncated', 0):.1f}% |"
        )
    return "\n".join(lines) + "\n"


def write_report(results: list[dict], out_dir: str, step: Optional[int] = None) -> tuple[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    suffix = "" if step is None else f"_step{step:06d}"
    json_path, md_path = os.path.join(out_dir, f"eval{suffix}.json"), os.path.join(out_dir, f"eval{suffix}.md")
    with open(json_path, "w") as f:
        json.dump({"step": step, "results": results}, f, indent=1)
    with open(md_path, "w") as f:
        f.write(markdown_table(results))
    return json_path, md_path


def evaluate(
    engine, decoder, datasets: Sequence[tuple[str, int, object, str]], eval_config, scorer, progress: bool = True
) -> list[dict]:
    """Generate ``n`` samples per problem with ``engine`` and score them with the set's judge
    (``rewards.EVAL_JUDGES``); ``datasets`` holds ``(name, n, PromptDataset, judges)``, ``judges`` one name or a
    list whose further judges score the same responses again (reported as the set ``<name>.<judge>``). Every
    rank returns the same results."""
    from tqdm import tqdm

    from tgpo_megatron.rewards import EVAL_JUDGES
    from tgpo_megatron.rollout import SamplingSpec

    results = []
    for name, n, dataset, judges in datasets:
        judge, *extra = [judges] if isinstance(judges, str) else judges
        sampling = SamplingSpec(
            n=n,
            temperature=eval_config.temperature,
            top_p=eval_config.top_p,
            max_tokens=eval_config.max_tokens,
            seed=eval_config.seed,
        )
        rewards, lengths, finishes, reasons = [], [], [], Counter()
        rewards_by = {j: [] for j in extra}
        bar = tqdm(total=len(dataset), desc=f"eval {name}", disable=not progress, unit="problem")
        per_call = max(1, SAMPLES_PER_CALL // n)
        for start in range(0, len(dataset), per_call):
            examples = dataset.examples[start : start + per_call]
            completions = engine.generate([e.prompt_ids for e in examples], _reseeded(sampling, start))
            texts = [decoder.decode(c.token_ids) for cs in completions for c in cs]
            answers = [e.answer for e, cs in zip(examples, completions) for _ in cs]
            scores, verdicts = scorer.score(texts, answers, judge=EVAL_JUDGES[judge])
            reasons.update(verdicts)
            rewards += [scores[i * n : (i + 1) * n] for i in range(len(examples))]
            for j in extra:
                scores_j, _ = scorer.score(texts, answers, judge=EVAL_JUDGES[j])
                rewards_by[j] += [scores_j[i * n : (i + 1) * n] for i in range(len(examples))]
            lengths += [[len(c.token_ids) for c in cs] for cs in completions]
            finishes += [[c.finish_reason for c in cs] for cs in completions]
            bar.update(len(examples))
        bar.close()
        summary = summarize(name, rewards, lengths, finishes)
        summary["reasons"] = dict(reasons)
        summary["skipped_rows"] = sum(dataset.skipped.values())
        results.append(summary)
        results += [summarize(f"{name}.{j}", rewards_by[j], lengths, finishes) for j in extra]
    return results


def _reseeded(sampling, offset: int):
    """Problem ``i`` keeps seed ``seed + i`` across chunks, so results do not depend on the chunk size."""
    from dataclasses import replace

    return sampling if sampling.seed is None else replace(sampling, seed=sampling.seed + offset)


@exit_on_user_error
def main(argv=None) -> int:
    p = command_parser("tgpo eval", __doc__)
    p.add_argument("--config", required=True, help="recipe YAML (its eval, data, rollout and student sections)")
    p.add_argument("--model", help="HF directory to evaluate (default: student.hf_path)")
    p.add_argument("--out", help="output directory (default: the model directory's eval/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. eval.temperature=0.6")
    args = p.parse_args(argv)

    import torch.distributed as dist

    from tgpo_megatron.config import load_config
    from tgpo_megatron.data import load_prompts
    from tgpo_megatron.data.tokenizer import ResponseDecoder, eos_token_ids, load_tokenizer
    from tgpo_megatron.distributed.platform import init_distributed
    from tgpo_megatron.errors import UserError
    from tgpo_megatron.rewards import RewardScorer
    from tgpo_megatron.rollout.vllm_engine import VLLMEngine

    config = load_config(args.config, args.overrides)
    if not config.eval.datasets:
        raise UserError(f"{args.config}: eval.datasets is empty; nothing to evaluate")
    model_dir = args.model or config.student.hf_path
    if not model_dir:
        raise UserError("give --model or set student.hf_path")
    init_distributed()
    rank0 = dist.get_rank() == 0
    tokenizer = load_tokenizer(config.student.tokenizer or model_dir)
    datasets = [
        (d.name, d.n, load_prompts([d.path], tokenizer, config.data), [d.judge, *d.extra_judges])
        for d in config.eval.datasets
    ]
    longest = max(len(e.prompt_ids) for _, _, ds, _ in datasets for e in ds.examples)
    engine = VLLMEngine.from_config(
        config.rollout,
        config.student,
        hf_dir=model_dir,
        max_model_len=longest + config.eval.max_tokens,
        eos_token_ids=eos_token_ids(tokenizer, model_dir),
        seed=config.eval.seed,
    )
    scorer = RewardScorer(workers=config.reward.workers, timeout_s=config.reward.timeout_s)
    try:
        results = evaluate(
            engine, ResponseDecoder.for_model(tokenizer, model_dir), datasets, config.eval, scorer, progress=rank0
        )
    finally:
        scorer.close()
    if rank0:
        json_path, _ = write_report(results, args.out or RunDir(model_dir).eval)
        print(markdown_table(results), end="")
        print(f"wrote {json_path}")
    dist.barrier()
    return 0
