"""Comparisons of two methods over paired runs (the same seed, so the same data order and draws)."""

from __future__ import annotations

import numpy as np


def paired_difference(method: list[float], baseline: list[float], resamples: int = 10_000, seed: int = 0,
                      level: float = 0.95) -> dict:
    """The mean of method - baseline over the pairs, and a percentile bootstrap interval of it: the pairs are
    resampled with replacement, so the seed-to-seed spread both methods share cancels. With a handful of
    seeds the interval is rough (five pairs have 126 distinct resamples); it is a measure of spread, not a
    test with an exact level."""
    if len(method) != len(baseline) or not method:
        raise ValueError("paired_difference needs two lists of the same, non-zero length")
    differences = np.asarray(method, dtype=float) - np.asarray(baseline, dtype=float)
    draws = np.random.default_rng(seed).integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[draws].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return {"n": len(differences), "mean": float(differences.mean()), "low": float(low), "high": float(high),
            "differences": differences.tolist()}
