"""A procedurally generated, verifiable arithmetic task: column addition with a written scratchpad.

    problem   357+068=
    solution  51,21,40</think>\\boxed{0425}        (after the template's "<think>\\n")
    answer    425

The scratchpad lists one ``<digit><carry>`` pair per column, least significant first, joined by a style
separator. The separator is the knob the demo uses to create a teacher-student gap without changing what is
correct: a teacher that writes ``,`` and a student that writes ``;`` disagree on every separator token although
both can be right (see the demo's calibration notes). Difficulty is the number of digits per operand.

Rows are written in the plain ``{problem, answer}`` layout (plus ``solution`` for supervised fine-tuning) or in
the verl/LUFFY layout, as parquet or jsonl, exactly like real data.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass

SEPARATORS = (",", ";")


@dataclass(frozen=True)
class Problem:
    a: int
    b: int
    digits: int

    @property
    def prompt(self) -> str:
        return f"{self.a:0{self.digits}d}+{self.b:0{self.digits}d}="

    @property
    def answer(self) -> str:
        return str(self.a + self.b)

    @property
    def has_carry(self) -> bool:
        """Some column's digits (with the carry coming in) sum to 10 or more: the skill study v2 is about."""
        return any(c == "1" for c in self.scratchpad()[1::3])

    def scratchpad(self, separator: str = ",") -> str:
        a, b, carry, columns = self.a, self.b, 0, []
        for _ in range(self.digits):
            total = a % 10 + b % 10 + carry
            carry = total // 10
            columns.append(f"{total % 10}{carry}")
            a, b = a // 10, b // 10
        return separator.join(columns)

    def solution(self, separator: str = ",") -> str:
        """The response after the ``<think>\\n`` prefix: scratchpad, ``</think>``, boxed zero-padded sum."""
        return f"{self.scratchpad(separator)}</think>\\boxed{{{self.a + self.b:0{self.digits + 1}d}}}"


def sample_problems(count: int, seed: int, digits: int = 3, exclude: frozenset = frozenset()) -> list[Problem]:
    """``count`` distinct problems drawn from a seeded generator, none of them in ``exclude``."""
    if digits < 1:
        raise ValueError(f"digits={digits} must be >= 1")
    space = 10 ** (2 * digits)
    if count > space - len(exclude):
        raise ValueError(f"only {space - len(exclude)} distinct {digits}-digit problems are available")
    rng, seen, out = random.Random(seed), set(exclude), []
    while len(out) < count:
        a, b = rng.randrange(10**digits), rng.randrange(10**digits)
        if (a, b) not in seen:
            seen.add((a, b))
            out.append(Problem(a, b, digits))
    return out


def problem_rows(
    problems: list[Problem], separator: str = ",", layout: str = "plain", system_prompt: str = ""
) -> list[dict]:
    """Dataset rows for ``problems`` in the ``plain`` or ``verl`` layout (see the data package)."""
    if separator not in SEPARATORS:
        raise ValueError(f"separator {separator!r} must be one of {SEPARATORS}")
    rows = []
    for i, p in enumerate(problems):
        if layout == "plain":
            rows.append({"problem": p.prompt, "answer": p.answer, "solution": p.solution(separator)})
        elif layout == "verl":
            messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
            rows.append(
                {
                    "data_source": f"synthetic_add{p.digits}",
                    "prompt": messages + [{"role": "user", "content": p.prompt}],
                    "ability": "math",
                    "reward_model": {"style": "rule", "ground_truth": p.answer},
                    "extra_info": {"index": i},
                    "target": [{"role": "assistant", "content": p.solution(separator)}],
                }
            )
        else:
            raise ValueError(f"layout {layout!r} must be plain or verl")
    return rows


def write_rows(rows: list[dict], path: str) -> str:
    """Write rows as ``.parquet`` or ``.jsonl`` (by extension); returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith(".jsonl"):
        with open(path, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    elif path.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        raise ValueError(f"{path}: the extension must be .parquet or .jsonl")
    return path
