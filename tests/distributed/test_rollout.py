"""vLLM colocated with the Megatron student: refits, parity, drift, bad refits (2 processes, CPU, fp32)."""

import json

import pytest
import torch

from tests.distributed.conftest import torchrun
from tests.distributed.workers.rollout_worker import PROMPTS

pytestmark = pytest.mark.slow  # vLLM engines
LOGP_TOLERANCE = 1e-3  # the bound on mean |Δ log p|; fp32 CPU measures about 1e-6
STUDENTS = ("2x1", "1x2")  # TPxPP, each with each engine: an engine serves the layouts of one launch in turn
ENGINES = (("qwen2_tied", 1), ("llama31_rope_scaling", 2))  # (model, rollout TP)
CASES = [(student, model, rollout_tp) for model, rollout_tp in ENGINES for student in STUDENTS]


def hf_greedy(hf_dir, prompt, steps):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
    out = model.generate(
        torch.tensor([prompt]), max_new_tokens=steps, do_sample=False, pad_token_id=0, eos_token_id=None
    )
    return out[0, len(prompt) :].tolist()


@pytest.fixture(scope="module")
def launches(tiny_models, tmp_path_factory):
    """One launch per engine, made when a case first needs it: per student layout, the worker's result; the
    greedy responses transformers gives (cut at EOS); the EOS id."""
    done = {}

    def launch(model: str, rollout_tp: int):
        if (model, rollout_tp) not in done:
            hf_dir = tiny_models[model]
            references = [hf_greedy(hf_dir, p, 12) for p in PROMPTS]
            # EOS = the 4th token transformers generates for the first prompt (one not generated earlier), so
            # the first greedy rollout must stop there and the others wherever that token first appears
            first = references[0]
            eos = next(t for i, t in enumerate(first) if i >= 3 and t not in first[:i])
            expected = [r[: r.index(eos) + 1] if eos in r else r for r in references]
            workdir = tmp_path_factory.mktemp("rollout")
            out = workdir / "result.json"
            students = ",".join(STUDENTS)
            torchrun(
                "rollout_worker.py",
                "--hf",
                hf_dir,
                "--students",
                students,
                "--rollout-tp",
                rollout_tp,
                "--eos",
                eos,
                "--workdir",
                workdir,
                "--out",
                out,
            )
            done[model, rollout_tp] = json.loads(out.read_text()), expected, eos
        return done[model, rollout_tp]

    return launch


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"student_{c[0]}-{c[1]}-rollout_tp{c[2]}")
def case(request, launches):
    student, model, rollout_tp = request.param
    results, expected, eos = launches(model, rollout_tp)
    return results[student], expected, eos


def test_engine_generates_what_transformers_generates_and_stops_at_eos(case):
    result, expected, eos = case
    assert result["before"] == expected
    assert result["before"][0][-1] == eos and result["before_finish"][0] == "stop"
    assert [f == "stop" for f in result["before_finish"]] == [r[-1] == eos for r in expected]


@pytest.mark.parametrize("refit", ["refit1", "refit2", "after_recovery"])
def test_after_refit_vllm_transformers_and_megatron_agree(case, refit):
    result, _, _ = case
    r = result[refit]
    assert r["hf_greedy_agrees"], "vLLM's greedy tokens are not the exported checkpoint's argmax"
    assert r["vllm_vs_megatron"] <= LOGP_TOLERANCE and r["vllm_vs_hf"] <= LOGP_TOLERANCE
    assert r["drift"]["rollout/logprob_abs_diff"] <= LOGP_TOLERANCE
    assert 1.0 <= r["drift"]["rollout/token_mult_prob_error"] <= 1.0 + LOGP_TOLERANCE


def test_refits_change_the_generations(case):
    result, _, _ = case
    assert result["refit1"]["responses"] != result["before"]
    assert result["refit2"]["responses"] != result["refit1"]["responses"]
    assert result["refit1"]["refit_bytes"] > 0


def test_bad_refit_names_the_tensor_and_blocks_generation(case):
    errors = case[0]["errors"]
    assert "refit: tensor" in errors["name"] and ".extra' is not a weight of the rollout model" in errors["name"]
    assert "has shape" in errors["shape"] and "the rollout model expects" in errors["shape"]
    for label in ("name", "shape"):
        assert errors[f"{label}_generate"].startswith("the rollout engine's weights are incomplete")


def test_sampling_is_seeded_and_identical_on_every_rank(case):
    result, _, _ = case
    assert result["sampling"]["n"] == [3] * len(PROMPTS)
    assert result["sampling"]["reproducible"] and result["sampling"]["distinct"] > 3
    assert result["ranks_agree"]
