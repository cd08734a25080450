"""The refit's memory order on a GPU, which CPU vLLM (no sleep mode) cannot show: vLLM sleeps at level 2 (no host
copy of weights the refit replaces), and the refit wakes the weights, loads them, and only then the KV cache."""

from types import SimpleNamespace

import tgpo_megatron.trainer as trainer
from tgpo_megatron.rollout.base import RefitStats
from tgpo_megatron.rollout.pipeline import RolloutPipeline
from tgpo_megatron.rollout.vllm_engine import VLLMEngine


class Recorder:
    def __init__(self, calls):
        self.calls = calls

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))


def test_vllm_sleeps_at_level_two_and_wakes_by_tag():
    calls = []
    engine = VLLMEngine.__new__(VLLMEngine)  # the real methods, on a recorder standing for vLLM's LLM
    engine._on_gpu, engine.llm = True, Recorder(calls)
    engine.sleep()
    engine.wake(["weights"])
    engine.wake()
    assert calls == [("sleep", (), {"level": 2}), ("wake_up", (["weights"],), {}), ("wake_up", (None,), {})]
    engine._on_gpu, calls[:] = False, []
    engine.sleep()
    engine.wake()
    assert calls == []  # CPU vLLM has no sleep mode


def test_the_refit_wakes_weights_then_loads_then_wakes_the_cache(monkeypatch):
    calls = []

    def refit_from_megatron(engine, model, pg):
        calls.append(("refit", (), {}))
        return RefitStats(seconds=1.0, bytes=8, tensors=1)

    monkeypatch.setattr(trainer, "refit_from_megatron", refit_from_megatron)
    engine = Recorder(calls)
    c = SimpleNamespace(
        engine=engine, pipeline=RolloutPipeline(engine, 0, None), student=SimpleNamespace(model=None, pg=None)
    )
    metrics = trainer.refit(c, 3)
    assert [(name, args) for name, args, _ in calls] == [
        ("wake", (["weights"],)),
        ("refit", ()),
        ("wake", (["kv_cache"],)),
    ]
    assert metrics["refit/bytes"] == 8.0
    assert c.pipeline.version == 3  # the weights' version that the next generation reports


def test_a_run_puts_the_engine_to_sleep_before_its_first_refit(monkeypatch):
    """A new engine starts awake (its KV cache mapped), a shared one as the previous run left it: the first
    refit must not load the student's weights beside a resident cache (tgpo plan's refit phase has none)."""
    calls = []
    config = SimpleNamespace(trainer=SimpleNamespace(export_hf=False))
    engine = Recorder(calls)
    c = SimpleNamespace(
        config=config,
        engine=engine,
        pipeline=RolloutPipeline(engine, 0, None),
        student=SimpleNamespace(model=None, pg=None, close=lambda: None),
        run=SimpleNamespace(logger=SimpleNamespace(close=lambda: None), start_step=0),
        groups=set(),
    )

    def refit_from_megatron(engine, model, pg):
        calls.append(("refit", (), {}))
        return RefitStats(seconds=1.0, bytes=8, tensors=1)

    monkeypatch.setattr(trainer, "setup", lambda config, services: c)
    monkeypatch.setattr(trainer, "refit_from_megatron", refit_from_megatron)
    monkeypatch.setattr(trainer, "run_steps", lambda *args: 0)
    monkeypatch.setattr(trainer, "destroy_global_parallel", lambda: None)
    monkeypatch.setattr(trainer, "release_memory", lambda: None)
    trainer.train(config, services=SimpleNamespace(side_for=lambda config: None))  # colocated
    assert [(name, args) for name, args, _ in calls] == [
        ("sleep", ()),
        ("wake", (["weights"],)),
        ("refit", ()),
        ("wake", (["kv_cache"],)),
    ]
