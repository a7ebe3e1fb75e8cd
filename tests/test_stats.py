"""i2md_lib.stats against hand-computed values and scipy."""
import numpy as np
import pytest
from scipy import stats as sps

from i2md_lib import stats


def test_t_interval_by_hand_and_scipy():
    iv = stats.t_interval([1, 2, 3, 4, 5])
    # mean 3, sd sqrt(2.5), t_{0.975,4} = 2.776445 -> half-width 2.776445 * 1.581139 / sqrt(5)
    assert iv.mean == 3.0 and iv.n == 5 and iv.sd == pytest.approx(np.sqrt(2.5))
    assert iv.half_width == pytest.approx(1.963243, abs=1e-6)
    low, high = sps.t.interval(0.95, 4, loc=3.0, scale=np.sqrt(2.5) / np.sqrt(5))
    assert (iv.low, iv.high) == pytest.approx((low, high))
    assert stats.t_interval([1, 2, 3, 4, 5], confidence=0.9).half_width < iv.half_width


def test_paired_difference_t_and_bootstrap():
    a, b = [3.0, 5.0, 7.0], [1.0, 2.0, 3.0]
    iv = stats.paired_difference(a, b)
    # differences 2, 3, 4: mean 3, sd 1, t_{0.975,2} = 4.302653
    assert iv.mean == 3.0 and iv.sd == pytest.approx(1.0)
    assert iv.half_width == pytest.approx(4.302653 / np.sqrt(3), abs=1e-6)
    boot = stats.paired_difference(a, b, method="bootstrap", n_boot=4000, seed=1)
    assert boot.method == "bootstrap" and boot.mean == 3.0
    assert 2.0 <= boot.low <= boot.high <= 4.0      # resamples of {2, 3, 4} stay inside
    assert boot.half_width < iv.half_width           # 3 values: the bootstrap is too narrow
    with pytest.raises(ValueError, match="equal lengths"):
        stats.paired_difference([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="method"):
        stats.paired_difference(a, b, method="z")


def test_bootstrap_interval_matches_t_for_many_values():
    x = np.random.default_rng(0).normal(10.0, 2.0, 400)
    t, boot = stats.t_interval(x), stats.bootstrap_interval(x, n_boot=4000, seed=0)
    assert boot.mean == pytest.approx(t.mean)
    assert boot.low == pytest.approx(t.low, abs=0.05) and boot.high == pytest.approx(t.high, abs=0.05)


def test_half_width_and_seeds_needed():
    assert stats.half_width(2.0, 4) == pytest.approx(sps.t.ppf(0.975, 3) * 2.0 / 2.0)
    # sd 1, target 1: n = 6 gives 2.5706 / sqrt(6) = 1.0495 > 1, n = 7 gives 0.9248
    assert stats.seeds_needed(1.0, 1.0) == 7
    for sd, target in [(0.5, 2.0), (3.0, 1.0), (2.2, 0.7), (1.0, 0.05)]:
        n = stats.seeds_needed(sd, target)
        assert stats.half_width(sd, n) <= target
        assert n == 2 or stats.half_width(sd, n - 1) > target
    assert stats.seeds_needed(0.0, 1.0) == 2
    with pytest.raises(ValueError, match="target_half_width"):
        stats.seeds_needed(1.0, 0.0)
    for bad in (float("nan"), float("inf"), -1.0):       # the SD of one seed is NaN: a clear error
        with pytest.raises(ValueError, match="sd must be a finite number"):
            stats.seeds_needed(bad, 1.0)


def test_random_effects_by_hand():
    vc = stats.random_effects([[1.0, 3.0], [5.0, 7.0]])
    # group means 2, 6; grand 4; MSB = 2 * (4 + 4) / 1 = 16; MSW = (1 + 1 + 1 + 1) / 2 = 2
    assert (vc.ms_between, vc.ms_within, vc.grand_mean) == (16.0, 2.0, 4.0)
    assert vc.between == 7.0 and vc.within == 2.0 and vc.total == 9.0
    assert vc.icc == pytest.approx(7 / 9)
    flat = stats.random_effects([[1.0, 5.0], [2.0, 4.0]])   # groups differ less than replicates
    assert flat.between_raw < 0 and flat.between == 0.0
    with pytest.raises(ValueError, match="groups >= 2"):
        stats.random_effects([[1.0, 2.0, 3.0]])


def test_random_effects_recovers_known_components():
    rng = np.random.default_rng(0)
    g, r = 400, 6
    y = 50 + rng.normal(0, 2.0, (g, 1)) + rng.normal(0, 1.0, (g, r))
    vc = stats.random_effects(y)
    assert vc.between == pytest.approx(4.0, rel=0.2) and vc.within == pytest.approx(1.0, rel=0.1)


def test_test_set_noise():
    assert stats.binomial_variance(50.0, 100) == pytest.approx(25.0)
    assert stats.binomial_variance(90.0, 900) == pytest.approx(1e4 * 0.09 / 900)
    correct = np.zeros(400)
    correct[:200] = 1.0
    boot = stats.bootstrap_mean_variance(correct, n_boot=4000, seed=0)
    assert boot == pytest.approx(stats.binomial_variance(50.0, 400), rel=0.1)
    # paired: identical models have no test-set noise in their difference
    assert stats.bootstrap_mean_variance(correct - correct, n_boot=100) == 0.0
    with pytest.raises(ValueError, match="percentage"):
        stats.binomial_variance(0.5 * 300, 10)


def test_t_test_p_agrees_with_scipy_and_with_the_interval():
    rng = np.random.default_rng(3)
    for shift in (0.0, 0.4, 1.5):
        x = rng.normal(shift, 1.0, size=9)
        iv = stats.t_interval(x)
        p = stats.t_test_p(iv)
        assert p == pytest.approx(sps.ttest_1samp(x, 0.0).pvalue, rel=1e-9)
        assert (p < 0.05) == (iv.low > 0 or iv.high < 0)       # decided by the interval <=> p < 5 %
    assert stats.t_test_p(stats.t_interval([2.0, 2.0, 2.0])) == 0.0
    assert stats.t_test_p(stats.t_interval([0.0, 0.0])) == 1.0
    with pytest.raises(ValueError, match="at least 2"):
        stats.t_test_p(stats.t_interval([1.0]))


def test_holm_by_hand():
    # m = 4: thresholds 0.0125, 0.0167, 0.025, 0.05 for the sorted p-values
    assert stats.holm([0.010, 0.040, 0.030, 0.005]) == [True, False, False, True]     # 0.030 > 0.025 stops it
    assert stats.holm([0.010, 0.040, 0.020, 0.005]) == [True, True, True, True]
    assert stats.holm([0.03, 0.04]) == [False, False]                                   # 0.03 > 0.05 / 2
    assert stats.holm([0.03]) == [True] and stats.holm([]) == []
    assert stats.holm([0.02, 0.04], alpha=0.1) == [True, True]
    with pytest.raises(ValueError, match="alpha"):
        stats.holm([0.1], alpha=1.5)
    with pytest.raises(ValueError, match="p-values"):
        stats.holm([1.2])


def test_holm_keeps_the_family_wise_error_on_null_data():
    # 4 true nulls per family: uncorrected, some test is decided in about 1 - 0.95^4 = 19 % of the
    # families; with Holm, in at most 5 %
    rng = np.random.default_rng(0)
    families = 2000
    any_uncorrected = any_holm = 0
    for _ in range(families):
        ps = [stats.t_test_p(stats.t_interval(rng.normal(0.0, 1.0, size=8))) for _ in range(4)]
        any_uncorrected += min(ps) < 0.05
        any_holm += any(stats.holm(ps))
    assert 0.15 < any_uncorrected / families < 0.23
    assert any_holm / families < 0.065
