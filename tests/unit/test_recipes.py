"""Every shipped recipe loads, and its layouts fit the GPUs it states and the models' real shapes."""

import glob
import os

import pytest

from tests.model_shapes import CONFIGS, TINY
from tgpo_megatron.config import load_config
from tgpo_megatron.config.arch import arch_from_hf_config
from tgpo_megatron.config.validation import check_recipe

RECIPES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "examples", "recipes", "*.yaml")))


def arch_of(path):
    name = os.path.basename(path.rstrip("/"))
    return arch_from_hf_config(CONFIGS.get(name, TINY if path.startswith("runs/demo") else None))


@pytest.mark.parametrize("recipe", RECIPES, ids=os.path.basename)
def test_recipe_loads_and_its_layouts_fit(recipe):
    config = load_config(recipe)
    check_recipe(config, config.launch.world_size, arch_of)


def test_a_layout_that_does_not_fit_the_stated_gpus_is_refused():
    recipe = [r for r in RECIPES if r.endswith("llama3.1_70b_tgpo.yaml")][0]
    with pytest.raises(
        Exception,
        match=r"teacher layout \(teacher.tp=16, teacher.pp=1\): tp=16 does not divide "
        r"num_key_value_heads=8",
    ):
        check_recipe(load_config(recipe, ["teacher.tp=16"]), 64, arch_of)


def test_the_demo_recipe_ships_inside_the_package():
    """`tgpo demo` from an installed copy (no examples/ directory): its recipe is package data."""
    import re

    import tgpo_megatron
    from tgpo_megatron.toy import stages

    package = os.path.dirname(os.path.abspath(tgpo_megatron.__file__))
    assert os.path.isfile(stages.RECIPE) and os.path.abspath(stages.RECIPE).startswith(package + os.sep)
    with open(os.path.join(package, "..", "setup.py")) as f:
        assert re.search(r'package_data=\{"tgpo_megatron": \["toy/recipes/\*\.yaml"\]\}', f.read())
    assert os.path.samefile(os.path.join(package, "..", "examples", "recipes", "tiny_cpu.yaml"), stages.RECIPE)
