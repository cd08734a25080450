#!/bin/bash
# The paper's main table: Qwen2.5-Math-7B distilled from its mixture-of-experts teacher,
# Qwen3-30B-A3B-Thinking-2507, on one node of 8 H100/H800 80 GB (the authors' hardware). Submit from the
# repository root; arguments are dotted overrides of the recipe (and --skip-plan):
#
#   CONTAINER_IMAGE=/lustre/images/tgpo.sqsh RUN_DIR=/lustre/$USER/runs/tgpo-7b-a3b \
#       sbatch --account=ACCOUNT --partition=PARTITION slurm/tgpo_7b_a3b.sh
#
# Settings and the requeue/stop protocol: slurm/train_job.sh. Choosing layouts: docs/scaling.md.
#
# Layouts (examples/recipes/qwen2.5_math_7b_tgpo_a3b.yaml), 8 ranks:
#   student  TP2, DP4
#   teacher  TP1, EP8: 16 of the 128 experts of every layer per GPU, 8 replicas of attention
#            (30.5B, 3.3B active per token; frozen, forward only)
#   vLLM     TP2, 4 replicas
# Memory per GPU by phase: `tgpo plan --config examples/recipes/qwen2.5_math_7b_tgpo_a3b.yaml` (its table is in
# docs/scaling.md). The job runs that check on one node before training and stops if the recipe does not fit
# (pass --skip-plan to skip it).
#SBATCH --job-name=tgpo-7b-a3b
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --mem=0
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@900
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

RECIPE=${RECIPE:-examples/recipes/qwen2.5_math_7b_tgpo_a3b.yaml}
# shellcheck source=slurm/train_job.sh
source "${SLURM_SUBMIT_DIR:-.}/slurm/train_job.sh"
