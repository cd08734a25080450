"""`tgpo plan` at the real models' shapes: its parameter counts equal those of the GPTModel stages Megatron-Core
builds (on the meta device, with process groups that only report their sizes), every shipped recipe gets a
table, and a recipe that cannot fit is refused naming the phase and a change that fits."""
import glob
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from tests.model_shapes import CONFIGS, TINY, write_config_dirs
from tgpo_megatron.models.arch import arch_from_hf_config
from tgpo_megatron.plan import stage_parameters

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
RECIPES = sorted(glob.glob(os.path.join(ROOT, "examples", "recipes", "*.yaml")))


class SizedGroup:
    """What Megatron-Core asks of a process group while it builds a model: its size and this rank."""

    def __init__(self, size: int, rank: int = 0):
        self._size, self._rank = size, rank

    def size(self) -> int:
        return self._size

    def rank(self) -> int:
        return self._rank


@pytest.fixture(scope="module")
def one_process_world():
    """Megatron-Core reads group sizes only when torch.distributed is initialised (else it assumes 1)."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def meta_stage(arch, tp: int, pp: int, stage: int):
    """The GPTModel stage our builder makes, on the meta device (no memory), for a TP rank of the layout."""
    from megatron.core.models.gpt import GPTModel
    from megatron.core.process_groups_config import ProcessGroupCollection

    from tgpo_megatron.models.builder import layer_spec, padded_vocab_size, transformer_config
    from tgpo_megatron.parallel import Layout

    one = SizedGroup(1)
    pg = ProcessGroupCollection(tp=SizedGroup(tp), pp=SizedGroup(pp, stage), cp=one, dp=one, dp_cp=one,
                                mp=SizedGroup(tp * pp), tp_cp=SizedGroup(tp), tp_dp_cp=SizedGroup(tp),
                                embd=None, pos_embd=None)
    config = transformer_config(arch, Layout(tp, pp), torch.bfloat16)
    config.use_cpu_initialization, config.perform_initialization = True, False  # shapes only
    with torch.device("meta"):
        return GPTModel(config=config, transformer_layer_spec=layer_spec(arch),
                        vocab_size=padded_vocab_size(arch.vocab_size, tp), max_sequence_length=4096,
                        pre_process=stage == 0, post_process=stage == pp - 1,
                        share_embeddings_and_output_weights=arch.tie_word_embeddings, position_embedding_type="rope",
                        rotary_base=arch.rope_theta, pg_collection=pg)


@pytest.mark.parametrize("name, tp, pp", [
    ("Qwen2.5-Math-1.5B-aligned", 1, 1), ("Qwen2.5-Math-1.5B-aligned", 2, 2),  # tied: a copy on the last stage
    ("Qwen2.5-Math-7B-aligned", 2, 1), ("Qwen2.5-Math-7B-aligned", 4, 2),
    ("Llama-3.1-70B-aligned", 8, 2), ("DeepSeek-R1-Distill-Qwen-32B-aligned", 4, 1),
])
def test_parameter_counts_equal_megatrons_own_stages(one_process_world, name, tp, pp):
    arch = arch_from_hf_config(CONFIGS[name])
    for stage in sorted({0, pp - 1}):
        model = meta_stage(arch, tp, pp, stage)
        built = sorted(p.numel() for p in model.parameters())
        assert sorted(stage_parameters(arch, tp, pp, stage)) == built, (name, tp, pp, stage)


def test_qwen3_qk_norm_counts(one_process_world):
    arch = arch_from_hf_config(dict(TINY, architectures=["Qwen3ForCausalLM"], model_type="qwen3", head_dim=48))
    built = sorted(p.numel() for p in meta_stage(arch, 2, 1, 0).parameters())
    assert sorted(stage_parameters(arch, 2, 1, 0)) == built


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_config_dirs(tmp_path_factory.mktemp("shapes"))


def plan(recipe, models, *args):
    """`tgpo plan` on a recipe with its model paths pointed at config.json files of the real shapes."""
    name = os.path.basename(recipe)
    from tgpo_megatron.config import read_recipe

    raw = read_recipe(recipe)
    paths = []
    for role in ("student", "teacher"):
        path = raw.get(role, {}).get("hf_path")
        if path:
            base = os.path.basename(path.rstrip("/"))
            paths.append(f"{role}.hf_path={models.get(base, models['tiny'])}")
    return subprocess.run([sys.executable, "-m", "tgpo_megatron.cli", "plan", "--config", recipe, *paths, *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT), name


@pytest.fixture(scope="module")
def models_with_tiny(models, tmp_path_factory):
    import json

    tiny = tmp_path_factory.mktemp("tiny")
    with open(tiny / "config.json", "w") as f:
        json.dump(TINY, f)
    return {**models, "tiny": str(tiny)}


@pytest.mark.parametrize("recipe", RECIPES, ids=os.path.basename)
def test_every_shipped_recipe_gets_a_table_and_fits_its_gpus(recipe, models_with_tiny):
    run, name = plan(recipe, models_with_tiny)
    assert run.returncode == 0, run.stdout + run.stderr
    for phase in ("generate", "refit", "student forward", "student train"):
        assert phase in run.stdout.splitlines()[0]
    assert "peak:" in run.stdout and "fits" in run.stdout


def test_a_recipe_that_cannot_fit_names_the_phase_and_a_change(models_with_tiny):
    recipe = [r for r in RECIPES if r.endswith("llama3.1_70b_tgpo.yaml")][0]
    run, _ = plan(recipe, models_with_tiny, "--gpu-memory-gb", "40")
    assert run.returncode == 1
    (line,) = [x for x in run.stderr.splitlines() if x.startswith("error:")]
    assert "the recipe does not fit" in line and "GiB per GPU" in line
