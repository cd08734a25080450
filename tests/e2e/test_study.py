"""`tgpo study --quick`: the plumbing of the study end to end (one seed, a few steps: nothing is learnt, so only
the structure of the results is checked; the science is in docs/study.md from the full design)."""

import json

import yaml

from tests.e2e.conftest import run_cli
from tgpo_megatron.toy.design import DESIGN, QUICK, StudyDesign, load_design, run_specs


def test_quick_study_runs_the_pilot_the_probe_and_every_run(tmp_path):
    out = tmp_path / "study"
    run = run_cli("-m", "tgpo_megatron.cli", "study", "--quick", "--out", out, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:] + run.stdout[-2000:]
    design = load_design(DESIGN, quick=True, seeds=None)
    specs = run_specs(design)
    # the shipped design with only the quick settings changed
    shipped = StudyDesign(**yaml.safe_load(open(DESIGN)))
    assert {k: getattr(design, k) for k in QUICK} == QUICK and design.seeds == shipped.seeds[:1]
    assert design.cells == shipped.cells and design.methods == shipped.methods

    study = json.loads((out / "study.json").read_text())
    pilot, probe, models = study["pilot"], study["probe"], study["models"]
    assert pilot["share"] == QUICK["carry_shares"][0] and 0.0 <= pilot["tried"]["0.0500"]["carry_reward"] <= 1.0
    # λ0 is the probe's ratio, and every run with a teacher term decays it to 0 at lambda_zero_step
    ratio = design.probe_fraction * probe["grad_norm"]["grpo"] / probe["grad_norm"]["teacher_ce"]
    assert probe["lambda_init"] == ratio and probe["lambda_decay"] == ratio / (design.lambda_zero_step - 1)
    seed = design.seeds[0]
    assert {"strong_semicolon", "strong_comma", f"student_s{seed}", f"peer_s{seed}"} <= set(models)

    # one launch ran every RL run, each to its last step, with its cell's teacher
    log = (out / "rl.log").read_text()
    assert f"run {len(specs)}/{len(specs)}" in log and log.count("Initializing a V1 LLM engine") == 2  # 2 ranks
    for spec in specs:
        run_dir = out / "rl" / spec.name
        assert (run_dir / "exit_code").read_text() == "0\n", spec.name
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert rows[-1]["step"] == design.rl_steps, spec.name
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["student"]["hf_path"] == models[f"student_s{seed}"]["path"], spec.name
        assert config["algorithm"]["lambda_init"] == probe["lambda_init"], spec.name
        peer = models[f"peer_s{seed}"]["path"]
        assert (config["teacher"]["hf_path"] == peer) == (spec.cell == "peer_large"), spec.name

    results = study["results"]
    assert set(results) == {f"{s.method}@{s.cell}" for s in specs}
    steps = [str(s) for s in range(0, design.rl_steps + 1, design.eval_every)]
    for key, seeds in results.items():
        curve = seeds[str(seed)]
        assert list(curve["accuracy"]) == steps, key
        assert all(0.0 <= v <= 1.0 for v in curve["accuracy"].values()), key
        assert curve["add3_carry"]["0"] == models[f"student_s{seed}"]["test_accuracy"]["add3_carry"], key
        assert (curve["gap_step1"] is not None) == (not key.startswith("grpo")), key
        assert 0.0 <= curve["final"]["accuracy"] <= 1.0, key
    # the step-1 gap is the teacher's, measured on the same step-1 rollouts by every method with that teacher
    large = {results[k][str(seed)]["gap_step1"] for k in ("rkl@strong_large", "tgpo_reg@strong_large")}
    assert len(large) == 1

    report = (out / "study.md").read_text()
    for text in ("## The pre-registered tests", "| H1 |", "| C3 |", "## Every run", "λ probe", "study_v2.png"):
        assert text in report
    assert (out / "study_v2.png").stat().st_size > 0
