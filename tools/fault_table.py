"""docs/reliability.md's fault table, from the tests that inject each fault.

    python tools/fault_table.py                       # runs those tests (about 6 minutes on 2 cores), then writes
    TGPO_FAULT_ROWS=rows.json make test               # or: the whole suite adds them to a new file...
    python tools/fault_table.py --rows rows.json --source "a fresh clone's make test (662 passed)"

Each fault test records its row once its assertions have passed (the ``fault_row`` fixture, tests/conftest.py):
the fault, what happened, what was lost, the exit code; whether slurm/train_job.sh requeues that code comes from
``tgpo_megatron.errors.REQUEUED`` (which tests/integration/test_launch.py checks against the script).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

from tgpo_megatron.errors import EXIT_CRASH, REQUEUED  # noqa: E402

FAULT_TESTS = (  # every file with a test that records a row (tests/unit/test_docs.py checks the list)
    "tests/unit/test_data.py",
    "tests/unit/test_rewards.py",
    "tests/unit/test_checkpoint_verify.py",
    "tests/e2e/test_train.py",
    "tests/e2e/test_separate.py",
)
OUT = os.path.join(ROOT, "docs", "reliability.md")
HEADER = """# Reliability: what each fault costs

Every row is a test that injects the fault and asserts the outcome (tests/e2e/test_train.py runs the trainer
on 2 processes, the others its parts). "Lost" is what the run no longer has; "exit code" is the trainer's
(`tgpo_megatron/errors.py`, `RUN_DIR/exit_code`), "requeued" whether `slurm/train_job.sh` then requeues the job.
Nothing is lost beyond the steps since the last checkpoint that verifies.

Written by `tools/fault_table.py` from {source}.

| fault | what happens | lost | exit code | requeued | test |
|---|---|---|---|---|---|
"""


def requeued(code) -> str:
    if code is None:
        return "–"
    if code not in REQUEUED:
        return "no"
    return "yes, up to `MAX_FAILURE_RESTARTS` times" if code == EXIT_CRASH else "yes"


def render(rows: list[dict], source: str) -> str:
    lines = []
    for row in rows:
        code = "– (the run goes on)" if row["exit_code"] is None else str(row["exit_code"])
        test = row["test"].split("::")
        lines.append(
            f"| {row['fault']} | {row['outcome']} | {row['lost']} | {code} | {requeued(row['exit_code'])} | "
            f"`{os.path.basename(test[0])}::{test[1]}` |"
        )
    return HEADER.format(source=source) + "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", help="the rows a test run recorded (TGPO_FAULT_ROWS); default: run the fault tests")
    p.add_argument("--out", default=OUT)
    p.add_argument("--source", default="a run of the test suite", help="what produced --rows, for the page")
    args = p.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    when = f"{commit.stdout.strip() or 'a checkout without git'}, {datetime.date.today().isoformat()}"
    if args.rows:
        path, source = args.rows, f"{args.source} ({when})"
    else:
        path = os.path.join(tempfile.mkdtemp(), "rows.json")
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:warnings", *FAULT_TESTS],
            cwd=ROOT,
            env={**os.environ, "TGPO_FAULT_ROWS": path},
        )
        if run.returncode != 0:
            print("the fault tests failed: the table is not written", file=sys.stderr)
            return 1
        source = f"a run of the fault tests ({when})"
    with open(path) as f:
        rows = json.load(f)
    # the sessions that recorded them finish in any order (pytest-xdist): the page lists them test file by test
    # file as FAULT_TESTS does, each test's rows in the order it recorded them
    order = {os.path.basename(file): i for i, file in enumerate(FAULT_TESTS)}
    rows.sort(key=lambda row: (order.get(os.path.basename(row["test"].split("::")[0]), len(order)), row["test"]))
    with open(args.out, "w") as f:
        f.write(render(rows, source))
    print(f"{len(rows)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
