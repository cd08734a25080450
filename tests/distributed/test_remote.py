"""The rollout engine on a rank of its own (2 processes: a training rank, a rollout rank): refit over the bridge
from a Megatron student in buckets, its parameters equal the student's bitwise and it samples exactly what a
colocated engine with the same weights samples."""

import json

from tests.distributed.conftest import torchrun


def test_a_remote_engine_refit_over_the_bridge_samples_as_a_colocated_one(tiny_models, tmp_path):
    out = tmp_path / "result.json"
    torchrun("remote_worker.py", "--hf", tiny_models["qwen2_tied"], "--eos", 7, "--out", out, timeout=180)
    result = json.loads(out.read_text())
    assert result["tensors"] > 0 and result["bytes"] > 0
    assert result["loaded"]  # the engine was given every tensor of the student, bitwise
    assert result["unequal"] == []  # and each parameter it holds as a tensor equals the student's bitwise
    assert "model.embed_tokens.weight" in result["engine_tensors"]
    assert result["remote"] == result["local"]  # token ids, the engine's log-probs and finish reasons, bitwise
    assert len(result["remote"]) == 4 and all(len(cs) == 3 for cs in result["remote"])
