"""vLLM in the training processes: one engine per rank, its own TP size, refit in place from a weight stream.

Under torchrun/srun every rank builds the engine with ``distributed_executor_backend="external_launcher"``
after ``torch.distributed`` is initialised. vLLM then lays the world out as DP x TP with TP groups of
consecutive ranks, independent of the student's Megatron layout: a student at TP=2 PP=2 on 4 ranks can roll
out at TP=1 (4 replicas) or TP=2 (2 replicas). Each replica generates its contiguous share of the prompts and
the results are gathered back in prompt order on every rank.

Refit streams Hugging Face-named full tensors into vLLM's in-place layerwise reload (weights processed layer
by layer as they arrive), so no rank holds a second copy of the model. On CPU, vLLM repacks linear weights
after loading, which is why a plain ``load_weights`` breaks on the second refit and the reload path is used.
Sleep mode (level 2) releases weights and KV cache while Megatron trains on GPU, keeping no host copy of the
weights since the refit replaces them; the refit wakes the weights alone, loads them, then wakes the KV cache,
so the cache is never mapped while a weight is being gathered. vLLM does not implement sleep mode on CPU,
where ``sleep``/``wake`` do nothing.
"""

from __future__ import annotations

import logging
from typing import Iterable, Optional, Sequence

import torch
import torch.distributed as dist

from tgpo_megatron.batching import contiguous_share
from tgpo_megatron.config.arch import load_arch
from tgpo_megatron.config.validation import check_positions, check_rollout_tp
from tgpo_megatron.rollout.base import Completion, RefitStats, SamplingSpec
from tgpo_megatron.rollout.refit import CheckedStream, checkpoint_shapes

log = logging.getLogger(__name__)


class RolloutEngineError(RuntimeError):
    pass


class _TokenizerFreeWarmup(logging.Filter):
    """``vllm.LLM`` warms its chat-template renderer up when it starts, which needs the tokenizer this engine
    never loads (it takes and returns token ids: ``skip_tokenizer_init``), and logs the failure as a warning with
    a traceback on every rank. Drops exactly that record, so that a normal start's log has no false alarm."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (record.getMessage() == "Chat template warmup failed" and "skip_tokenizer_init" in str(error))


def import_vllm():
    """vLLM, with the engine's modules loaded. vLLM keeps the exceptions of optional imports that failed (e.g.
    ``torchcodec``), and their tracebacks keep every frame that was on the stack at the first import alive: a
    process that runs several trainings imports it before any of them holds a model."""
    try:
        import vllm
    except ImportError as e:
        raise ImportError("rollouts need vLLM: pip install -e '.[gpu]' (GPU) or '.[cpu]' (CPU)") from e
    vllm.LLM  # noqa: B018 (loaded on first access)
    renderer_log = logging.getLogger("vllm.renderers.base")
    if not any(isinstance(f, _TokenizerFreeWarmup) for f in renderer_log.filters):
        renderer_log.addFilter(_TokenizerFreeWarmup())
    return vllm


class VLLMEngine:
    """A colocated vLLM engine implementing :class:`~tgpo_megatron.rollout.base.RolloutEngine`."""

    def __init__(
        self,
        hf_dir: str,
        *,
        eos_token_ids: Sequence[int],
        tp: int = 1,
        seed: int = 0,
        dtype: str = "auto",
        max_model_len: int = 4096,
        gpu_memory_utilization: float = 0.5,
        kv_cache_bytes: Optional[int] = None,
        enforce_eager: bool = False,
        placeholder_weights: bool = False,
        group: Optional[dist.ProcessGroup] = None,
    ):
        vllm = import_vllm()
        if not (dist.is_available() and dist.is_initialized()):
            # in-process (external_launcher) mode needs the world; otherwise vLLM would run its engine in a
            # separate process, where a weight stream cannot be handed over
            raise RolloutEngineError(
                "initialise torch.distributed (tgpo_megatron.distributed.platform.init_distributed) "
                "before building the rollout engine"
            )
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        check_rollout_tp(tp, world, load_arch(hf_dir))
        self.group, self.world, self.tp = group, world, tp
        self.dp_size, self.dp_rank, self.tp_rank = world // tp, rank // tp, rank % tp
        self.eos_token_ids = list(eos_token_ids)
        self.expected_weights = checkpoint_shapes(hf_dir)
        self._on_gpu = torch.cuda.is_available()
        kwargs = dict(
            model=hf_dir,
            skip_tokenizer_init=True,
            tensor_parallel_size=tp,
            dtype=dtype,
            seed=seed + self.dp_rank,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager,
            enable_sleep_mode=self._on_gpu,
        )
        if kv_cache_bytes:  # on CPU the fraction is of host RAM minus what the process holds: fixed is safer
            kwargs["kv_cache_memory_bytes"] = kv_cache_bytes
        if placeholder_weights:  # a refit replaces every weight before the first generation: skip reading them
            kwargs["load_format"] = "dummy"
        free_before = torch.cuda.mem_get_info()[0] if self._on_gpu else None
        self.llm = vllm.LLM(distributed_executor_backend="external_launcher", **kwargs)
        if free_before is not None:
            log.info(
                "GPU memory free before vLLM started: %.2f GiB, after: %.2f GiB",
                free_before / 1024**3,
                torch.cuda.mem_get_info()[0] / 1024**3,
            )
        self._sampling_params = vllm.SamplingParams
        self._broken: Optional[str] = None

    @classmethod
    def from_config(
        cls,
        rollout,
        model,
        *,
        max_model_len: int,
        eos_token_ids: Sequence[int],
        seed: int = 0,
        hf_dir: Optional[str] = None,
        placeholder_weights: bool = False,
    ) -> "VLLMEngine":
        """The engine a recipe describes (``rollout`` and ``student`` sections); ``hf_dir`` overrides the
        directory vLLM starts from (e.g. an exported checkpoint). ``placeholder_weights``: start from random
        weights instead of reading the checkpoint, for a caller that refits before generating (the trainer:
        at scale every rank would otherwise read the whole model from shared storage for nothing)."""
        from tgpo_megatron.distributed.platform import torch_dtype

        hf_dir = hf_dir or model.hf_path
        check_positions(max_model_len, load_arch(hf_dir), f"prompts plus responses ({hf_dir})")
        return cls(
            hf_dir,
            eos_token_ids=eos_token_ids,
            tp=rollout.tp,
            seed=seed,
            dtype=str(torch_dtype(rollout.dtype)).removeprefix("torch."),
            max_model_len=max_model_len,
            gpu_memory_utilization=rollout.gpu_memory_utilization,
            kv_cache_bytes=int(rollout.kv_cache_gb * 1024**3) if rollout.kv_cache_gb else None,
            enforce_eager=rollout.enforce_eager,
            placeholder_weights=placeholder_weights,
        )

    # -- generation --------------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingSpec) -> list[list[Completion]]:
        if self._broken:
            raise RolloutEngineError(
                f"the rollout engine's weights are incomplete: {self._broken}; refit again before generating"
            )
        mine = contiguous_share(len(prompts), self.dp_size, self.dp_rank)
        local = self._generate_local([prompts[i] for i in mine], [i for i in mine], sampling) if mine else []
        if self.world == 1:
            return local
        gathered: list = [None] * self.world
        dist.all_gather_object(gathered, local if self.tp_rank == 0 else None, group=self.group)
        return [c for part in gathered[:: self.tp] for c in part]

    def _generate_local(self, prompts, indices, sampling: SamplingSpec) -> list[list[Completion]]:
        params = [
            self._sampling_params(
                n=sampling.n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k,
                max_tokens=sampling.max_tokens,
                seed=None if sampling.seed is None else sampling.seed + i,
                logprobs=0,
                stop_token_ids=self.eos_token_ids,
                detokenize=False,
            )
            for i in indices
        ]
        outputs = self.llm.generate([{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False)
        return [
            [
                Completion(
                    list(c.token_ids), [lp[t].logprob for t, lp in zip(c.token_ids, c.logprobs)], c.finish_reason
                )
                for c in out.outputs
            ]
            for out in outputs
        ]

    # -- weights -----------------------------------------------------------------------------------------
    def update_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> RefitStats:
        """Load a full stream of HF-named tensors in layer order; every rank must pass the same stream.

        A stream that fails part-way leaves the engine refusing to generate until a complete refit succeeds.
        """
        stream = CheckedStream(weights, self.expected_weights)
        self._broken = "a refit is in progress"
        if not self._on_gpu:
            self._drop_packed_expert_kernels()
        try:
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(stream)})
        except Exception as e:
            self._broken = f"the last refit failed ({e})"
            self._abort_reload()
            raise
        self._reprocess_tied_head()
        self.llm.reset_prefix_cache()
        self._broken = None
        return stream.stats()

    def _runner(self):
        return self.llm.llm_engine.model_executor.driver_worker.worker.model_runner

    def _reprocess_tied_head(self) -> None:
        """A tied LM head receives no tensor of its own, so the layerwise reload skips its post-processing;
        on CPU that post-processing packs the weight for the GEMM kernel, and the head would keep computing
        with the old embedding. Re-run it on the (now updated) shared weight."""
        model = self._runner().get_model()
        head = getattr(model, "lm_head", None)
        embed = getattr(getattr(model, "model", None), "embed_tokens", None)
        if head is not None and embed is not None and getattr(head, "weight", None) is getattr(embed, "weight", 0):
            head.quant_method.process_weights_after_loading(head)

    def _drop_packed_expert_kernels(self) -> None:
        """vLLM on CPU packs a mixture of experts' weights into a kernel object when it loads them
        (``quant_method.moe_kernel``) and keeps computing with it when the in-place reload writes new weights:
        the tiny MoE student's rollouts then differ from the trainer's log-probs by 0.5 nats per token on
        average, against 4e-7 with this. Without the kernel, the reload's post-processing packs the new
        weights again."""
        for module in self._runner().get_model().modules():
            method = getattr(module, "quant_method", None)
            if getattr(method, "moe_kernel", None) is not None:
                method.moe_kernel = None

    def _abort_reload(self) -> None:
        """Finish vLLM's layerwise reload after a stream failed part-way, so that the next refit starts from
        a consistent model (layers never reached keep their previous weights, the rest are replaced)."""
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload.layerwise import finalize_layerwise_reload

        runner = self._runner()
        with set_current_vllm_config(runner.vllm_config):
            finalize_layerwise_reload(runner.get_model(), runner.vllm_config.model_config)

    def sleep(self) -> None:
        if self._on_gpu:
            self.llm.sleep(level=2)

    def wake(self, tags: Optional[Sequence[str]] = None) -> None:
        if self._on_gpu:
            self.llm.wake_up(list(tags) if tags is not None else None)

    def close(self) -> None:
        """vLLM's teardown also destroys torch.distributed's default group: call it last."""
        self.llm.llm_engine.engine_core.shutdown()
