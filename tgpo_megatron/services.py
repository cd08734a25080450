"""What consecutive training runs of one launch share (``tgpo train-many``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Optional

from tgpo_megatron.config import Config
from tgpo_megatron.config.arch import load_arch
from tgpo_megatron.data.tokenizer import eos_token_ids
from tgpo_megatron.distributed.worlds import Side, split_world
from tgpo_megatron.errors import UserError
from tgpo_megatron.rewards import RewardScorer, score_response
from tgpo_megatron.rollout import RolloutEngine
from tgpo_megatron.rollout.remote import RemoteEngine

ENGINE_KEYS = ("tp", "dtype", "gpu_memory_utilization", "kv_cache_gb", "enforce_eager")
"""The ``rollout`` keys the engine is built from (``VLLMEngine.from_config``); sampling is set per request and the
rest of the section is the trainer's."""


@dataclass
class Services:
    """What consecutive runs of one launch share: the rollout engine, whose start-up is most of a short run's
    (every run refits it before generating, and it samples with per-request seeds, so it carries nothing from
    one run to the next), and the stateless reward workers. A run that needs other engine settings is refused:
    vLLM cannot start twice in one process."""

    engine: Optional[RolloutEngine] = None
    scorer: Optional[RewardScorer] = None
    engine_settings: Optional[dict] = None
    scorer_settings: Optional[dict] = None
    side: Optional[Side] = None
    """This rank's side of a job with a separate rollout placement (``distributed.worlds``)."""

    def side_for(self, config: Config) -> Optional[Side]:
        """With a separate rollout placement, this rank's side (the job's world split on the first call, before
        ``torch.distributed`` starts); None when colocated."""
        if config.rollout.placement != "separate":
            if self.side is not None:
                raise UserError(f"{config.trainer.output_dir}: a colocated run after a separate one; launch it alone")
            return None
        if self.side is None:
            self.side = split_world(config.rollout.ranks)
        elif self.side.rollout_ranks != config.rollout.ranks:
            raise UserError(f"{config.trainer.output_dir}: rollout.ranks differs from the first run's")
        return self.side

    @staticmethod
    def settings_of(config: Config, tokenizer) -> dict:
        """What the rollout engine is built from, besides the weights every run refits."""
        return {
            **{f"rollout.{key}": getattr(config.rollout, key) for key in ENGINE_KEYS},
            "student": load_arch(config.student.hf_path),
            "max_model_len": config.data.max_prompt_length + config.rollout.max_response_length,
            "eos_token_ids": eos_token_ids(tokenizer, config.student.hf_path),
        }

    def engine_for(self, config: Config, tokenizer) -> RolloutEngine:
        from tgpo_megatron.rollout.vllm_engine import VLLMEngine

        settings = self.settings_of(config, tokenizer)
        if self.engine is None and self.side is not None:  # the engine runs on the rollout ranks
            bucket_bytes = int(config.rollout.transfer_bucket_mb * 2**20)
            self.engine = RemoteEngine.connect(config.student.hf_path, self.side, bucket_bytes)
            self.engine_settings = settings
        elif self.engine is None:
            self.engine = VLLMEngine.from_config(
                config.rollout,
                config.student,
                max_model_len=settings["max_model_len"],
                eos_token_ids=settings["eos_token_ids"],
                seed=config.trainer.seed,
                placeholder_weights=True,
            )  # train() refits before the first generation
            self.engine_settings = settings
        elif settings != self.engine_settings:
            differing = sorted(k for k in settings if settings[k] != self.engine_settings[k])
            raise UserError(
                f"{config.trainer.output_dir}: the runs of one launch share one rollout engine, and this run's "
                f"{', '.join(differing)} differ from the first run's; launch it separately"
            )
        return self.engine

    def scorer_for(self, config: Config) -> RewardScorer:
        settings = {
            "workers": config.reward.workers,
            "timeout_s": config.reward.timeout_s,
            "any_true": config.reward.any_true,
        }
        if settings != self.scorer_settings:
            if self.scorer is not None:
                self.scorer.close()
            self.scorer = RewardScorer(
                workers=settings["workers"],
                timeout_s=settings["timeout_s"],
                fn=partial(score_response, any_true=settings["any_true"]),
            )
            self.scorer_settings = settings
        return self.scorer

    def close(self) -> None:
        if self.scorer is not None:
            self.scorer.close()
        if self.engine is not None:
            self.engine.close()  # last: vLLM's teardown destroys the default process group
