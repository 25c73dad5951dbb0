"""The decision rule of a paired comparison (stats.py): its p against scipy's, its false-verdict rate under
no difference, and its interval against scipy's t interval."""

import numpy as np
import pytest
from scipy import stats

from sparsebert.research.stats import MIN_PAIRS, paired_comparison, pooled_comparison, sign_flip_p, t_interval


def test_sign_flip_p_is_scipys_exact_paired_permutation_test():
    rng = np.random.default_rng(0)
    for n in (3, 6, 9):
        method, baseline = rng.normal(0.80, 0.02, n), rng.normal(0.79, 0.02, n)
        theirs = stats.permutation_test((method, baseline), lambda x, y: np.mean(x - y), permutation_type="samples",
                                        alternative="two-sided", n_resamples=np.inf).pvalue
        assert sign_flip_p(method - baseline) == pytest.approx(theirs)


def test_a_sampled_sign_flip_p_is_never_zero():
    """Past the exact limit the sign patterns are sampled and may all fall short of the observed one: the p
    then counts the observed pattern, as scipy's sampled permutation test does, rather than saying 0."""
    d = np.full(24, 0.01)  # every pair one way: 2 in 2^24 patterns reach it, likely none of a sample
    p = sign_flip_p(d)
    assert 0 < p < 1e-4
    assert pooled_comparison({"mrpc": list(d[:12]), "cola": list(d[12:])})["p"] == pytest.approx(p)


def test_t_interval_is_scipys():
    d = np.array([0.01, -0.004, 0.02, 0.013, 0.0, 0.007])
    theirs = stats.ttest_1samp(d, 0).confidence_interval(0.95)
    assert t_interval(d) == pytest.approx((theirs.low, theirs.high))


def percentile_bootstrap_verdict(d, rng) -> bool:
    """The rule this project used before: a difference was called when the 95% percentile bootstrap interval of
    the mean left out 0."""
    means = d[rng.integers(0, d.size, size=(2000, d.size))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return low > 0 or high < 0


@pytest.mark.parametrize("pairs", [5, 8])
def test_under_no_difference_the_rule_calls_a_difference_about_5_percent_of_the_time(pairs):
    """400 simulated grids with no difference between the arms and a realistic seed-to-seed spread of the
    differences (0.01 F1, a heavier tail in half of them): the rule's false verdicts stay near its nominal 5%,
    while the percentile bootstrap's do not (so this check can fail)."""
    rng = np.random.default_rng(pairs)
    grids = [rng.normal(0, 0.01, pairs) if i % 2 else 0.01 * rng.standard_t(3, pairs) for i in range(400)]
    ours = np.mean([paired_comparison(list(d), [0.0] * pairs)["verdict"] in ("ahead", "behind") for d in grids])
    bootstrap = np.mean([percentile_bootstrap_verdict(d, rng) for d in grids])
    allowed = 0.07  # 5% and two standard errors of 400 grids
    assert ours <= allowed
    assert bootstrap > allowed


def test_too_few_pairs_are_undecided_and_a_clear_difference_is_resolved():
    assert paired_comparison([0.9] * 5, [0.8] * 5)["verdict"] == f"undecided: 5 pairs, the test needs {MIN_PAIRS}"
    clear = paired_comparison([0.80, 0.82, 0.81, 0.83, 0.80, 0.84, 0.82, 0.81],
                              [0.78, 0.79, 0.80, 0.80, 0.79, 0.80, 0.81, 0.78])
    assert clear["verdict"] == "ahead" and clear["p"] == pytest.approx(2 / 2 ** 8)
    assert paired_comparison([0.1] * 8, [0.2] * 8)["verdict"] == "behind"
    mixed = paired_comparison([0.801, 0.79, 0.81, 0.80, 0.79, 0.81], [0.80, 0.80, 0.80, 0.80, 0.80, 0.80])
    assert mixed["mean"] > 0 and mixed["verdict"] == "no resolved difference"  # a mean ahead is not a win


def test_pooled_comparison_weighs_each_task_the_same():
    pooled = pooled_comparison({"mrpc": [0.01] * 4, "cola": [-0.02, 0.0], "rte": []})
    assert pooled["tasks"] == ["mrpc", "cola"] and pooled["n"] == 6
    assert pooled["mean"] == pytest.approx((0.01 + -0.01) / 2)
    assert pooled["verdict"] == "no resolved difference"
    assert pooled_comparison({"mrpc": [0.01] * 4, "cola": [0.02, 0.03, 0.01]})["verdict"] == "ahead"


def test_a_p_value_below_a_thousandth_is_written_with_its_digits_not_as_zero():
    from sparsebert.research.pairs import format_p

    assert [format_p(p) for p in (0.031, 0.0078125, 2 / 2 ** 13, 2 / 2 ** 17)] == ["0.031", "0.008", "0.00024",
                                                                                  "0.000015"]
