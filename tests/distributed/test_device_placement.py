"""Device discipline without a GPU: the teacher's labels, the student's old log-probs and one update at TP=2
and PP=2 on a simulated accelerator (tests/simulated_accelerator.py), where a host tensor meeting a device
tensor, or a host tensor in a collective, fails as on a GPU. Each bug this check exists for, put back, fails
it (so the check can fail); the real code passes."""

import json

import pytest

from tests.distributed.conftest import torchrun

FAULTS = ("unmoved", "host_collective", "stage_on_host")


@pytest.fixture(scope="module")
def passes(tiny_models, tmp_path_factory):
    """The real code's pass, then one pass with each bug put back, in one launch."""
    out = tmp_path_factory.mktemp("device") / "device.json"
    torchrun("device_worker.py", "--hf", tiny_models["qwen2_tied"], "--out", out, "--faults", ",".join(("", *FAULTS)))
    with open(out) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def good_path(passes):
    result = passes[""]
    assert result["ok"], result.get("error")
    return result


def test_every_pass_keeps_its_tensors_on_the_device(good_path):
    result = good_path
    for layout in ("tp2", "pp2"):
        assert result[layout]["model_device"] == "meta"  # the simulated accelerator
        assert result[layout]["results_on_host"]  # per-token results come back to the host in one place
        assert result[layout]["grad_norm"] > 0 and result[layout]["skipped"] == 0.0


def test_an_update_reads_its_metrics_back_from_the_device_once_not_per_micro_batch(good_path):
    """Each host read of a device value waits for the GPU's queue to drain. Our code reads an update's loss and
    metrics once, after the schedule, however many micro-batches it has. (What Megatron-Core reads per micro-
    batch is its own: the unfused RoPE of the local spec on packed sequences, which Transformer Engine's fused
    kernel replaces, and the pipeline's exchange of variable activation shapes.)"""
    result = good_path
    for layout in ("tp2", "pp2"):
        by_count = {int(n): sites for n, sites in result[layout]["host_reads_by_micro_batches"].items()}
        assert sorted(by_count)[0] == 1 and sorted(by_count)[-1] > 1
        ours = {
            n: {where: c for where, c in sites.items() if "tgpo_megatron/" in where} for n, sites in by_count.items()
        }
        few, many = (ours[n] for n in sorted(ours))
        assert few == many and sum(many.values()) <= 1, ours


@pytest.mark.parametrize(
    "fault, error",
    [
        ("unmoved", "HostDeviceMix: embedding: a host tensor"),  # the first GPU failure the issue found
        ("host_collective", "HostTensorInCollective: dist.all_reduce got a host tensor"),
        ("stage_on_host", "HostDeviceMix: rms_norm: a host tensor"),
    ],
)
def test_each_placement_bug_is_caught(passes, fault, error):
    result = passes[fault]
    assert not result["ok"] and result["error"].startswith(error), result
