#!/bin/bash
# TGPO at 70B: Llama-3.1-70B distilled from DeepSeek-R1-Distill-Llama-70B on 8 nodes x 8 H100/H800 80 GB.
# Submit from the repository root; arguments are dotted overrides of the recipe (and --skip-plan):
#
#   CONTAINER_IMAGE=/lustre/images/tgpo.sqsh RUN_DIR=/lustre/$USER/runs/tgpo-70b \
#       sbatch --account=ACCOUNT --partition=PARTITION slurm/tgpo_70b.sh trainer.steps=300
#
# Settings and the requeue/stop protocol: slurm/train_job.sh. Choosing layouts: docs/scaling.md.
#
# Layouts (examples/recipes/llama3.1_70b_tgpo.yaml), 64 ranks:
#   student  TP8 x PP2, DP4   (TP inside a node, the two pipeline stages on two nodes)
#   teacher  TP8, 8 replicas  (frozen; forward only)
#   vLLM     TP8, 8 replicas  (one per node)
# Memory per GPU by phase: `tgpo plan --config examples/recipes/llama3.1_70b_tgpo.yaml` (its table is in
# docs/scaling.md). The job runs that check on one node before training and stops if the recipe does not fit
# (pass --skip-plan to skip it).
#SBATCH --job-name=tgpo-70b
#SBATCH --nodes=8
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --mem=0
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@900
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

RECIPE=${RECIPE:-examples/recipes/llama3.1_70b_tgpo.yaml}
# shellcheck source=slurm/train_job.sh
source "${SLURM_SUBMIT_DIR:-.}/slurm/train_job.sh"
