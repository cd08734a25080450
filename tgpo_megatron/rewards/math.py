"""The paper's binary math reward (tgpo_method.md §2.3, §4), for one response.

The answer is the text after the last ``</think>`` (no ``</think>``: reward 0). It is correct when
``math_verify`` says so, or (``any_true``, the LUFFY evaluation protocol) when a second, independent judge
agrees: the last ``\\boxed{}`` of the answer, normalised as text, equals the normalised ground truth, or
both read as the same number. Model output is only ever parsed, never executed.
"""
from __future__ import annotations

import re
from fractions import Fraction
from typing import Optional

THINK_END = "</think>"

# Reasons a response scores what it scores; counted per batch by the scorer.
CORRECT, WRONG, NO_THINK_END, NO_ANSWER, TIMEOUT, ERROR = (
    "correct", "wrong", "no_think_end", "no_answer", "timeout", "error")


def answer_text(response: str) -> Optional[str]:
    """The text after the last ``</think>``, or None when the model never closed its thoughts."""
    if THINK_END not in response:
        return None
    return response.rsplit(THINK_END, 1)[1]


def last_boxed(text: str) -> Optional[str]:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces matched; None if there is none."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j]
    return None


_REMOVE = [r"\left", r"\right", r"\!", r"\,", r"\;", r"\:", r"\displaystyle", "$", r"\%", "%", "^\\circ",
           "^{\\circ}", r"\circ", r"\ "]
_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_UNITS = re.compile(r"\s*(?:degrees?|cm|km|m|kg|g|units?|inches|inch|feet|ft|hours?|minutes?|seconds?|dollars?|"
                    r"cents?|meters?|sq\.?\s*units?)\s*$")


def normalize(answer: str) -> str:
    """A plain-text canonical form: no spacing commands, ``\\dfrac``→``\\frac``, text wrappers and trailing
    units dropped, ``x=`` prefixes removed, no whitespace."""
    s = answer.strip()
    s = _TEXT.sub(r"\1", s)
    for token in _REMOVE:
        s = s.replace(token, "")
    s = s.replace(r"\dfrac", r"\frac").replace(r"\tfrac", r"\frac").replace(r"\le", "<=").replace(r"\ge", ">=")
    s = _UNITS.sub("", s)
    s = re.sub(r"^[a-zA-Z]\s*=\s*", "", s)
    s = s.rstrip(".").replace(" ", "")
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")  # 12,345 -> 12345
    return s


def as_number(s: str) -> Optional[Fraction]:
    """The exact value of an integer, decimal, ``a/b`` or ``\\frac{a}{b}`` string, else None."""
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", s)
    try:
        if m:
            value = Fraction(int(m.group(2)), int(m.group(3)))
            return -value if m.group(1) else value
        if re.fullmatch(r"-?\d+(\.\d+)?(/-?\d+(\.\d+)?)?", s):
            return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def normalizer_judge(answer: str, ground_truth: str) -> bool:
    """The second, independent judge: normalised text equality or equal exact numbers."""
    boxed = last_boxed(answer)
    if boxed is None:
        return False
    ours, gold = normalize(boxed), normalize(last_boxed(ground_truth) or ground_truth)
    if ours == gold:
        return True
    a, b = as_number(ours), as_number(gold)
    return a is not None and a == b


def math_verify_judge(answer: str, ground_truth: str) -> bool:
    from math_verify import parse, verify

    gold = parse(ground_truth if "\\boxed" in ground_truth or "$" in ground_truth else f"${ground_truth}$")
    predicted = parse(answer)
    return bool(gold) and bool(predicted) and verify(gold, predicted)


def score_response(response: str, ground_truth: str, any_true: bool = True) -> tuple[float, str]:
    """(reward in {0, 1}, reason) for one response (text generated after the template's ``<think>\\n``)."""
    answer = answer_text(response)
    if answer is None:
        return 0.0, NO_THINK_END
    if not answer.strip():
        return 0.0, NO_ANSWER
    # the cheap judge first: with any_true either verdict suffices, and math_verify is the slow one
    if (any_true and normalizer_judge(answer, ground_truth)) or math_verify_judge(answer, ground_truth):
        return 1.0, CORRECT
    return 0.0, WRONG
