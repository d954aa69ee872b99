"""The statistics of ``thresher eval``'s slices and ``thresher compare``'s paired tests: pure functions of numbers.

* :func:`wilson`: the Wilson score 95% interval of a proportion (k successes of n). Unlike a bootstrap it is not
  degenerate at 0 or n successes (a slice the model always fails gets ``[0, z^2 / (n + z^2)]``, not ``[0, 0]``).
* :func:`mcnemar_exact`: the exact (binomial) McNemar test of two paired binary outcomes: the two-sided p-value of
  the discordant pairs under ``Binomial(b + c, 1/2)``, ``min(1, 2 P(X <= min(b, c)))``.
* :func:`paired_bootstrap`: the percentile 95% interval of a difference of two statistics of the same items, both
  computed on the same resampled items (seeded), and a two-sided bootstrap p-value.
* :func:`verdict`: the plain word on a difference: ``better``, ``worse`` or ``within noise`` (not significant at
  ``ALPHA``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

ALPHA = 0.05
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``successes`` of ``n`` (``n`` > 0)."""
    if n <= 0:
        raise ValueError("wilson: n must be positive")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """The two-sided exact McNemar p-value of ``b`` and ``c`` discordant pairs (1 when there are none)."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def discordant(base: np.ndarray, variant: np.ndarray) -> tuple[int, int]:
    """(``b``, ``c``) of paired 0/1 outcomes: items the base gets right and the variant wrong, and the reverse."""
    base, variant = np.asarray(base) > 0.5, np.asarray(variant) > 0.5
    return int((base & ~variant).sum()), int((~base & variant).sum())


def is_binary(values: np.ndarray) -> bool:
    """Whether every value is 0 or 1 (a proportion's outcomes)."""
    return bool(np.isin(np.asarray(values, dtype=float), (0.0, 1.0)).all())


def paired_bootstrap(
    base: Callable[[np.ndarray], np.ndarray | float],
    variant: Callable[[np.ndarray], np.ndarray | float],
    n: int,
    samples: int,
    seed: int,
) -> dict:
    """``variant(idx) - base(idx)`` over ``samples`` resamples of the ``n`` paired items (the same indices for
    both): the point difference, its percentile 95% interval and the two-sided p-value
    ``min(1, 2 min(P(d <= 0), P(d >= 0)))`` of the resampled differences."""
    idx = np.random.default_rng(seed).integers(0, n, size=(samples, n))
    every = np.arange(n)
    point = float(variant(every)) - float(base(every))
    diffs = np.asarray(variant(idx), dtype=float) - np.asarray(base(idx), dtype=float)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    p = min(1.0, 2 * min(float((diffs <= 0).mean()), float((diffs >= 0).mean())))
    return {"difference": point, "ci95": [float(lo), float(hi)], "p_value": p}


def verdict(difference: float, p_value: float, lower_is_better: bool = False) -> str:
    """``within noise`` when ``p_value`` is ``ALPHA`` or more, else ``better`` or ``worse`` than the base."""
    if p_value >= ALPHA or difference == 0:
        return "within noise"
    return "better" if (difference < 0) == lower_is_better else "worse"
