"""The multiple-choice judge for the out-of-distribution evaluation sets (ARC-Challenge, GPQA-Diamond,
MMLU-Pro): the response's chosen letter against the ground truth's.

The chosen letter is read from the answer (the text after ``</think>``, or the whole response when the
thoughts were never closed, as the evaluation judge reads boxes): the last ``\\boxed{}`` when there is one
(``C``, ``(C)``, ``\\text{C}``, ``C) 42``), else the last "answer is C" / "Answer: (C)". Letters A-J (MMLU-Pro
has ten options). Model output is only ever parsed.
"""

from __future__ import annotations

import re
from typing import Optional

from tgpo_megatron.rewards.math import CORRECT, NO_ANSWER, WRONG, answer_text, last_boxed

_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\{([^{}]*)\}")
_LEADING_LETTER = re.compile(r"^\(?([A-Ja-j])(?:\)|\.|:|\s|$)")
_STATED = re.compile(r"answer\s*(?:is|:)\s*[:\s]*(?:option\s*)?\(?([A-J])\b\)?", re.IGNORECASE)


def choice_letter(text: str) -> Optional[str]:
    """The letter an answer chooses (upper case), or None when it names none."""
    boxed = last_boxed(text)
    if boxed is not None:
        content = _WRAPPER.sub(r"\1", boxed).strip().strip("$").strip()
        match = _LEADING_LETTER.match(content)
        return match.group(1).upper() if match else None
    stated = _STATED.findall(text)
    return stated[-1].upper() if stated else None


def choice_score(response: str, ground_truth: str) -> tuple[float, str]:
    """(1 or 0, reason): whether the response chooses the ground truth's letter."""
    answer = answer_text(response)
    chosen = choice_letter(response if answer is None else answer)
    if chosen is None:
        return 0.0, NO_ANSWER
    truth = choice_letter(f"\\boxed{{{ground_truth.strip()}}}")
    return (1.0, CORRECT) if chosen == truth else (0.0, WRONG)
