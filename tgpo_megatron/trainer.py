"""The TGPO loop (docs/method.md §3): one SPMD job, student + teacher + vLLM on every rank.

    tgpo train --config examples/recipes/tiny_cpu.yaml [section.key=value ...]
    torchrun --nproc-per-node 8 -m tgpo_megatron.cli train --config R.yaml trainer.output_dir=runs/x

Per step k: prompts -> G rollouts (vLLM) -> rewards -> teacher (argmax ids) -> old log-probs -> GRPO
advantages -> PPO mini-batch updates (loss of ``algorithm.name``) -> refit vLLM -> metrics -> checkpoint ->
eval every N steps. Running the same command on a run directory that has a checkpoint resumes from it.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Optional

import psutil
import torch
import torch.distributed as dist

from tgpo_megatron.batching import PER_TOKEN, MiniBatch, Rollout, attach, contiguous_share
from tgpo_megatron.config import Config
from tgpo_megatron.config.validation import ALIGN_HINT, check_dataset, check_recipe, check_tokenizers
from tgpo_megatron.data import PromptDataset, load_prompts
from tgpo_megatron.data.align import check_id_collisions
from tgpo_megatron.data.sampler import PromptSampler
from tgpo_megatron.data.tokenizer import ResponseDecoder, load_tokenizer
from tgpo_megatron.distributed.parallel import (
    destroy_global_parallel,
    destroy_process_groups,
    distinct_groups,
    initialize_global_parallel,
    merge_sums,
    model_process_groups,
    process_groups,
    sum_over_ranks,
    warm_up_communicators,
)
from tgpo_megatron.distributed.platform import init_distributed, torch_dtype
from tgpo_megatron.errors import UserError
from tgpo_megatron.losses import ALGORITHMS, Algorithm, compute_loss, grpo_advantages, mini_batch_aggregation
from tgpo_megatron.losses.correction import MAXIMA as CORRECTION_MAXIMA
from tgpo_megatron.losses.correction import correction_metrics, correction_weights
from tgpo_megatron.rewards import RewardScorer
from tgpo_megatron.rollout import RolloutEngine, SamplingSpec, refit_from_megatron
from tgpo_megatron.rollout.drift import check_drift, logprob_drift
from tgpo_megatron.rollout.pipeline import RolloutPipeline
from tgpo_megatron.rollout.remote import serve_rollouts
from tgpo_megatron.run.layout import RunDir
from tgpo_megatron.run.loop import Run, open_run, run_command, run_steps
from tgpo_megatron.run.metrics import Timer
from tgpo_megatron.seeds import derive_seed
from tgpo_megatron.services import Services
from tgpo_megatron.student import Student
from tgpo_megatron.teacher import Teacher, TeacherRequest

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass
class Components:
    """What one run is made of, built by :func:`setup` (from a checkpoint when the run directory has one)."""

    config: Config
    tokenizer: PreTrainedTokenizerBase
    decoder: ResponseDecoder
    dataset: PromptDataset
    sampler: PromptSampler
    student: Student
    teacher: Optional[Teacher]
    engine: RolloutEngine
    pipeline: RolloutPipeline
    """Which weights each step's rollouts come from, and the batch in flight (``rollout.max_staleness``)."""
    scorer: RewardScorer
    run: Run
    """Checkpoints, metrics log, and where the run starts (resumed or fresh)."""
    algorithm: Algorithm
    """``algorithm.name``'s registry entry: what each phase computes for it."""
    teacher_request: TeacherRequest
    """What the teacher computes for that algorithm beyond its argmax and log π_T(y_t)."""
    groups: set
    """The process groups the run created, destroyed when it ends."""


def train(config: Config, services: Optional[Services] = None) -> int:
    """Run (or resume) the configured training; returns the last completed step. ``services``: a rollout engine
    and reward workers that outlive the run (``tgpo train-many``); by default the run builds and closes its own."""
    own = services is None
    services = services or Services()
    side = services.side_for(config)
    if side is not None and side.role == "rollout":
        serve_rollouts(config, side)
        return 0
    try:
        return run_training(config, services)
    finally:
        release_memory()  # the run's objects died with run_training's frame
        if own:
            services.close()


def run_training(config: Config, services: Services) -> int:
    c = setup(config, services)
    cfg = c.config
    try:
        # A new engine is awake with placeholder weights, a shared one as the previous run left it: asleep, the
        # first refit takes the same memory as every later one (weights, then the KV cache)
        c.engine.sleep()
        first = refit(c, c.run.start_step)
        if "memory/gpu_free_before_kv_cache_gb" in first:  # the refit's peak: what the plan's refit phase predicts
            log.info(
                "GPU memory free after the first refit's weights: %.2f GiB", first["memory/gpu_free_before_kv_cache_gb"]
            )
        step = run_steps(cfg, c.run, partial(train_step, c), partial(evaluate_if_due, c))
        if cfg.trainer.export_hf:
            c.student.export_hf(RunDir(cfg.trainer.output_dir).hf, cfg.student.tokenizer_path)
        return step
    finally:
        c.run.logger.close()
        c.student.close()
        destroy_global_parallel()
        destroy_process_groups(c.groups)


def release_memory() -> None:
    """Free a finished run's objects for the next run of the launch (``tgpo train-many``). vLLM's in-process engine
    freezes the GC heap when it starts (``gc.freeze``), so neither what the first run built before it nor any
    run's reference cycles would ever be collected (``Student.close`` breaks the cycles the collector cannot
    see). What survives is frozen again, as vLLM wants it."""
    frozen = gc.get_freeze_count() > 0
    gc.unfreeze()
    gc.collect()
    if frozen:
        gc.freeze()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def train_step(c: Components, step: int) -> dict:
    cfg, timer = c.config, Timer()
    with timer("step"):
        with timer("generate"):
            rollouts, batch_metrics = generate(c, step)
        with timer("reward"):
            rewards, reward_metrics = score(c, rollouts)
        advantages = grpo_advantages(torch.tensor(rewards), cfg.rollout.n)
        for r, reward, advantage in zip(rollouts, rewards, advantages.tolist()):
            r.reward, r.advantage = reward, advantage
        if c.teacher is not None:
            with timer("teacher"):
                teacher_values = c.teacher.label(
                    rollouts, c.teacher_request, seed=derive_seed(cfg.trainer.seed, "teacher-sample", step)
                )
            attach(rollouts, teacher_values)
            check_teacher_ids(rollouts, c.student.vocab_size)
        mini_batches = [c.student.plan(mb) for mb in split_mini_batches(rollouts, cfg.trainer.mini_batches)]
        local = [r for mb in mini_batches for r in mb.local]
        with timer("old_logprobs"):
            old = old_logprobs(c, mini_batches)
        attach(local, old)
        policy_metrics = logprob_gaps(c, local, stale=batch_metrics["rollout/staleness"] > 0)
        if cfg.rollout.correction.enabled:
            weights, weight_metrics = correction(c, local)
            attach(local, weights)
            policy_metrics.update(weight_metrics)
        with timer("train"):
            train_metrics = update(c, mini_batches, step)
        with timer("refit"):
            refit_metrics = refit(c, step)
    metrics = {
        **batch_metrics,
        **reward_metrics,
        **rollout_metrics(rollouts),
        **policy_metrics,
        **train_metrics,
        **refit_metrics,
        **timer.seconds,
        **memory_metrics(),
    }
    metrics["throughput/tokens_per_s"] = metrics["rollout/tokens"] / metrics["timing/step"]
    return metrics


# -- the phases ---------------------------------------------------------------------------------------------


def generate(c: Components, step: int) -> tuple[list[Rollout], dict]:
    """G rollouts per prompt (for an algorithm that learns from off-policy traces, luffy: G - 1 and the row's
    teacher trace last), and the weight version and staleness they were generated with."""
    cfg = c.config
    batch = c.pipeline.take(step)
    examples = [c.dataset[i] for i in batch.indices]
    traces = c.algorithm.off_policy_traces
    completions = batch.completions
    c.engine.sleep()  # until the refit: the teacher and the student's passes get the memory
    rollouts = []
    for e, comps in zip(examples, completions):  # a prompt's G rollouts stay consecutive: the GRPO groups
        group = [
            Rollout(
                list(e.prompt_ids),
                comp.token_ids,
                answer=e.answer,
                engine_logprobs=comp.logprobs,
                finish_reason=comp.finish_reason,
            )
            for comp in comps
        ]
        if traces:
            group.append(off_policy_trace(e, c.tokenizer, cfg.rollout.max_response_length))
            for r in group:
                r.per_token["off_policy"] = torch.full((len(r.response),), float(r is group[-1]))
        rollouts += group
    return rollouts, batch.metrics()


def order_rollouts(cfg: Config, dataset: PromptDataset, sampler: PromptSampler, algorithm: Algorithm, step: int):
    """Step ``step``'s prompts, drawn from the prompt order, and its sampling (``RolloutPipeline``'s order)."""
    indices = sampler.next_batch()
    spec = SamplingSpec(
        n=cfg.rollout.n - algorithm.off_policy_traces,
        temperature=cfg.rollout.temperature,
        top_p=cfg.rollout.top_p,
        top_k=cfg.rollout.top_k,
        max_tokens=cfg.rollout.max_response_length,
        seed=derive_seed(cfg.trainer.seed, "rollout", step),
    )
    return indices, [dataset[i].prompt_ids for i in indices], spec


def off_policy_trace(example, tokenizer, max_tokens: int) -> Rollout:
    """The row's reference response (LUFFY's off-policy teacher trace) as a rollout: its tokens and EOS, cut
    at the response budget like a generation (then it counts as truncated)."""
    ids = tokenizer(example.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return Rollout(
        list(example.prompt_ids),
        ids[:max_tokens],
        answer=example.answer,
        finish_reason="stop" if len(ids) <= max_tokens else "length",
    )


def score(c: Components, rollouts: list[Rollout]) -> tuple[list[float], dict]:
    """Every rollout's reward (each rank scores its share, then all gather) and the step's reward metrics."""
    world = dist.get_world_size()
    mine = [rollouts[i] for i in contiguous_share(len(rollouts), world, dist.get_rank())]
    texts = [c.decoder.decode(r.response) for r in mine]
    truths = [r.answer for r in mine]
    scores, reasons = c.scorer.score(texts, truths, deadline_s=c.config.reward.batch_deadline_s)
    gathered: list = [None] * world
    dist.all_gather_object(gathered, (scores, dict(reasons)))
    rewards = [x for part in gathered for x in part[0]]
    return rewards, reward_metrics(rewards, [part[1] for part in gathered], c.config.rollout.n)


def reward_metrics(rewards: list[float], reasons_per_rank: list[dict[str, int]], group_size: int) -> dict:
    """The step's reward metrics from every rollout's reward (prompt by prompt, ``group_size`` each) and each
    rank's count of the judge's verdicts."""
    grouped = torch.tensor(rewards, dtype=torch.float64).reshape(-1, group_size)
    reasons: dict[str, int] = {}
    for part in reasons_per_rank:
        for key, n in part.items():
            reasons[key] = reasons.get(key, 0) + n
    metrics = {
        "reward/mean": float(grouped.mean()),
        "reward/all_correct": float((grouped.min(1).values > 0).double().mean()),
        "reward/none_correct": float((grouped.max(1).values == 0).double().mean()),
    }
    metrics.update({f"reward/reason/{k}": n / len(rewards) for k, n in sorted(reasons.items())})
    return metrics


def refit(c: Components, version: int) -> dict:
    """Load the student's current weights (``version``: the optimizer steps they hold) into vLLM, which slept
    through the update, once it has returned the rollouts it was generating: its weights first, then its KV
    cache, so the cache is not mapped while the student's tensors are gathered. On a GPU, the memory free before
    each wake (what ``tgpo plan``'s refit and generate phases must leave)."""
    waited = c.pipeline.collect()
    free = {"memory/gpu_free_before_weights_gb": gpu_free_gb()}
    c.engine.wake(["weights"])
    metrics = refit_from_megatron(c.engine, c.student.model, c.student.pg).metrics()
    c.pipeline.refitted(version)
    free["memory/gpu_free_before_kv_cache_gb"] = gpu_free_gb()
    c.engine.wake(["kv_cache"])
    return {**metrics, **waited, **{key: value for key, value in free.items() if value is not None}}


def gpu_free_gb() -> Optional[float]:
    return torch.cuda.mem_get_info()[0] / 1024**3 if torch.cuda.is_available() else None


def split_mini_batches(rollouts: list[Rollout], count: int) -> list[list[Rollout]]:
    """The step's rollouts in ``count`` consecutive groups of prompts (advantages are already computed on
    the whole step; each rank later trains on its share of every group)."""
    per = len(rollouts) // count
    return [rollouts[m * per : (m + 1) * per] for m in range(count)]


def old_logprobs(c: Components, mini_batches: list[MiniBatch]) -> list[dict[str, torch.Tensor]]:
    """log π_old(y_t) (and log π_old of the ids the algorithm's ``old_logp_of`` names: ŷ_t for tgpo_adv) of
    each rollout this rank trains on (``MiniBatch.local``), before any update."""
    id_keys = c.algorithm.old_logp_of
    values = c.student.token_logprobs(mini_batches, id_keys)
    return [
        {"old_logp": logps[0], **{f"old_logp_{key}": logp for key, logp in zip(id_keys, logps[1:])}} for logps in values
    ]


def logprob_gaps(c: Components, local: list[Rollout], stale: bool) -> dict:
    """The drift between vLLM's log-probs and the student's π_old (``stale``: the rollouts are an update older
    than π_old, and the drift includes that update); with a teacher, the teacher-student gap probes; over every
    rollout of the step."""
    sums = {"tokens": 0.0, "generated": 0.0, "abs": 0.0, "mult": 0.0, "k3": 0.0, "k1": 0.0, "mismatch": 0.0}
    for r in local:
        old_logp = r.per_token["old_logp"]
        n = float(len(r.response))
        sums["tokens"] += n
        if r.engine_logprobs:  # an off-policy trace was not generated: it has no engine log-probs
            drift = logprob_drift(torch.tensor(r.engine_logprobs), old_logp, torch.ones(len(r.response)))
            sums["generated"] += n
            sums["abs"] += drift["rollout/logprob_abs_diff"] * n
            sums["mult"] += drift["rollout/token_mult_prob_error"] * n
            sums["k3"] += drift["rollout/kl_k3"] * n
        if "teacher_logp" in r.per_token:
            sums["k1"] += float((old_logp - r.per_token["teacher_logp"]).sum())
            sums["mismatch"] += float((r.per_token["teacher_ids"] != torch.tensor(r.response)).sum())
    total = sum_over_replicas(c, sums)
    tokens, generated = max(total["tokens"], 1.0), max(total["generated"], 1.0)
    metrics = {
        "rollout/logprob_abs_diff": total["abs"] / generated,
        "rollout/token_mult_prob_error": total["mult"] / generated,
        "rollout/kl_k3": total["k3"] / generated,
    }
    check_drift(metrics, c.config.rollout.drift_warn_threshold, stale)
    if c.teacher is not None:
        metrics.update({"gap/reverse_kl_k1": total["k1"] / tokens, "gap/mismatch_ratio": total["mismatch"] / tokens})
    return metrics


def correction(c: Components, local: list[Rollout]) -> tuple[list[dict[str, torch.Tensor]], dict]:
    """The engine-mismatch correction's weight of each generated token this rank trains on (1 on an off-policy
    trace's, which the engine did not generate), and the step's ``correction/*`` metrics over every rollout."""
    config = c.config.rollout.correction
    values, stats = [], []
    for r in local:
        weight = torch.ones(len(r.response))
        if r.engine_logprobs:
            weight, rollout_stats = correction_weights(torch.tensor(r.engine_logprobs), r.per_token["old_logp"], config)
            stats.append(rollout_stats)
        values.append({"correction_weight": weight})
    total = sum_over_replicas(c, merge_sums(stats, CORRECTION_MAXIMA), maxima=CORRECTION_MAXIMA)
    return values, correction_metrics(total, config.mode)


def sum_over_replicas(c: Components, sums: dict, maxima: tuple[str, ...] = ()) -> dict:
    """``sums`` summed over the student's data-parallel replicas: every rank of a replica holds the same values,
    so each replica's first rank alone contributes them."""
    first_of_replica = c.student.pg.tp.rank() == 0 and c.student.pg.pp.rank() == 0
    return sum_over_ranks(sums if first_of_replica else None, maxima=maxima)


def update(c: Components, mini_batches: list[MiniBatch], step: int) -> dict:
    """One optimizer step per mini-batch (per PPO epoch); metrics averaged over them."""
    cfg = c.config
    if not teacher_values_finite([r for mb in mini_batches for r in mb.rollouts]):
        log.warning("step %d: the teacher's logits were not finite for some rollouts", step)
        return {"optim/skipped": 1.0}
    c.student.set_learning_rate(cfg.trainer.learning_rate(step))
    keys = c.algorithm.per_token_keys
    if cfg.rollout.correction.enabled:
        keys = [*keys, "correction_weight"]

    def loss_fn(logits, batch, normalizer):
        return compute_loss(
            cfg.algorithm.name,
            logits,
            batch,
            step=step,
            config=cfg.algorithm,
            tp_group=c.student.pg.tp,
            vocab_size=c.student.vocab_size,
            normalizer=normalizer,
        )

    mode, scale, ranks = (
        cfg.algorithm.aggregation_mode(cfg.algorithm.name),
        cfg.algorithm.loss_scale,
        c.student.pg.dp.size(),
    )
    aggregated = [aggregate(mb, mode, scale, cfg.rollout.max_response_length, ranks) for mb in mini_batches]
    if aggregated and aggregated[0][1] is not None:
        keys = [*keys, "entropy_weight"]
    collected: list[dict] = []
    for _ in range(cfg.trainer.ppo_epochs):
        for weighted, normalizer in aggregated:
            collected.append(c.student.train_step(weighted, keys, loss_fn, normalizer))
    metrics = {key: sum(m[key] for m in collected) / len(collected) for key in collected[0]}
    metrics["optim/skipped"] = float(any(m["optim/skipped"] for m in collected))
    return metrics


def aggregate(
    mini_batch: MiniBatch, mode: str, scale: str, horizon: int, ranks: int
) -> tuple[MiniBatch, Optional[float]]:
    """The mini-batch with each rollout's token weights of the aggregation ``mode`` at ``scale`` in its loss
    (and entropy) weights, and the normalizer; the default (token-mean, batch) leaves the rollouts as they are
    and the normalizer to the student."""
    weights = mini_batch_aggregation(
        mode, scale, [len(r.response) for r in mini_batch.rollouts], horizon, mini_batch.micro_batches, ranks
    )
    if weights.normalizer is None:
        return mini_batch, None

    def weighted(r: Rollout, w: float, entropy: float) -> Rollout:
        mask = r.per_token.get("loss_weight", torch.ones(len(r.response)))
        return replace(r, per_token={**r.per_token, "loss_weight": mask * w, "entropy_weight": mask * entropy})

    rollouts = [weighted(*x) for x in zip(mini_batch.rollouts, weights.weights, weights.entropy_weights)]
    return replace(mini_batch, rollouts=rollouts), weights.normalizer


TEACHER_ID_KEYS = tuple(key for key in PER_TOKEN if key.startswith("teacher_") and key.endswith("_ids"))


def check_teacher_ids(rollouts: list[Rollout], vocab_size: int) -> None:
    """The teacher's ids are student vocabulary ids: checked once per step on the gathered values, which every
    rank holds, so that every rank stops with the same error (a check inside one rank's micro-batch would
    leave the others waiting in a collective)."""
    for i, r in enumerate(rollouts):
        for key in TEACHER_ID_KEYS:
            ids = r.per_token.get(key)
            if ids is not None and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
                bad = ids[(ids < 0) | (ids >= vocab_size)]
                raise UserError(
                    f"the teacher gave {key} {int(bad[0])} for rollout {i} ({bad.numel()} such ids), outside the "
                    f"student's vocabulary [0, {vocab_size}): the two models do not share one id space ({ALIGN_HINT})"
                )


def teacher_values_finite(rollouts: list[Rollout]) -> bool:
    """Whether the teacher's per-token values are finite. Every rank holds all of them (gathered), so every
    rank decides alike; a non-finite loss or gradient is caught by the student's own skip."""
    return all(
        bool(torch.isfinite(r.per_token[key]).all())
        for r in rollouts
        for key in ("teacher_logp", "teacher_topk_probs")
        if key in r.per_token
    )


def rollout_metrics(rollouts: list[Rollout]) -> dict:
    lengths = [len(r.response) for r in rollouts]
    return {
        "rollout/response_length": sum(lengths) / len(lengths),
        "rollout/response_length_max": max(lengths),
        "rollout/truncated": sum(r.finish_reason == "length" for r in rollouts) / len(rollouts),
        "rollout/tokens": float(sum(lengths)),
    }


def memory_metrics() -> dict:
    metrics = {"memory/rss_gb": psutil.Process().memory_info().rss / 1024**3}
    if torch.cuda.is_available():
        metrics["memory/cuda_max_allocated_gb"] = torch.cuda.max_memory_allocated() / 1024**3
    return metrics


def evaluate_if_due(c: Components, step: int) -> dict:
    return run_eval(c, step) if eval_due(c.config.eval, step) else {}


def eval_due(eval_config, step: int) -> bool:
    every = eval_config.every_n_steps
    return bool(every) and step % every == 0 and any(d.during_training for d in eval_config.datasets)


def run_eval(c: Components, step: int) -> dict:
    from tgpo_megatron.eval import evaluate, write_report

    cfg = c.config
    sets = [
        (d.name, d.n, load_prompts([d.path], c.tokenizer, cfg.data), [d.judge, *d.extra_judges])
        for d in cfg.eval.datasets
        if d.during_training
    ]
    results = evaluate(c.engine, c.decoder, sets, cfg.eval, c.scorer, progress=False)  # awake since the refit
    metrics = {f"eval/{r['dataset']}/{key}": r[key] for r in results for key in r if key.startswith(("avg@", "pass@"))}
    if dist.get_rank() == 0:
        write_report(results, RunDir(cfg.trainer.output_dir).eval, step=step)
    return metrics


# -- set-up and resume --------------------------------------------------------------------------------------


def setup(config: Config, services: Services) -> Components:
    platform = init_distributed()
    trainer = config.trainer
    world = dist.get_world_size()
    torch.manual_seed(trainer.seed)
    check_recipe(config, world + config.rollout.ranks)
    collisions = (
        check_id_collisions(config.teacher.hf_path, config.teacher.allow_id_collisions)
        if config.teacher.hf_path
        else []
    )
    dtype = torch_dtype(config.student.dtype, platform)
    existing = process_groups()
    pg = initialize_global_parallel(config.student.layout)
    tokenizer = load_tokenizer(config.student.tokenizer_path)
    decoder = ResponseDecoder.for_model(tokenizer, config.student.hf_path)
    student = Student(config.student, trainer, pg, dtype, config.algorithm.chunk_tokens)
    teacher = None
    if config.teacher.hf_path:
        teacher_tokenizer = load_tokenizer(config.teacher.tokenizer_path)
        teacher = Teacher(
            config.teacher,
            model_process_groups(config.teacher.layout, reuse=distinct_groups(student.groups)),
            torch_dtype(config.teacher.dtype, platform),
            trainer.micro_batch_tokens,
            trainer.offload_teacher,
            trainer.sequence_packing,
            seed=trainer.seed,
            chunk_tokens=config.algorithm.chunk_tokens,
        )
        check_tokenizers(tokenizer, teacher_tokenizer, student.model.arch, teacher.model.arch, decoder, collisions)
    # the optimizer's state exists already (Student); the communicators too, before vLLM sizes its cache
    models = [student] + ([teacher] if teacher is not None else [])
    warm_up_communicators(
        [group for model in models for group in model.groups] + [dist.group.WORLD],
        platform.device,
        pipelines=[model.pg.pp for model in models],
    )
    groups = process_groups() - existing
    dataset = load_prompts(config.data.train_files, tokenizer, config.data)
    check_dataset(config, dataset)
    sampler = PromptSampler(len(dataset), trainer.prompts_per_step, seed=config.data.seed, shuffle=config.data.shuffle)
    engine = services.engine_for(config, tokenizer)
    scorer = services.scorer_for(config)
    algorithm = ALGORITHMS[config.algorithm.name]
    pipeline = RolloutPipeline(
        engine, config.rollout.max_staleness, partial(order_rollouts, config, dataset, sampler, algorithm)
    )
    run = open_run(config, student, sampler, pipeline)
    return Components(
        config,
        tokenizer,
        decoder,
        dataset,
        sampler,
        student,
        teacher,
        engine,
        pipeline,
        scorer,
        run,
        algorithm,
        TeacherRequest.for_algorithm(algorithm, config.algorithm),
        groups,
    )


def main(argv=None) -> int:
    return run_command("tgpo train", __doc__, train, argv)
