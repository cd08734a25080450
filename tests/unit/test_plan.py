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
from tgpo_megatron.config.arch import arch_from_hf_config
from tgpo_megatron.config.memory import stage_parameters

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


def meta_stage(arch, tp: int, pp: int, stage: int, ep: int = 1):
    """The GPTModel stage our builder makes, on the meta device (no memory), for a TP (and EP) rank."""
    from megatron.core.models.gpt import GPTModel
    from megatron.core.process_groups_config import ProcessGroupCollection

    from tgpo_megatron.config.layouts import Layout
    from tgpo_megatron.models.builder import layer_spec, transformer_config

    one = SizedGroup(1)
    pg = ProcessGroupCollection(
        tp=SizedGroup(tp),
        pp=SizedGroup(pp, stage),
        cp=one,
        dp=one,
        dp_cp=one,
        mp=SizedGroup(tp * pp),
        tp_cp=SizedGroup(tp),
        tp_dp_cp=SizedGroup(tp),
        embd=None,
        pos_embd=None,
        ep=SizedGroup(ep),
        expt_tp=one,
        expt_dp=one,
        tp_ep=SizedGroup(ep),
        tp_ep_pp=SizedGroup(ep * pp),
    )
    config = transformer_config(arch, Layout(tp, pp, ep), torch.bfloat16)
    config.use_cpu_initialization, config.perform_initialization = True, False  # shapes only
    with torch.device("meta"):
        return GPTModel(
            config=config,
            transformer_layer_spec=layer_spec(arch),
            vocab_size=arch.padded_vocab(tp),
            max_sequence_length=4096,
            pre_process=stage == 0,
            post_process=stage == pp - 1,
            share_embeddings_and_output_weights=arch.tie_word_embeddings,
            position_embedding_type="rope",
            rotary_base=arch.rope_theta,
            pg_collection=pg,
        )


@pytest.mark.parametrize(
    "name, tp, pp",
    [
        ("Qwen2.5-Math-1.5B-aligned", 1, 1),
        ("Qwen2.5-Math-1.5B-aligned", 2, 2),  # tied: a copy on the last stage
        ("Qwen2.5-Math-7B-aligned", 2, 1),
        ("Qwen2.5-Math-7B-aligned", 4, 2),
        ("Llama-3.1-70B-aligned", 8, 2),
        ("DeepSeek-R1-Distill-Qwen-32B-aligned", 4, 1),
    ],
)
def test_parameter_counts_equal_megatrons_own_stages(one_process_world, name, tp, pp):
    arch = arch_from_hf_config(CONFIGS[name])
    for stage in sorted({0, pp - 1}):
        model = meta_stage(arch, tp, pp, stage)
        built = sorted(p.numel() for p in model.parameters())
        assert sorted(stage_parameters(arch, tp, pp, stage)) == built, (name, tp, pp, stage)


@pytest.mark.parametrize("tp, pp, ep", [(1, 1, 8), (2, 2, 4)])
def test_expert_parameter_counts_equal_megatrons_own_stages(one_process_world, tp, pp, ep):
    """Qwen3-30B-A3B-Thinking-2507: 128 experts of 768 in 48 layers, a router per layer, whole experts per
    EP rank. (The token dispatcher creates a CUDA stream when built: the CPU compatibility layer stands in.)"""
    from tgpo_megatron.distributed.cpu_compat import enable_cpu_compat

    arch = arch_from_hf_config(CONFIGS["Qwen3-30B-A3B-Thinking-2507-aligned"])
    compat = enable_cpu_compat()
    try:
        for stage in sorted({0, pp - 1}):
            built = sorted(p.numel() for p in meta_stage(arch, tp, pp, stage, ep).parameters())
            assert sorted(stage_parameters(arch, tp, pp, stage, ep)) == built, (tp, pp, ep, stage)
    finally:
        compat.disable()


def test_qwen3_qk_norm_counts(one_process_world):
    arch = arch_from_hf_config(dict(TINY, architectures=["Qwen3ForCausalLM"], model_type="qwen3", head_dim=48))
    built = sorted(p.numel() for p in meta_stage(arch, 2, 1, 0).parameters())
    assert sorted(stage_parameters(arch, 2, 1, 0)) == built


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_config_dirs(tmp_path_factory.mktemp("shapes"))


def plan(recipe, models, *args):
    """`tgpo plan` on a recipe with its models' paths pointed at config.json files of their real shapes."""
    from tgpo_megatron.config import read_recipe

    raw, paths = read_recipe(recipe), []
    for role in ("student", "teacher"):
        path = raw.get(role, {}).get("hf_path")
        if path:
            paths.append(f"{role}.hf_path={models.get(os.path.basename(path.rstrip('/')), models['tiny'])}")
    return subprocess.run(
        [sys.executable, "-m", "tgpo_megatron.cli", "plan", "--config", recipe, *paths, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@pytest.mark.parametrize("recipe", RECIPES, ids=os.path.basename)
def test_every_shipped_recipe_gets_a_table_and_fits_its_gpus(recipe, models):
    """Including vLLM's share: gpu_memory_utilization x GPU must be free beside the student when it starts."""
    run = plan(recipe, models)
    assert run.returncode == 0, run.stdout + run.stderr
    header = run.stdout.splitlines()[0]
    assert all(phase in header for phase in ("generate", "refit", "student forward", "student train"))
    assert "peak:" in run.stdout and "(fits)" in run.stdout


@pytest.mark.parametrize(
    "recipe, overrides, phase",
    [
        ("llama3.1_70b_tgpo.yaml", ["--gpu-memory-gb", "40"], "student train: needs"),
        # the shipped values before vLLM's share was computed: 0.8 cannot be free beside the 7B student
        (
            "qwen2.5_math_7b_tgpo.yaml",
            ["rollout.gpu_memory_utilization=0.8"],
            "generate: rollout.gpu_memory_utilization",
        ),
        ("llama3.1_70b_tgpo.yaml", ["rollout.gpu_memory_utilization=0.85"], "generate: rollout.gpu_memory_utilization"),
        ("qwen2.5_math_7b_tgpo.yaml", ["student.recompute=none"], "student train: needs"),
    ],
)
def test_a_recipe_that_cannot_fit_names_the_phase_and_a_change(models, recipe, overrides, phase):
    run = plan(os.path.join(ROOT, "examples", "recipes", recipe), models, *overrides)
    assert run.returncode == 1
    (line,) = [x for x in run.stderr.splitlines() if x.startswith("error:")]
    assert "the recipe does not fit its GPUs" in line and phase in line, line
    if "40" not in overrides:
        assert "it fits with" in line


def test_plan_without_the_models_uses_the_shipped_shapes_and_says_so():
    """`tgpo plan --config <a GPU recipe>` on a laptop: the recipe's /models/... do not exist here."""
    recipe = os.path.join(ROOT, "examples", "recipes", "qwen2.5_math_7b_tgpo_a3b.yaml")
    run = subprocess.run(
        [sys.executable, "-m", "tgpo_megatron.cli", "plan", "--config", recipe],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for model in ("Qwen2.5-Math-7B-aligned", "Qwen3-30B-A3B-Thinking-2507-aligned"):
        assert (
            f"/models/{model} has no config.json here: planned with the shapes of examples/model_configs/{model}"
            in run.stdout
        )
    assert "of 79.6 GiB (fits)" in run.stdout  # an H100's real capacity by default
    missing = subprocess.run(
        [sys.executable, "-m", "tgpo_megatron.cli", "plan", "--config", recipe, "student.hf_path=/nowhere/X"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert missing.returncode == 2 and "error: /nowhere/X: no config.json here" in missing.stderr


def test_the_refit_counts_vllms_weights_one_gathered_tensor_and_its_graphs_never_the_kv_cache(models):
    """The engine sleeps before every refit (the first included), so the KV cache is never beside the gather;
    vLLM's CUDA graphs survive its sleep. By hand for Qwen2.5-Math-7B at TP2: the vocabulary matrix gathered
    into one buffer, 152,064 x 3,584 x 2 B, outweighs twice gate/up (2 x 2 x 18,944 x 3,584 x 2 B)."""
    from tgpo_megatron.config import load_config
    from tgpo_megatron.config.arch import load_arch
    from tgpo_megatron.config.memory import GIB
    from tgpo_megatron.config.plan import make_plan

    recipe = os.path.join(ROOT, "examples", "recipes", "qwen2.5_math_7b_tgpo.yaml")
    shapes = [
        f"student.hf_path={models['Qwen2.5-Math-7B-aligned']}",
        f"teacher.hf_path={models['DeepSeek-R1-Distill-Qwen-32B-aligned']}",
    ]
    plan = make_plan(load_config(recipe, shapes), load_arch)
    phases = {p.name: p.parts for p in plan.phases}
    assert plan.gpu_bytes == 79.6 * GIB
    refit = phases["refit"]
    assert refit["gathered tensor"] == 152064 * 3584 * 2
    assert refit["vLLM weights"] == pytest.approx(7.6e9 * 2 / 2, rel=0.02)  # 7.6B parameters, bf16, TP2
    assert not any("KV" in name for name in refit)
    for name, parts in phases.items():
        assert ("vLLM CUDA graphs (asleep)" in parts) == (name != "generate"), name
    eager = make_plan(load_config(recipe, [*shapes, "rollout.enforce_eager=true"]), load_arch)
    assert not any("graphs" in part for p in eager.phases for part in p.parts)
    # TP1 (the 1.5B student): nothing is gathered; the split of gate/up copies 2 x 8,960 x 1,536 x 2 B
    small = load_config(recipe, [f"student.hf_path={models['Qwen2.5-Math-1.5B-aligned']}", "student.tp=1", *shapes[1:]])
    (refit_small,) = [p.parts for p in make_plan(small, load_arch).phases if p.name == "refit"]
    assert refit_small["gathered tensor"] == 2 * 8960 * 1536 * 2


def test_the_plan_follows_the_recipes_loss_head_chunk(models):
    """The loss head keeps two fp32 [chunk, V/TP] buffers in every pass: at TP2 the 7B's 152,064-token vocabulary
    is 76,032 columns per rank, so 4,096-token chunks instead of 256 add 2 x 3,840 x 76,032 x 4 B to the
    student's forward (and the same at the teacher's TP4 vocabulary, 38,016 columns of its 152,064)."""
    from tgpo_megatron.config import load_config
    from tgpo_megatron.config.arch import load_arch
    from tgpo_megatron.config.plan import make_plan

    recipe = os.path.join(ROOT, "examples", "recipes", "qwen2.5_math_7b_tgpo.yaml")
    shapes = [
        f"student.hf_path={models['Qwen2.5-Math-7B-aligned']}",
        f"teacher.hf_path={models['DeepSeek-R1-Distill-Qwen-32B-aligned']}",
    ]
    totals = [
        {
            p.name: p.total
            for p in make_plan(load_config(recipe, [*shapes, f"algorithm.chunk_tokens={c}"]), load_arch).phases
        }
        for c in (256, 4096)
    ]
    assert totals[1]["student forward"] - totals[0]["student forward"] == 2 * 3840 * 76032 * 4
    assert totals[1]["teacher forward"] - totals[0]["teacher forward"] == 2 * 3840 * 38016 * 4


def test_a_separate_placement_puts_vllm_on_its_own_gpus_alone(models):
    """rollout.placement=separate: the training GPUs hold no part of vLLM in any phase (no pool, no weights at the
    refit, no CUDA graphs), the student's data parallelism counts the training ranks alone, and the rollout GPUs
    hold vLLM alone (the most it may take: the whole GPU but the reserve and the bucket the weights arrive in)."""
    from tgpo_megatron.config import load_config
    from tgpo_megatron.config.arch import load_arch
    from tgpo_megatron.config.memory import GIB
    from tgpo_megatron.config.plan import RESERVE_GIB, make_plan

    recipe = os.path.join(ROOT, "examples", "recipes", "qwen2.5_math_7b_tgpo.yaml")
    shapes = [
        f"student.hf_path={models['Qwen2.5-Math-7B-aligned']}",
        f"teacher.hf_path={models['DeepSeek-R1-Distill-Qwen-32B-aligned']}",
    ]
    colocated = make_plan(load_config(recipe, shapes), load_arch)
    separate = make_plan(
        load_config(recipe, [*shapes, "rollout.placement=separate", "rollout.ranks=4", "rollout.tp=2"]), load_arch
    )
    phases = {p.name: p.parts for p in separate.phases}
    student = load_arch(models["Qwen2.5-Math-7B-aligned"])
    # a bucket's worst: just short of full, then the bf16 embedding
    bucket = load_config(recipe).rollout.transfer_bucket_mb * 2**20 + student.vocab_size * student.hidden_size * 2
    assert phases["generate (rollout ranks)"] == {
        "vLLM (weights, KV cache, buffers)": load_config(recipe).rollout.gpu_memory_utilization * separate.gpu_bytes,
        "reserve": RESERVE_GIB * GIB,
        "weight bucket (at the refit)": bucket,
    }
    assert phases["refit"]["weight bucket (first training rank)"] == 2 * bucket  # its tensors and their copy
    training = [parts for name, parts in phases.items() if name != "generate (rollout ranks)"]
    assert training and not any("vLLM" in part for parts in training for part in parts)
    most = 1 - (RESERVE_GIB * GIB + bucket) / separate.gpu_bytes
    assert separate.max_gpu_memory_utilization == pytest.approx(most, abs=0.01)
    assert "ranks 0-3 (node 0) train; ranks 4-7 (node 0) run vLLM (rollout.placement: separate)" in separate.notes
    # fewer training ranks: a larger optimizer shard per GPU than colocated on all of them
    shard = {p.name: p.parts["optimizer shard"] for p in colocated.phases if "optimizer shard" in p.parts}
    assert phases["refit"]["optimizer shard"] > shard["refit"]


def test_the_split_names_the_nodes_of_each_side():
    from tgpo_megatron.config.sections import RolloutConfig

    separate = RolloutConfig(placement="separate", ranks=12)
    assert (
        separate.split(32, 8)
        == "ranks 0-19 (nodes 0-2) train; ranks 20-31 (nodes 2-3) run vLLM (rollout.placement: separate)"
    )
    assert RolloutConfig().split(8, 8) == "all 8 ranks train and run vLLM (colocated)"
