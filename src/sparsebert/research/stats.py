"""Comparisons of two methods over paired runs (the same seed: the same data order, head and dropout draws).

The decision rule, fixed before the runs: a difference is resolved when an exact two-sided sign-flip
(permutation) test of the per-seed differences gives p < 0.05. Under "no difference" each difference is as
likely positive as negative, so every pattern of signs is equally likely, and the test's false-verdict rate is
at most 5% for any number of pairs and any spread. The smallest p it can give with n pairs is 2 / 2^n, so fewer
than MIN_PAIRS pairs can never resolve anything. The effect size beside it is the mean difference with a paired
t 95% interval. Across tasks, each pair's sign is flipped independently and the statistic is the mean over
tasks of each task's mean difference (every task weighs the same, whatever its number of pairs)."""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import stats as scipy_stats

LEVEL = 0.05  # two-sided
MIN_PAIRS = 6  # 2 / 2**5 = 0.0625 > LEVEL: five pairs cannot resolve a difference
EXACT_UP_TO = 16  # pairs; beyond, the sign patterns are sampled
SAMPLED_PATTERNS = 200_000


def sign_patterns(n: int, seed: int = 0) -> np.ndarray:
    """Every pattern of n signs (2^n rows), or a fixed random sample of them when there are too many."""
    if n <= EXACT_UP_TO:
        return np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    return np.random.default_rng(seed).choice((1.0, -1.0), size=(SAMPLED_PATTERNS, n))


def share_as_extreme(flipped: np.ndarray, observed: float, n: int) -> float:
    """The share of the sign patterns of n pairs whose |statistic| (flipped) reaches the observed one. All of them:
    the observed pattern is among them, so p >= 2 / 2^n. A sample of them may miss it, so there it counts once
    more, (k + 1) / (N + 1), and p is never 0."""
    hits = int(np.sum(flipped >= abs(observed) - 1e-12))
    return hits / len(flipped) if n <= EXACT_UP_TO else (hits + 1) / (len(flipped) + 1)


def sign_flip_p(differences) -> float:
    """Two-sided p of the mean difference under random signs: the share of sign patterns whose mean is at
    least as far from 0 as the observed one."""
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        raise ValueError("sign_flip_p needs at least one difference")
    return share_as_extreme(np.abs(sign_patterns(d.size) @ d), float(d.sum()), d.size)


def t_interval(differences, level: float = 0.95) -> tuple[float, float]:
    """The paired t interval of the mean difference (n >= 2)."""
    d = np.asarray(differences, dtype=float)
    half = scipy_stats.t.ppf((1 + level) / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return float(d.mean() - half), float(d.mean() + half)


def verdict(p: float | None, mean: float, n: int) -> str:
    if n < MIN_PAIRS:
        return f"undecided: {n} pair{'s' if n != 1 else ''}, the test needs {MIN_PAIRS}"
    if p is not None and p < LEVEL:
        return "ahead" if mean > 0 else "behind"
    return "no resolved difference"


def paired_comparison(method: list[float], baseline: list[float]) -> dict:
    """method - baseline, pair by pair: the mean, its t interval, the sign-flip p and the verdict."""
    if len(method) != len(baseline) or not method:
        raise ValueError("paired_comparison needs two lists of the same, non-zero length")
    d = np.asarray(method, dtype=float) - np.asarray(baseline, dtype=float)
    low, high = t_interval(d) if d.size > 1 else (None, None)
    p = sign_flip_p(d)
    return {"n": int(d.size), "mean": float(d.mean()), "low": low, "high": high, "p": p,
            "verdict": verdict(p, float(d.mean()), int(d.size)), "differences": d.tolist()}


def pooled_comparison(differences_by_task: dict[str, list[float]]) -> dict:
    """Across tasks: the mean over tasks of each task's mean difference, and its sign-flip p with every pair's
    sign flipped independently (tasks with no pairs are left out)."""
    groups = {task: np.asarray(d, dtype=float) for task, d in differences_by_task.items() if len(d)}
    if not groups:
        raise ValueError("pooled_comparison needs at least one pair")
    d = np.concatenate(list(groups.values()))
    # each pair's weight: 1 / (its task's pairs * tasks), so the statistic is the mean of the task means
    weights = np.concatenate([np.full(g.size, 1 / (g.size * len(groups))) for g in groups.values()])
    observed = float(weights @ d)
    p = share_as_extreme(np.abs(sign_patterns(d.size) @ (weights * d)), observed, d.size)
    return {"tasks": list(groups), "n": int(d.size), "mean": observed, "p": p,
            "verdict": verdict(p, observed, int(d.size))}
