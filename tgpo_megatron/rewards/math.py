"""The paper's binary math reward (docs/method.md §2.3) and its evaluation judge (§4), for one response.

Three judges, as the authors use them (their training reward, their evaluation script, their teacher filter):
- **training** (``score_response``): the answer is the text between the first ``</think>`` and the next one
  (no ``</think>``: reward 0), correct when ``math_verify`` accepts it against the ground truth;
  ``any_true`` also accepts it when the boxed grader does.
- **evaluation** (``eval_score``): correct when ``math_verify`` accepts that answer **or** the boxed grader
  accepts the last ``\\boxed{}`` of it, or of the whole response when ``</think>`` is missing (so a correct box
  counts even when the model never closed its thoughts).
- **teacher filter** (``whole_text_score``, ``prepare_data.py filter --judge whole-text``): ``math_verify`` on
  the whole response.

The boxed grader is our own implementation of the rules of the grader the authors evaluate with (OAT's math
grader): the last ``\\boxed{}`` only; both sides normalised (LaTeX spacing and wrappers, ``\\text{}``, units,
percent and degree signs, ``x =`` prefixes, thousands separators); equal normalised text, or equal numbers
(an integer ground truth needs an integer answer), element by element for tuples and intervals with the
same brackets, or ``math_verify`` on the two boxed expressions. Model output is only ever parsed, never
executed.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Optional

THINK_END = "</think>"

# Reasons a response scores what it scores; counted per batch by the scorer.
CORRECT, WRONG, NO_THINK_END, NO_ANSWER, TIMEOUT, ERROR, DEADLINE = (
    "correct",
    "wrong",
    "no_think_end",
    "no_answer",
    "timeout",
    "error",
    "deadline",
)
MAX_JUDGED_CHARS = 16_384
"""The judges read at most the last this many characters of an answer: a final answer sits at its end, and
parsing cost grows with length (a 200,000-character box took over a second)."""
VERIFY_TIMEOUT_S = 5
"""math_verify's own limit on each of its parse and verify calls; the scorer sets it from its per-item limit."""


def set_verify_timeout(item_timeout_s: float) -> None:
    """Three math_verify calls (two parses, one verify) fit in one item's limit."""
    global VERIFY_TIMEOUT_S
    VERIFY_TIMEOUT_S = max(1, int(item_timeout_s // 3))


def answer_text(response: str) -> Optional[str]:
    """The text between the first ``</think>`` and the next one (or the end), or None when the model never
    closed its thoughts. The authors' judges read this segment: a second ``</think>`` ends the answer."""
    parts = response.split(THINK_END)
    return parts[1] if len(parts) > 1 else None


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
                return text[i + 1 : j]
    return None


_REMOVE = [
    r"\left",
    r"\right",
    r"\!",
    r"\,",
    r"\;",
    r"\:",
    r"\displaystyle",
    "$",
    r"\%",
    "%",
    "^\\circ",
    "^{\\circ}",
    r"\circ",
    r"\ ",
]
_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_UNITS = re.compile(
    r"\s*(?:degrees?|cm|km|m|kg|g|units?|inches|inch|feet|ft|hours?|minutes?|seconds?|dollars?|"
    r"cents?|meters?|sq\.?\s*units?)\s*$"
)


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


def _split_elements(s: str) -> tuple[str, list[str]]:
    """(bracket pair, top-level comma-separated elements) of a tuple or interval; ("", [s]) otherwise."""
    brackets = s[:1] + s[-1:] if len(s) > 1 and s[0] in "([" and s[-1] in ")]" else ""
    body = s[1:-1] if brackets else s
    elements, depth, start = [], 0, 0
    for i, ch in enumerate(body):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            elements.append(body[start:i])
            start = i + 1
    elements.append(body[start:])
    return brackets, elements


def _same_element(given: str, truth: str) -> bool:
    if given == truth:
        return True
    integer = re.compile(r"-?\d+(\.0*)?")
    if integer.fullmatch(truth) and not integer.fullmatch(given):  # an integer needs an integer, not 14/2
        return False
    a, b = as_number(given), as_number(truth)
    return a is not None and a == b


def boxed_grader(text: str, ground_truth: str) -> bool:
    """The evaluation's second judge (see the module docstring): the last ``\\boxed{}`` of ``text`` against the
    ground truth (itself boxed or plain)."""
    boxed = last_boxed(text[-MAX_JUDGED_CHARS:])
    if boxed is None:
        return False
    given, truth = normalize(boxed), normalize(last_boxed(ground_truth) or ground_truth)
    if not given or not truth:
        return False
    (given_brackets, given_parts), (truth_brackets, truth_parts) = _split_elements(given), _split_elements(truth)
    if (
        given_brackets == truth_brackets
        and len(given_parts) == len(truth_parts)
        and all(_same_element(g, t) for g, t in zip(given_parts, truth_parts))
    ):
        return True
    return math_verify_judge(f"${boxed}$", last_boxed(ground_truth) or ground_truth)


def math_verify_judge(answer: str, ground_truth: str) -> bool:
    from math_verify import parse, verify

    gold = parse(
        ground_truth if "\\boxed" in ground_truth or "$" in ground_truth else f"${ground_truth}$",
        parsing_timeout=VERIFY_TIMEOUT_S,
    )
    predicted = parse(answer[-MAX_JUDGED_CHARS:], parsing_timeout=VERIFY_TIMEOUT_S)
    return bool(gold) and bool(predicted) and verify(gold, predicted, timeout_seconds=VERIFY_TIMEOUT_S)


def score_response(response: str, ground_truth: str, any_true: bool = False) -> tuple[float, str]:
    """The training reward: (1 or 0, reason) for one response (text generated after the template's
    ``<think>\\n``), judged on the answer between the first and the second ``</think>``."""
    answer = answer_text(response)
    if answer is None:
        return 0.0, NO_THINK_END
    if not answer.strip():
        return 0.0, NO_ANSWER
    # the cheap judge first: with any_true either verdict suffices, and math_verify is the slow one
    if (any_true and boxed_grader(answer, ground_truth)) or math_verify_judge(answer, ground_truth):
        return 1.0, CORRECT
    return 0.0, WRONG


def whole_text_score(response: str, ground_truth: str) -> tuple[float, str]:
    """The authors' teacher filter (their ``data/my_verify.py``): ``math_verify`` on the whole response, with
    no ``</think>`` split, so a truncated trace whose reasoning already stated the right answer passes."""
    if not response.strip():
        return 0.0, NO_ANSWER
    return (1.0, CORRECT) if math_verify_judge(response, ground_truth) else (0.0, WRONG)


def eval_score(response: str, ground_truth: str) -> tuple[float, str]:
    """The evaluation judge (LUFFY's protocol, which the paper evaluates with): (1 or 0, reason)."""
    answer = answer_text(response)
    if answer is not None and answer.strip() and math_verify_judge(answer, ground_truth):
        return 1.0, CORRECT
    if boxed_grader(response if answer is None else answer, ground_truth):
        return 1.0, CORRECT
    if answer is None:
        return 0.0, NO_THINK_END
    return 0.0, WRONG if answer.strip() else NO_ANSWER
