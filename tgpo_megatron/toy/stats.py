"""The study's statistics, in plain Python (no SciPy): Student's t distribution, paired t-tests and intervals,
Holm's step-down correction and the non-inferiority rule of docs/study_preregistration.md."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by its continued fraction (modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below the mean
        return 1.0 - _incomplete_beta(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * result / a


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (bisection on the CDF)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p={p} must lie in (0, 1)")
    low, high = -1e3, 1e3
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if t_cdf(mid, df) < p else (low, mid)
    return (low + high) / 2


@dataclass(frozen=True)
class Paired:
    """A mean difference over seeds, its 95% t-interval and the one-sided p-value of "greater than 0"."""

    mean: float
    sd: float
    n: int
    low: float
    high: float
    p_greater: float

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def paired(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Optional[Paired]:
    """``a - b`` paired element by element (seed by seed); None with fewer than two pairs."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same seeds: {len(a)} against {len(b)}")
    differences = [x - y for x, y in zip(a, b)]
    n = len(differences)
    if n < 2:
        return None
    mean = sum(differences) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    se = sd / math.sqrt(n)
    half = t_quantile(0.5 + confidence / 2, n - 1) * se
    p = (0.0 if mean > 0 else 1.0) if se == 0 else 1.0 - t_cdf(mean / se, n - 1)
    return Paired(mean, sd, n, mean - half, mean + half, p)


def interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean and its t-interval (a lone value: its own interval)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, mean, mean
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)
    half = t_quantile(0.5 + confidence / 2, n - 1) * se
    return mean, mean - half, mean + half


def holm(p_values: dict[str, float], alpha: float = 0.05) -> dict[str, bool]:
    """Holm's step-down: the smallest p against α/m, the next against α/(m-1), ...; rejection stops at the first
    p above its threshold. True: the hypothesis is supported."""
    order = sorted(p_values, key=p_values.get)
    supported, going = {}, True
    for rank, name in enumerate(order):
        going = going and p_values[name] <= alpha / (len(order) - rank)
        supported[name] = going
    return supported


def non_inferiority(difference: Paired, margin: float) -> str:
    """The verdict of "not worse than by more than ``margin``" from the difference's two-sided interval."""
    if difference.low > -margin:
        return "non-inferior"
    if difference.high < -margin:
        return "inferior"
    return "unresolved"
