"""`tgpo demo --quick`: every stage completes and leaves its files; the exported student works in transformers.

The quick demo's step counts are far too small to learn anything; the full demo's numbers are in the README.
"""

import json
import os

from tests.e2e.conftest import run_cli


def test_quick_demo_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    run = run_cli("-m", "tgpo_megatron.cli", "demo", "--quick", "--out", out, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:] + run.stdout[-2000:]
    for stage in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert stage in run.stdout
    for path in (
        "data/train.parquet",
        "data/test.parquet",
        "sft/teacher/hf/model.safetensors",
        "sft/student/hf/model.safetensors",
        "rl/grpo/metrics.jsonl",
        "rl/rkl/metrics.jsonl",
        "rl/tgpo_reg/metrics.jsonl",
        "results.md",
        "results.json",
        "demo.png",
        "best_student_hf/config.json",
    ):
        assert (out / path).exists(), path
    results = json.loads((out / "results.json").read_text())
    assert set(results) >= {"grpo", "rkl", "tgpo_reg", "best", "student_accuracy", "teacher_accuracy"}
    assert "| tgpo_reg |" in (out / "results.md").read_text()

    # the exported student loads in transformers (with its own tokenizer, as training reads it) and generates
    # from the task's prompt; the quick demo trains too little for the answer to be right, or even non-empty
    import torch
    from transformers import AutoModelForCausalLM

    from tgpo_megatron.data.tokenizer import ResponseDecoder, load_tokenizer

    best = os.path.join(out, "best_student_hf")
    tokenizer = load_tokenizer(best)
    model = AutoModelForCausalLM.from_pretrained(best).eval()
    prompt = (
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "357+068="}], add_generation_prompt=True, tokenize=False
        )
        + "<think>\n"
    )
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    assert tokenizer.decode(ids[0]) == prompt  # the prompt's final newline included
    with torch.no_grad():
        answer = model.generate(
            ids,
            max_new_tokens=24,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )[0, ids.shape[1] :]
    assert 0 < answer.numel() <= 24 and int(answer.max()) < len(tokenizer)
    assert isinstance(ResponseDecoder.for_model(tokenizer, best).decode(answer.tolist()), str)
