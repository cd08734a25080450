"""`tgpo study --quick`: the plumbing of the study end to end (one seed, a few steps: nothing is learnt, so only
the structure of the results is checked; the science is in docs/study.md from the full design)."""

import json

import yaml

from tests.e2e.conftest import run_cli
from tgpo_megatron.toy.design import DESIGN, QUICK, StudyDesign, load_design, run_specs


def test_quick_study_runs_every_method_in_one_launch(tmp_path):
    out = tmp_path / "study"
    run = run_cli("-m", "tgpo_megatron.cli", "study", "--quick", "--out", out, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:] + run.stdout[-2000:]
    design = load_design(DESIGN, quick=True, seeds=None)
    specs = run_specs(design)
    # the shipped design with only the quick settings changed
    shipped = StudyDesign(**yaml.safe_load(open(DESIGN)))
    assert {k: getattr(design, k) for k in QUICK} == QUICK and design.seeds == shipped.seeds[:1]
    assert design.teacher_fractions == shipped.teacher_fractions and design.claim_methods == shipped.claim_methods

    # one launch ran every RL run, each to its last step
    log = (out / "rl.log").read_text()
    assert f"run {len(specs)}/{len(specs)}" in log and log.count("Initializing a V1 LLM engine") == 2  # 2 ranks
    for spec in specs:
        run_dir = out / "rl" / spec.name
        assert (run_dir / "exit_code").read_text() == "0\n", spec.name
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        expected = design.switch_step if spec.phase == "distill" else design.rl_steps
        expected -= design.switch_step if spec.phase == "grpo" else 0
        assert rows[-1]["step"] == expected, spec.name
    # the sequential baseline's second phase starts from the first phase's export
    second = yaml.safe_load((out / "rl" / "sequential/teacher_1.00/seed1/grpo" / "config.yaml").read_text())
    assert second["student"]["hf_path"] == str(out / "rl" / "sequential/teacher_1.00/seed1/distill" / "hf")
    assert second["algorithm"]["name"] == "grpo" and not second["teacher"]["hf_path"]

    results = json.loads((out / "study.json").read_text())["results"]
    expected_keys = {"grpo@none"} | {
        f"{m}@{f:.2f}"
        for f in design.teacher_fractions
        for m in (design.claim_methods if f in (0.0, 1.0) else design.ladder_methods)
        if m != "grpo"
    }
    assert set(results) == expected_keys
    steps = [str(s) for s in range(0, design.rl_steps + 1, design.eval_every)]
    for key, result in results.items():
        assert list(result["accuracy"]) == steps, key
        assert all(0.0 <= mean <= 1.0 for mean, _ in result["accuracy"].values()), key
        teacher_model = not key.startswith(("grpo", "luffy"))
        assert (result["gap_step1"] is not None) == teacher_model, key
        assert (result["mismatch_step1"] is not None) == teacher_model, key
        if teacher_model:
            assert 0.0 <= result["mismatch_step1"][0] <= 1.0, key
    # the step-1 gap is the teacher's, measured on the same step-1 rollouts for every method
    for fraction in design.teacher_fractions:
        gaps = {results[f"{m}@{fraction:.2f}"]["gap_step1"][0] for m in design.ladder_methods}
        assert len(gaps) == 1, fraction

    report = (out / "study.md").read_text()
    for heading in ("## Claim 1", "## Claim 2", "## The teacher ladder", "study_claims.png", "study_ladder.png"):
        assert heading in report
    assert (out / "study_claims.png").stat().st_size > 0 and (out / "study_ladder.png").stat().st_size > 0
