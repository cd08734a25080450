"""The student: a Megatron-Core GPTModel under DDP with the distributed optimizer, trained through
Megatron's own pipeline schedule with the objective library's loss on vocabulary-parallel logits.

Every rank holds the whole mini-batch and trains on its token-balanced share (batching.plan_micro_batches);
the loss of every micro-batch is a token sum divided by the **global** token count of the mini-batch (all
ranks, all micro-batches), so accumulation and data parallelism give the gradient of one big batch.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Optional, Sequence

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.transformer.moe.moe_utils import clear_aux_losses_tracker, get_moe_layer_wise_logging_tracker

from tgpo_megatron.batching import MiniBatch, Rollout, micro_batches, plan_micro_batches
from tgpo_megatron.config import ModelConfig, TrainerConfig
from tgpo_megatron.distributed.optimizer import build_optimizer, load_state, materialize_state, megatron_optimizers
from tgpo_megatron.distributed.parallel import sum_over_ranks
from tgpo_megatron.losses import token_stats
from tgpo_megatron.losses.coefficients import CHUNK_TOKENS
from tgpo_megatron.models import build_model
from tgpo_megatron.models.bridge import export_hf_weights
from tgpo_megatron.models.hf_export import write_hf_checkpoint
from tgpo_megatron.models.pipeline import forward_gathered, model_forward, run_micro_batches, sequence_multiple

log = logging.getLogger(__name__)
LossFn = Callable[[torch.Tensor, dict, float], tuple[torch.Tensor, dict]]


class Student:
    def __init__(
        self, config: ModelConfig, trainer: TrainerConfig, pg, dtype: torch.dtype, chunk_tokens: int = CHUNK_TOKENS
    ):
        """``chunk_tokens``: of the log-prob pass's loss head (``algorithm.chunk_tokens``)."""
        self.pg, self.dtype, self.chunk_tokens = pg, dtype, chunk_tokens
        self.model = build_model(config, pg, dtype, seed=trainer.seed)
        self.vocab_size = self.model.arch.vocab_size
        self.ddp = DistributedDataParallel(
            config=self.model.config,
            module=self.model,
            ddp_config=DistributedDataParallelConfig(grad_reduce_in_fp32=True, use_distributed_optimizer=True),
        )
        self.optimizer = build_optimizer(self.ddp, trainer, dtype)
        self.model.config.finalize_model_grads_func = finalize_model_grads
        self.model.config.no_sync_func = self.ddp.no_sync
        self.model.config.grad_scale_func = self.optimizer.scale_loss
        self.token_budget = trainer.micro_batch_tokens
        self.packed = trainer.sequence_packing
        self.weight_decay = trainer.weight_decay
        self.grad_clip = trainer.grad_clip
        self.set_learning_rate(trainer.lr)
        materialize_state(self.optimizer)

    def close(self) -> None:
        """Let the model, its gradients and the optimizer go when the run ends (``tgpo train-many`` builds the next
        run's beside them). Two cycles pass through autograd's C++ graph, where garbage collection cannot see
        them: DDP keeps each parameter's gradient accumulator, whose hook refers back to DDP; and the optimizer,
        reachable from the model's config (``grad_scale_func``), holds the fp32 main parameters, which are views of
        the model's parameters through their accumulators."""
        config = self.model.config
        config.no_sync_func = config.grad_scale_func = config.finalize_model_grads_func = None
        self.ddp.grad_accs.clear()

    def set_learning_rate(self, lr: float) -> None:
        """Set the lr and the weight decay of every parameter group (norms and biases have ``wd_mult`` 0);
        Megatron leaves both to a scheduler, which a constant-lr RL run does not need."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            group["weight_decay"] = self.weight_decay * group.get("wd_mult", 1.0)

    @property
    def groups(self) -> list:
        """The process groups this model's collectives use (``parallel.warm_up_communicators``): TP, the model-
        parallel group of its gathers, PP, DDP's data-parallel group, a tied embedding's (first and last stage),
        the expert groups of a mixture of experts, and each optimizer's gradient-norm group."""
        pg = self.pg
        groups = [pg.tp, pg.mp, pg.pp, pg.dp_cp] + ([pg.embd] if self.model.arch.tie_word_embeddings else [])
        if self.model.arch.moe is not None:
            groups += [pg.ep, pg.tp_ep, pg.expt_dp]
        return groups + [part.get_grad_stats_parallel_group() for part in megatron_optimizers(self.optimizer)]

    @property
    def is_last_stage(self) -> bool:
        return self.pg.pp.rank() == self.pg.pp.size() - 1

    # -- who computes what ------------------------------------------------------------------------------------
    def plan(self, rollouts: Sequence[Rollout]) -> MiniBatch:
        """The mini-batch and this rank's micro-batches of it (every rank derives the same plan from the
        lengths alone), for ``token_logprobs`` and ``train_step``."""
        plan = plan_micro_batches([r.length for r in rollouts], self.pg.dp.size(), self.token_budget, self.packed)
        return MiniBatch(list(rollouts), plan[self.pg.dp.rank()])

    # -- forward only ---------------------------------------------------------------------------------------
    def token_logprobs(
        self, mini_batches: Sequence[MiniBatch], id_keys: Sequence[str] = ()
    ) -> list[list[torch.Tensor]]:
        """For each rollout this rank trains on (``MiniBatch.local``, mini-batch by mini-batch):
        ``[log π(y_t), log π(ids[k]_t) for k in id_keys]`` per response token, in one pass over its micro-batches
        of every mini-batch."""

        def consume(logits, mb):
            mask = mb.loss_mask.bool()
            ids = [mb.labels] + [torch.where(mask, mb.values[k], 0) for k in id_keys]
            logps, _ = token_stats(
                logits, ids, vocab_size=self.vocab_size, tp_group=self.pg.tp, chunk_tokens=self.chunk_tokens
            )
            return {"logps": torch.stack(logps, dim=-1).float()}

        rollouts: list[Rollout] = []
        groups: list[list[int]] = []
        for mini_batch in mini_batches:
            groups += [[len(rollouts) + i for i in group] for group in mini_batch.micro_batches]
            rollouts += mini_batch.rollouts
        self.model.eval()
        device = next(self.model.parameters()).device
        results = forward_gathered(
            self.model,
            self.pg,
            rollouts,
            consume,
            groups,
            device=device,
            group=self.pg.mp,
            keys=id_keys,
            packed=self.packed,
        )
        return [list(results[i]["logps"].unbind(-1)) for group in groups for i in group]

    # -- one optimizer step -----------------------------------------------------------------------------------
    def train_step(
        self, mini_batch: MiniBatch, keys: Sequence[str], loss_fn: LossFn, normalizer: Optional[float] = None
    ) -> dict[str, float]:
        """Forward/backward over a mini-batch (this rank: its micro-batches of ``plan``), then one optimizer
        step (skipped when the loss or the gradient is not finite).

        ``loss_fn(logits_shard, batch, normalizer) -> (loss, metrics)`` must divide its (loss-mask weighted)
        token sum by ``normalizer``: by default the mini-batch's weighted token count over all ranks, or the
        loss aggregation's (``losses.loss_aggregation``), the same on every rank, so that accumulation and
        data parallelism give the gradient of one big batch. Returns token-weighted metrics over all ranks.
        """
        if normalizer is None:
            normalizer = max(sum(r.loss_tokens for r in mini_batch.rollouts), 1.0)
        mbs = micro_batches(
            mini_batch.rollouts,
            mini_batch.micro_batches,
            keys,
            packed=self.packed,
            pad_multiple=sequence_multiple(self.model),
        )
        dp, n_micro = self.pg.dp.size(), len(mbs)
        sums: dict[str, torch.Tensor] = {}  # on the device: read once after the schedule, not per micro-batch

        def step_fn(mb, model):
            def loss_func(output):
                batch = {"labels": mb.labels, "loss_mask": mb.loss_mask, **mb.values}
                batch["advantages"] = mb.advantages
                loss, metrics = loss_fn(output, batch, normalizer)
                tokens = mb.loss_mask.sum()
                weighted = {"tokens": tokens, "loss/total": loss.detach() * normalizer}
                weighted.update({key: value.detach() * tokens for key, value in metrics.items()})
                for key, value in weighted.items():
                    sums[key] = sums[key] + value if key in sums else value
                # Megatron divides by the micro-batch count and DDP averages over DP: undo both
                return loss * n_micro * dp, {}

            return model_forward(model, mb), loss_func

        self.model.train()
        self.ddp.zero_grad_buffer()
        self.optimizer.zero_grad()
        clear_aux_losses_tracker()
        run_micro_batches(self.ddp, self.pg, step_fn, mbs, forward_only=False)
        router_aux = self._router_aux_loss(n_micro)
        local = dict(zip(sums, torch.stack([v.double() for v in sums.values()]).tolist())) if sums else {}
        totals = sum_over_ranks(local if self.is_last_stage and self.pg.tp.rank() == 0 else None)
        tokens = max(totals.pop("tokens", 0.0), 1.0)
        loss = totals.pop("loss/total", 0.0) / normalizer
        metrics = {key: value / tokens for key, value in totals.items()}
        metrics["loss/total"] = loss
        if router_aux is not None:
            metrics["loss/router_aux"] = router_aux
        self.optimizer.prepare_grads()
        grad_norm = float(self.optimizer.get_grad_norm())
        metrics["optim/grad_norm"] = grad_norm  # before clipping
        # the factor clipping scales the gradient by (Megatron: max_norm / (norm + 1e-6) when below 1)
        metrics["optim/grad_clip_coeff"] = (
            min(1.0, self.grad_clip / (grad_norm + 1e-6)) if self.grad_clip > 0 and math.isfinite(grad_norm) else 1.0
        )
        if math.isfinite(loss) and math.isfinite(grad_norm):
            self.optimizer.step()
            metrics["optim/skipped"] = 0.0
        else:
            metrics["optim/skipped"] = 1.0
        return metrics

    def _router_aux_loss(self, n_micro: int) -> Optional[float]:
        """The routers' load-balancing term of the objective (Megatron's Switch loss of each MoE layer times
        its coefficient, added to the gradient by Megatron itself): the mean over micro-batches and data-
        parallel ranks of its sum over layers. None for a dense student."""
        moe = self.model.arch.moe
        if moe is None:
            return None
        tracked = get_moe_layer_wise_logging_tracker().get("load_balancing_loss")
        local = float(tracked["values"].sum()) if tracked else 0.0  # this stage's layers, summed over micro-batches
        total = torch.tensor(
            local * moe.router_aux_loss_coef / n_micro, dtype=torch.float64, device=next(self.model.parameters()).device
        )
        dist.all_reduce(total)  # summed over stages, averaged over TP ranks (their tokens or slices) and DP
        return float(total) / (self.pg.tp.size() * self.pg.dp.size())

    def export_hf(self, out_dir: str, tokenizer_dir: Optional[str] = None) -> str:
        """Write the current weights as an HF directory (collective; rank 0 writes)."""
        write_hf_checkpoint(
            export_hf_weights(self.model, self.pg),
            out_dir,
            self.model.arch,
            tokenizer_dir=tokenizer_dir,
            write=dist.get_rank() == 0,
        )
        dist.barrier()
        return out_dir

    # -- checkpoints ------------------------------------------------------------------------------------------
    def sharded_state_dict(self, is_loading: bool = False) -> dict:
        model_sd = self.model.sharded_state_dict()
        # Each rank writes its own optimizer shard without gathering; a resume must keep the student's TP/PP
        # (the model part alone reshards freely, e.g. for export)
        optimizer_sd = self.optimizer.sharded_state_dict(
            model_sd, is_loading=is_loading, metadata={"distrib_optim_sharding_type": "dp_reshardable"}
        )
        return {"model": model_sd, "optimizer": optimizer_sd}

    def save(self, ckpt_dir: str) -> None:
        dist_checkpointing.save(self.sharded_state_dict(), ckpt_dir)

    def load(self, ckpt_dir: str) -> None:
        state = dist_checkpointing.load(self.sharded_state_dict(is_loading=True), ckpt_dir)
        self.model.load_state_dict(state["model"])
        load_state(self.optimizer, state["optimizer"])
