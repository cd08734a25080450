"""The ``tgpo`` command.

tgpo demo                      the embedded default on tiny models (CPU, 2 processes)
tgpo study [--quick]           the paper's claim at toy scale: a skill the student lacks, 5 seeds, pre-registered
tgpo train --config R.yaml     TGPO (or any baseline) training; resumes an existing run directory
tgpo train-many runs.json      several training runs in one launch (one start-up; the study and the demo)
tgpo eval --config R.yaml      avg@n / pass@1 of a model on the recipe's eval sets (vLLM)
tgpo sft --config R.yaml       supervised fine-tuning on reference responses (makes the demo's models)
tgpo plan --config R.yaml      memory per GPU of each phase of a step; exits 1 if the recipe does not fit
tgpo doctor [--config R.yaml]  whether this environment (GPUs, torch, vLLM, TE) can run the recipe
tgpo check-parity ...          Megatron vs transformers logits (run under torchrun)
tgpo convert-hf-to-megatron    HF directory -> Megatron checkpoint
tgpo convert-megatron-to-hf    Megatron checkpoint -> HF directory
tgpo tiny-model --family F --out DIR   write a tiny random HF model
tgpo align-tokenizer ...       one token-id space for a teacher and a student (tools/align_tokenizer.py)
tgpo measure-divergence ...    the paper's teacher-student gap report (tools/measure_divergence.py)
tgpo prepare-data split|filter the paper's eval sets and teacher-filtered training set (tools/prepare_data.py)
tgpo plot-metrics RUN_DIR      a run's metrics.jsonl as PNG curves (tools/plot_metrics.py)
tgpo verify-checkpoints RUN_DIR  each checkpoint of a run against its manifest, as a resume checks it
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings


def command_parser(prog, doc: str) -> argparse.ArgumentParser:
    """The argument parser of a command: its docstring's first paragraph as the description, the whole of it
    as the epilog of ``--help``."""
    return argparse.ArgumentParser(
        prog=prog, description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc
    )


# command -> (module, function), imported only when the command runs: `tgpo --help` stays instant
COMMANDS = {
    "demo": ("tgpo_megatron.toy.demo", "main"),
    "study": ("tgpo_megatron.toy.study", "main"),
    "train": ("tgpo_megatron.trainer", "main"),
    "train-many": ("tgpo_megatron.train_many", "main"),
    "eval": ("tgpo_megatron.eval", "main"),
    "sft": ("tgpo_megatron.sft", "main"),
    "plan": ("tgpo_megatron.config.plan", "main"),
    "doctor": ("tgpo_megatron.config.doctor", "main"),
    "check-parity": ("tgpo_megatron.models.parity", "main"),
    "convert-hf-to-megatron": ("tgpo_megatron.models.convert", "hf_to_megatron_main"),
    "convert-megatron-to-hf": ("tgpo_megatron.models.convert", "megatron_to_hf_main"),
    "tiny-model": ("tgpo_megatron.models.tiny", "main"),
    "align-tokenizer": ("tgpo_megatron.data.align", "main"),
    "measure-divergence": ("tgpo_megatron.divergence", "main"),
    "prepare-data": ("tgpo_megatron.prepare_data", "main"),
    "plot-metrics": ("tgpo_megatron.run.plot", "main"),
    "verify-checkpoints": ("tgpo_megatron.run.manifest", "main"),
}


def main(argv=None) -> int:
    # Megatron-Core warns on import about optional kernels (Apex, Transformer Engine) that a CPU or local-spec
    # run does not use; asking for them explicitly (transformer_impl=transformer_engine) fails with a hint.
    # Set for the command's process only: importing the package changes no one's warning filters.
    warnings.filterwarnings("ignore", message=r".*(Apex|Transformer Engine).*(not installed|Falling back).*")
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    module, function = COMMANDS[argv[0]]
    return getattr(importlib.import_module(module), function)(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
