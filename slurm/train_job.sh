# shellcheck shell=bash
# The body of the Slurm scripts, sourced by slurm/tgpo_*.sh after their #SBATCH header has set RECIPE:
# the container, the environment, one torchrun per node, and what happens when the job ends.
# The script's arguments are dotted recipe overrides, passed to the trainer, and optionally --skip-plan.
#
# Before training, on one node: `tgpo doctor` checks that the environment can run the recipe (GPUs, torch,
# vLLM built for it, Transformer Engine where the recipe uses it), then `tgpo plan` that the recipe is valid and
# fits the GPUs (memory per GPU of each phase of a step); if not, the job ends without a requeue: exit 1 with
# what to fix, or 2 for a bad recipe. --skip-plan skips the memory check (the recipe is still checked).
#
# How the job ends follows the trainer's exit code (tgpo_megatron/errors.py), which it writes to
# $RUN_DIR/exit_code since torchrun reports every failed worker as 1: 0 done; 2 bad input, 3 diverged and 4 disk
# full end the job (a retry would fail alike); 75 (stopped on request) is requeued to resume; anything else is a
# crash, requeued up to MAX_FAILURE_RESTARTS times.
#
# Settings (environment variables, all optional):
#   RUN_DIR          run directory on the shared filesystem: checkpoints, metrics, the HF export
#                    (default: $SLURM_SUBMIT_DIR/runs/$SLURM_JOB_NAME); a requeued job resumes from it
#   CONTAINER_IMAGE  squashfs image with this project's environment, as slurm/build_image.sh makes it
#                    (default: tgpo_megatron.sqsh in the repository); "none" runs in the environment sbatch
#                    was called from (a virtual environment with pip install -e ".[gpu]", docs/gpu.md)
#   CONTAINER_MOUNTS pyxis --container-mounts (default: the repository, RUN_DIR, /models and /data)
#   MAX_FAILURE_RESTARTS  requeues after failures (a crash, a lost node) without a new checkpoint in between
#                    before giving up (default 3)
#
# Stopping: Slurm sends SIGUSR1 to this shell 900 s before the time limit (--signal=B:USR1@900) and SIGTERM
# when it preempts the job. Either makes this script write $RUN_DIR/STOP; the trainer sees it at the end of
# its step on every rank, saves a checkpoint and exits, and the job is requeued to resume from there. A
# preemption gives the trainer only Slurm's grace time (torchrun kills its workers 30 s after SIGTERM), so
# the run may resume from the previous periodic checkpoint (trainer.save_every) instead.
set -euo pipefail

REPO_DIR=${REPO_DIR:-$SLURM_SUBMIT_DIR}
RUN_DIR=${RUN_DIR:-$REPO_DIR/runs/$SLURM_JOB_NAME}
CONTAINER_IMAGE=${CONTAINER_IMAGE:-$REPO_DIR/tgpo_megatron.sqsh}
CONTAINER_MOUNTS=${CONTAINER_MOUNTS:-$REPO_DIR:$REPO_DIR,$RUN_DIR:$RUN_DIR,/models:/models,/data:/data}
MAX_FAILURE_RESTARTS=${MAX_FAILURE_RESTARTS:-3}
GPUS_PER_NODE=${SLURM_GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:?request GPUs with --gpus-per-node}}
GPUS_PER_NODE=${GPUS_PER_NODE##*:}  # "8" or "h100:8"

# tgpo_megatron/run/launch.py explains each of these; a test keeps the two lists equal
export CUDA_DEVICE_MAX_CONNECTIONS=1
export TORCH_NCCL_AVOID_RECORD_STREAMS=1
export NCCL_IB_TIMEOUT=22
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
export PYTHONUNBUFFERED=1

mkdir -p "$RUN_DIR"
cd "$REPO_DIR"

container=()
if [[ $CONTAINER_IMAGE != none ]]; then
  # --container-env: ours win over the image's own values of these variables
  training_env=CUDA_DEVICE_MAX_CONNECTIONS,TORCH_NCCL_AVOID_RECORD_STREAMS,NCCL_IB_TIMEOUT,PYTORCH_CUDA_ALLOC_CONF
  training_env+=,PYTHONUNBUFFERED
  container=(--container-image="$CONTAINER_IMAGE" --container-mounts="$CONTAINER_MOUNTS"
             --container-workdir="$REPO_DIR" --container-env="$training_env")
fi

overrides=()
skip_plan=
for arg in "$@"; do
  if [[ $arg == --skip-plan ]]; then skip_plan=1; else overrides+=("$arg"); fi
done

doctor=(python -m tgpo_megatron.cli doctor --config "$RECIPE" "trainer.output_dir=$RUN_DIR" "${overrides[@]}")
doctor_status=0
srun --nodes=1 --ntasks=1 "${container[@]}" "${doctor[@]}" || doctor_status=$?
if (( doctor_status != 0 )); then
  echo "$(date -Is) tgpo doctor found problems with the environment (exit $doctor_status, above); not training" >&2
  exit "$doctor_status"
fi

plan=(python -m tgpo_megatron.cli plan --config "$RECIPE" "trainer.output_dir=$RUN_DIR" "${overrides[@]}")
if [[ -n $skip_plan ]]; then plan+=(--recipe-only); fi
plan_status=0
srun --nodes=1 --ntasks=1 "${container[@]}" "${plan[@]}" || plan_status=$?
if (( plan_status == 2 )); then
  echo "$(date -Is) the recipe is not valid (above); not training" >&2
  exit 2
elif (( plan_status != 0 )); then
  echo "$(date -Is) tgpo plan did not pass (exit $plan_status, above: 1 = does not fit); not training." \
       "--skip-plan to run anyway" >&2
  exit 1
fi

# one torchrun per node; the rendezvous is served from the first node, where this script runs (its own
# hostname, so that torchrun there recognises itself as the host)
train=(torchrun --nnodes "$SLURM_JOB_NUM_NODES" --rdzv-backend c10d --rdzv-endpoint "$(hostname):29500"
       --rdzv-id "$SLURM_JOB_ID" --nproc-per-node "$GPUS_PER_NODE"
       -m tgpo_megatron.cli train --config "$RECIPE" "trainer.output_dir=$RUN_DIR" "${overrides[@]}")

stop_requested=
request_stop() {
  stop_requested=$1
  echo "$(date -Is) SIG$1: asking the trainer to checkpoint at the end of its step" >&2
  touch "$RUN_DIR/STOP"
}
trap 'request_stop USR1' USR1
trap 'request_stop TERM' TERM

rm -f "$RUN_DIR/STOP"  # a request left over from an earlier job (e.g. one killed before its trainer saw it)
exit_code_file=$RUN_DIR/exit_code
rm -f "$exit_code_file"
checkpoint_before=$(cat "$RUN_DIR/checkpoints/latest" 2>/dev/null || true)
echo "$(date -Is) job $SLURM_JOB_ID (start $((${SLURM_RESTART_COUNT:-0} + 1))) on $SLURM_JOB_NUM_NODES nodes: ${train[*]}"
# in the background, so that the traps run as soon as a signal arrives rather than after srun returns
srun --ntasks-per-node=1 --kill-on-bad-exit=1 --wait=60 "${container[@]}" "${train[@]}" &
srun_pid=$!
status=0
wait "$srun_pid" || status=$?
while kill -0 "$srun_pid" 2>/dev/null; do  # a trapped signal ended the wait, not srun
  status=0
  wait "$srun_pid" || status=$?
done
trap '' USR1 TERM  # late signals (a warning after the run ended, our own requeue's SIGTERM) change nothing
if (( status != 0 )) && [[ -s $exit_code_file ]]; then
  status=$(<"$exit_code_file")  # the trainer's own code; torchrun turned it into 1
fi

failures_file=$RUN_DIR/.slurm_failures
if [[ $(cat "$RUN_DIR/checkpoints/latest" 2>/dev/null || true) != "$checkpoint_before" ]]; then
  rm -f "$failures_file"  # the run made progress: count failures afresh
fi
failures=$(cat "$failures_file" 2>/dev/null || echo 0)
if (( status == 0 )); then
  echo "$(date -Is) training finished"
elif (( status == 2 )); then
  echo "$(date -Is) training refused its input (exit 2, the error is above): not requeued" >&2
  exit 2
elif (( status == 3 )); then
  echo "$(date -Is) training diverged (exit 3): not requeued; the last good state is in $RUN_DIR/checkpoints" >&2
  exit 3
elif (( status == 4 )); then
  echo "$(date -Is) the disk is full (exit 4, the numbers are above): not requeued; the last checkpoint is intact" >&2
  exit 4
elif [[ -n $stop_requested ]] || (( status == 75 )); then
  echo "$(date -Is) stopped on request (${stop_requested:+SIG$stop_requested, }exit $status): requeueing job" \
       "$SLURM_JOB_ID to resume"
  scontrol requeue "$SLURM_JOB_ID"
elif (( failures < MAX_FAILURE_RESTARTS )); then
  echo $((failures + 1)) > "$failures_file"
  echo "$(date -Is) training failed (exit $status): requeue $((failures + 1)) of $MAX_FAILURE_RESTARTS" >&2
  scontrol requeue "$SLURM_JOB_ID"
else
  echo "$(date -Is) training failed (exit $status) after $MAX_FAILURE_RESTARTS requeues" >&2
  exit "$status"
fi
