"""Our Megatron-Core models against transformers, across layouts, through a round trip and checkpoints."""

import json

import pytest

from tests.conftest import MOE_MODELS, TINY_MODELS
from tests.distributed.conftest import torchrun

LOGIT_TOLERANCE = 1e-4
pytestmark = pytest.mark.slow  # one launch builds every tiny model at every layout (about 30 s)


@pytest.fixture(scope="module")
def results(tiny_models, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("models_worker")
    out = workdir / "result.json"
    models = ",".join(f"{name}={path}" for name, path in tiny_models.items())
    torchrun("models_worker.py", "--models", models, "--workdir", workdir, "--out", out)
    return json.loads(out.read_text())


@pytest.mark.parametrize("model", TINY_MODELS)
@pytest.mark.parametrize("layout", ["tp1_pp1_ep1", "tp2_pp1_ep1", "tp1_pp2_ep1"])
@pytest.mark.parametrize("packed", ["", "_packed"])
def test_logits_match_transformers(results, model, layout, packed):
    """Padded rows, and the sequences packed into one row (THD) as every training pass runs them."""
    assert results["parity"][model][layout + packed] <= LOGIT_TOLERANCE


@pytest.mark.parametrize("model", MOE_MODELS)
@pytest.mark.parametrize("packed", ["", "_packed"])
def test_expert_parallel_logits_match_transformers(results, model, packed):
    assert results["parity"][model]["tp1_pp1_ep2" + packed] <= LOGIT_TOLERANCE


@pytest.mark.parametrize("model", TINY_MODELS)
def test_hf_megatron_hf_round_trip_is_bit_exact(results, model):
    assert results["roundtrip_tensors_equal"][model]
    assert results["roundtrip_logits_diff"][model] == 0.0


@pytest.mark.parametrize("model", TINY_MODELS)
def test_checkpoint_reshards_between_tp2_and_pp2(results, model):
    assert results["ckpt_tp2_to_pp2"][model] == 0.0
    assert results["ckpt_pp2_to_tp2"][model] == 0.0


@pytest.mark.parametrize("model", TINY_MODELS)
def test_model_on_its_own_groups_beside_another_global_layout(results, model):
    assert results["own_groups"][model] <= LOGIT_TOLERANCE


@pytest.mark.parametrize("model", MOE_MODELS)
def test_checkpoint_saved_at_ep2_loads_at_ep1_and_tp2(results, model):
    assert results["ckpt_ep2_to_ep1"][model] == 0.0
    assert results["ckpt_ep2_to_tp2"][model] == 0.0


@pytest.mark.parametrize("model", MOE_MODELS)
def test_expert_parallel_model_on_its_own_groups(results, model):
    assert results["own_groups_ep2"][model] <= LOGIT_TOLERANCE
