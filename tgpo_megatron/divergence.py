"""The paper's offline teacher-student divergence report (docs/method.md §1), on the student's own rollouts.

    python tools/measure_divergence.py --student S --teacher T --data prompts.parquet --prompts 64 --n 4
    python tools/measure_divergence.py --student S --teacher T1 T2 T3 ...   # candidate teachers, same rollouts

The student samples rollouts with vLLM; the student and each teacher then score them with teacher forcing in
transformers (an implementation independent of our Megatron path; each model must fit one device), so several
teachers are compared on the very same rollouts. Reported per teacher over all response tokens y_t with states
s_t = (x, y_<t):
- teacher perplexity exp(-mean log π_T(y_t));
- top-k overlap |top-k π_S(·|s_t) ∩ top-k π_T(·|s_t)| / k for k = 1, 5, 10;
- log ρ_t = log π_S(y_t) - log π_T(y_t): mean (the k1 reverse-KL estimate, ``gap/reverse_kl_k1``), std,
  quantiles, and frac(ρ > 1), the share of tokens the student is more confident in than the teacher;
- the mismatch ratio mean 1[argmax π_T(·|s_t) ≠ y_t] (``gap/mismatch_ratio``);
- response length and the share of responses that ended with EOS.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import torch

TOPK = (1, 5, 10)
QUANTILES = (0.5, 0.9, 0.99)
CHUNK = 1024  # positions scored at once: bounds the [chunk, V] logits of both models


@dataclass
class DivergenceAccumulator:
    tokens: int = 0
    teacher_logp: float = 0.0
    mismatches: int = 0
    overlap: dict = field(default_factory=lambda: {k: 0.0 for k in TOPK})
    log_ratios: list = field(default_factory=list)

    def add(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Logits ``[T, V]`` predicting ``targets`` ``[T]`` (the sampled response tokens)."""
        s_logp = torch.log_softmax(student_logits.double(), dim=-1)
        t_logp = torch.log_softmax(teacher_logits.double(), dim=-1)
        idx = targets.unsqueeze(-1)
        s_tok, t_tok = s_logp.gather(-1, idx).squeeze(-1), t_logp.gather(-1, idx).squeeze(-1)
        self.tokens += targets.numel()
        self.teacher_logp += t_tok.sum().item()
        self.mismatches += (t_logp.argmax(-1) != targets).sum().item()
        self.log_ratios += (s_tok - t_tok).tolist()
        for k in TOPK:
            kk = min(k, s_logp.shape[-1])  # a vocabulary smaller than k: every token is in both sets
            s_top, t_top = s_logp.topk(kk, dim=-1).indices, t_logp.topk(kk, dim=-1).indices
            shared = (s_top.unsqueeze(-1) == t_top.unsqueeze(-2)).any(-1).sum(-1)
            self.overlap[k] += (shared.double() / kk).sum().item()

    def report(self) -> dict:
        if not self.tokens:
            raise ValueError("no response tokens were scored")
        ratios = torch.tensor(self.log_ratios, dtype=torch.float64)
        out = {
            "tokens": self.tokens,
            "teacher_ppl": math.exp(-self.teacher_logp / self.tokens),
            "mismatch_ratio": self.mismatches / self.tokens,
            "log_ratio_mean": ratios.mean().item(),
            "log_ratio_std": ratios.std(unbiased=False).item(),
            "frac_ratio_gt_1": (ratios > 0).double().mean().item(),
        }
        out.update({f"top{k}_overlap": self.overlap[k] / self.tokens for k in TOPK})
        out.update({f"log_ratio_p{round(q * 100)}": ratios.quantile(q).item() for q in QUANTILES})
        return out


@torch.no_grad()
def score_rollouts(
    student, teachers: list, sequences: list[tuple[list[int], list[int]]], vocab: int, device: torch.device
) -> list[DivergenceAccumulator]:
    """Teacher-force the student and each teacher on ``(prompt, response)`` pairs, one sequence at a time."""
    accs = [DivergenceAccumulator() for _ in teachers]
    for prompt, response in sequences:
        if not response:
            continue
        ids = torch.tensor([prompt + response], device=device)
        s_logits = student(ids).logits[0, len(prompt) - 1 : -1, :vocab]
        targets = ids[0, len(prompt) :]
        for teacher, acc in zip(teachers, accs):
            t_logits = teacher(ids).logits[0, len(prompt) - 1 : -1, :vocab]
            for start in range(0, targets.numel(), CHUNK):
                part = slice(start, start + CHUNK)
                acc.add(s_logits[part].float().cpu(), t_logits[part].float().cpu(), targets[part].cpu())
    return accs


def main(argv=None) -> int:
    from tgpo_megatron.cli import command_parser
    from tgpo_megatron.errors import exit_on_user_error

    p = command_parser("measure_divergence.py", __doc__)
    p.add_argument("--student", required=True, help="student HF directory (also its tokenizer and template)")
    p.add_argument(
        "--teacher", required=True, nargs="+", help="teacher HF directories sharing the student's ids (one or more)"
    )
    p.add_argument("--data", required=True, help="parquet/jsonl prompts (verl or plain layout)")
    p.add_argument("--prompts", type=int, default=64, help="prompts to use (the first N usable rows)")
    p.add_argument("--n", type=int, default=4, help="rollouts per prompt")
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--system-prompt", default=None, help="default: LUFFY's; '' for none")
    p.add_argument("--kv-cache-gb", type=float, default=None, help="vLLM KV cache (set it on CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the report as JSON here (a list of reports, one per teacher, for several)")
    args = p.parse_args(argv)
    return exit_on_user_error(_run)(args)


def _run(args) -> int:
    from transformers import AutoModelForCausalLM

    from tgpo_megatron.config import DataConfig, ModelConfig, RolloutConfig
    from tgpo_megatron.data import load_prompts
    from tgpo_megatron.data.tokenizer import eos_token_ids, load_tokenizer
    from tgpo_megatron.distributed.platform import init_distributed, torch_dtype
    from tgpo_megatron.rollout import SamplingSpec
    from tgpo_megatron.rollout.vllm_engine import VLLMEngine

    platform = init_distributed()
    tokenizer = load_tokenizer(args.student)
    data = DataConfig() if args.system_prompt is None else DataConfig(system_prompt=args.system_prompt)
    dataset = load_prompts([args.data], tokenizer, data)
    examples = dataset.examples[: args.prompts]
    longest = max(len(e.prompt_ids) for e in examples)
    engine = VLLMEngine.from_config(
        RolloutConfig(kv_cache_gb=args.kv_cache_gb, enforce_eager=True),
        ModelConfig(hf_path=args.student),
        max_model_len=longest + args.max_tokens,
        eos_token_ids=eos_token_ids(tokenizer, args.student),
        seed=args.seed,
    )
    completions = engine.generate(
        [e.prompt_ids for e in examples],
        SamplingSpec(n=args.n, temperature=args.temperature, max_tokens=args.max_tokens, seed=args.seed),
    )
    del engine
    dtype = torch_dtype("auto", platform)
    load = lambda path: AutoModelForCausalLM.from_pretrained(path, torch_dtype=dtype).to(platform.device).eval()
    sequences = [(e.prompt_ids, c.token_ids) for e, cs in zip(examples, completions) for c in cs]
    accs = score_rollouts(
        load(args.student), [load(t) for t in args.teacher], sequences, len(tokenizer), platform.device
    )
    flat = [c for cs in completions for c in cs]
    rollouts = {
        "prompts": len(examples),
        "rollouts": len(flat),
        "mean_response_tokens": sum(len(c.token_ids) for c in flat) / len(flat),
        "eos_fraction": sum(c.finish_reason == "stop" for c in flat) / len(flat),
    }
    reports = [{"teacher": path, **acc.report(), **rollouts} for path, acc in zip(args.teacher, accs)]
    width = max(map(len, reports[0]))
    for key in reports[0]:
        values = [r[key] for r in reports]
        print(f"{key:<{width}}  " + "  ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in values))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(reports[0] if len(reports) == 1 else reports, f, indent=1)
    return 0
