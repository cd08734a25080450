"""Several training runs in one launch, one after another (``tgpo study`` and ``tgpo demo`` use it).

    torchrun --nproc-per-node 2 -m tgpo_megatron.cli train-many runs.json

``runs.json`` lists the runs, each ``{"config": "R.yaml", "overrides": ["k=v", ...]}``: exactly what
``tgpo train --config R.yaml k=v ...`` would run in a launch of its own, with the same metrics (tested), but
the launch starts Python, torch, Megatron and vLLM once instead of once per run. The runs share the rollout
engine and the reward workers (``services.Services``), so they must share the student's architecture and the
rollout settings; anything else (models, algorithm, seeds, data, steps) may differ.

Every recipe is checked before the first run trains. Each run records its own exit code; a run whose directory
records 0 is skipped, so the same command continues an interrupted launch (the run that was interrupted
resumes from its checkpoint). The first run that does not finish ends the launch with its code.
"""

from __future__ import annotations

import json
import logging
from functools import partial

from tgpo_megatron.cli import command_parser
from tgpo_megatron.config import Config, load_config
from tgpo_megatron.errors import EXIT_DONE, UserError, exit_on_user_error
from tgpo_megatron.run.layout import RunDir

log = logging.getLogger(__name__)


def read_runs(path: str) -> list[Config]:
    """The recipes of ``path``, each loaded and checked (a typo in the last one stops the launch before the first
    trains)."""
    try:
        with open(path) as f:
            entries = json.load(f)
    except FileNotFoundError:
        raise UserError(f"runs file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{path}: expected a non-empty list of runs")
    configs = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) - {"config", "overrides"} or "config" not in entry:
            raise UserError(f"{path}: run {i} must be {{'config': RECIPE, 'overrides': [...]}}, got {entry!r}")
        try:
            configs.append(load_config(entry["config"], list(entry.get("overrides", []))))
        except (UserError, ValueError) as e:
            raise UserError(f"{path}: run {i}: {e}") from None
    directories = [c.trainer.output_dir for c in configs]
    repeated = sorted({d for d in directories if directories.count(d) > 1})
    if repeated:
        raise UserError(f"{path}: runs share an output directory: {', '.join(repeated)}")
    separate = [c.trainer.output_dir for c in configs if c.rollout.placement == "separate"]
    if separate:  # the rollout ranks serve one run from start to stop
        raise UserError(f"{path}: {separate[0]}: a separate rollout placement runs alone; launch it with tgpo train")
    return configs


def finished(run_dir: str) -> bool:
    return RunDir(run_dir).read_exit_code() == EXIT_DONE


def train_many(configs: list[Config]) -> int:
    """Each run in turn with shared services; the exit code of the first that does not finish, else 0."""
    from tgpo_megatron.rollout.vllm_engine import import_vllm
    from tgpo_megatron.run.loop import run_recording_exit_code
    from tgpo_megatron.services import Services
    from tgpo_megatron.trainer import train

    import_vllm()  # here, not inside the first run: see import_vllm
    services = Services()
    try:
        for i, config in enumerate(configs):
            if finished(config.trainer.output_dir):
                log.info("run %d/%d (%s) finished before: skipped", i + 1, len(configs), config.trainer.output_dir)
                continue
            log.info("run %d/%d: %s", i + 1, len(configs), config.trainer.output_dir)
            code = run_recording_exit_code(partial(train, services=services), config)
            if code != EXIT_DONE:
                return code
    finally:
        services.close()
    return EXIT_DONE


def main(argv=None) -> int:
    p = command_parser("tgpo train-many", __doc__)
    p.add_argument("runs", help="JSON list of {config, overrides}")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return exit_on_user_error(lambda: train_many(read_runs(args.runs)))()
