"""The CPU compatibility layer: off until asked for, does what Megatron-Core needs, and undoes itself."""

import pytest
import torch

from tgpo_megatron.distributed import cpu_compat, platform


def test_not_applied_at_import():
    import tgpo_megatron.models  # noqa: F401  (imports Megatron-Core and everything that uses it)

    assert not cpu_compat.cpu_compat_active()
    with pytest.raises(AssertionError, match="not compiled with CUDA"):
        torch.zeros(1, device="cuda")


def test_detects_cpu_and_gloo():
    assert platform.detect_platform() == platform.Platform(torch.device("cpu"), "gloo")


def test_enable_then_disable_restores_everything():
    originals = {
        name: getattr(torch.cuda, name)
        for name in ("current_device", "synchronize", "get_rng_state", "Stream", "Event", "current_stream")
    }
    compat = cpu_compat.enable_cpu_compat()
    try:
        assert cpu_compat.enable_cpu_compat() is compat  # idempotent
        assert torch.cuda.current_device() == torch.device("cpu")
        assert torch.zeros(2, device="cuda").device.type == "cpu"
        assert torch.empty(2, device=torch.cuda.current_device()).device.type == "cpu"
        assert torch.ones(2).cuda().device.type == "cpu"
        assert torch.ones(2).to("cuda").device.type == "cpu"
        assert torch.ones(2).type() == "torch.cuda.FloatTensor"
        assert torch.ones(2, dtype=torch.bfloat16).type() == "torch.cuda.BFloat16Tensor"
        assert torch.ones(2).type("torch.cuda.HalfTensor").dtype == torch.float16
        torch.cuda.synchronize()
        with torch.cuda.stream(torch.cuda.Stream()):
            event = torch.cuda.Event()
            event.record()
        # the CUDA RNG calls Megatron's tracker makes map to the CPU generator
        state = torch.cuda.get_rng_state()
        a = torch.rand(3)
        torch.cuda.set_rng_state(state)
        assert torch.equal(torch.rand(3), a)
    finally:
        compat.disable()
    assert not cpu_compat.cpu_compat_active()
    for name, original in originals.items():
        assert getattr(torch.cuda, name) is original, name
    assert torch.ones(2).type() == "torch.FloatTensor"
    with pytest.raises(AssertionError, match="not compiled with CUDA"):
        torch.zeros(1, device="cuda")
