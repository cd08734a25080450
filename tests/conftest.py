"""Shared fixtures: tiny random HF models of every supported family, written once per test session."""

import fcntl
import json
import os

import pytest

# Each process of a 2-rank test gets one of the two cores; more threads only oversubscribe them.
os.environ.setdefault("OMP_NUM_THREADS", "1")

LLAMA31_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}

# The parity cases the foundation must cover, each with its own twist. The vocabulary (251) is divided by
# no TP size, so every model exercises vocabulary padding. The mixtures of experts (8 experts, head_dim 48
# against hidden/heads = 32) route both ways transformers does: top-2 renormalised, top-3 not.
MOE_MODELS = {
    "qwen3_moe_top2": dict(family="qwen3_moe", num_experts_per_tok=2, norm_topk_prob=True),
    "qwen3_moe_top3_unnormalised": dict(family="qwen3_moe", num_experts_per_tok=3, norm_topk_prob=False),
}
TINY_MODELS = {
    "qwen2_tied": dict(family="qwen2", tie_word_embeddings=True),
    "qwen3_head_dim48": dict(family="qwen3", head_dim=48),
    "llama31_rope_scaling": dict(family="llama", rope_scaling=LLAMA31_ROPE),
    **MOE_MODELS,
}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    from tgpo_megatron.models.tiny import save_tiny_hf_model

    root = tmp_path_factory.mktemp("tiny_models")
    return {
        name: save_tiny_hf_model(str(root / name), vocab_size=251, seed=i, **spec)
        for i, (name, spec) in enumerate(TINY_MODELS.items())
    }


FAULT_ROWS: list = []


@pytest.fixture
def fault_row(request):
    """``fault_row(fault, outcome, lost, exit_code)``: a row of the fault table in docs/reliability.md, recorded
    by a test once its assertions passed (tools/fault_table.py collects them; ``exit_code`` None: the run goes
    on)."""

    def record(fault: str, outcome: str, lost: str, exit_code):
        FAULT_ROWS.append(
            {"test": request.node.nodeid, "fault": fault, "outcome": outcome, "lost": lost, "exit_code": exit_code}
        )

    return record


def pytest_sessionfinish(session, exitstatus):
    """Add this session's rows to the file: several sessions share it (pytest-xdist's workers, and the two
    pytest runs of ``make test``), so each appends under a lock."""
    path = os.environ.get("TGPO_FAULT_ROWS")
    if path and FAULT_ROWS:
        with open(path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            text = f.read()
            f.seek(0)
            f.truncate()
            json.dump((json.loads(text) if text.strip() else []) + FAULT_ROWS, f, indent=1)
