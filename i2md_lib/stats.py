"""Small statistics for comparing methods over seeds (pure functions, numpy + scipy).

What the book's tables need to say whether one method beats another:

* :func:`t_interval` / :func:`paired_difference` -- mean (of paired differences) with a
  Student-t confidence interval, or a percentile bootstrap interval;
* :func:`half_width` and :func:`seeds_needed` -- how wide such an interval is for ``n``
  seeds, and how many seeds a target width needs given a measured SD;
* :func:`random_effects` -- a balanced one-way random-effects variance decomposition
  (e.g. pretraining seed = group, evaluation seed = replicate);
* :func:`binomial_variance` / :func:`bootstrap_mean_variance` -- the sampling noise of an
  accuracy measured on a finite test set.

Accuracies are in percent throughout; variances are then in %².
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as _scipy_stats


@dataclass(frozen=True)
class Interval:
    """A mean with a two-sided confidence interval ``[low, high]``."""

    mean: float
    low: float
    high: float
    sd: float            # sample SD of the values (ddof=1); nan for one value
    n: int
    confidence: float
    method: str          # "t" | "bootstrap"

    @property
    def half_width(self) -> float:
        return 0.5 * (self.high - self.low)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "half_width": self.half_width}


def _values(values: Any, name: str = "values") -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} holds non-finite numbers")
    return arr


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def t_quantile(n: int, confidence: float = 0.95) -> float:
    """The two-sided Student-t quantile ``t_{(1+confidence)/2, n-1}`` (needs ``n >= 2``)."""
    _check_confidence(confidence)
    if n < 2:
        raise ValueError(f"a t-interval needs at least 2 values, got {n}")
    return float(_scipy_stats.t.ppf(0.5 * (1.0 + confidence), n - 1))


def half_width(sd: float, n: int, confidence: float = 0.95) -> float:
    """Half-width ``t_{(1+c)/2, n-1} * sd / sqrt(n)`` of the t-interval of a mean of ``n`` values."""
    if sd < 0:
        raise ValueError(f"sd must be >= 0, got {sd}")
    return t_quantile(n, confidence) * sd / np.sqrt(n)


def t_interval(values: Any, confidence: float = 0.95) -> Interval:
    """Mean of ``values`` ``(n,)`` with its Student-t interval (``n >= 2``)."""
    x = _values(values)
    sd = float(x.std(ddof=1)) if len(x) > 1 else float("nan")
    h = half_width(sd, len(x), confidence)
    m = float(x.mean())
    return Interval(m, m - h, m + h, sd, len(x), confidence, "t")


def bootstrap_interval(values: Any, confidence: float = 0.95, n_boot: int = 10000,
                       seed: int = 0) -> Interval:
    """Mean of ``values`` ``(n,)`` with a percentile-bootstrap interval (resampling values).

    With few values (3 seeds, say) the bootstrap interval is too narrow: it cannot
    know the t-distribution's heavier tails. Prefer :func:`t_interval` there.
    """
    _check_confidence(confidence)
    x = _values(values)
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (n_boot, len(x)))].mean(axis=1)
    alpha = 0.5 * (1.0 - confidence)
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    sd = float(x.std(ddof=1)) if len(x) > 1 else float("nan")
    return Interval(float(x.mean()), float(low), float(high), sd, len(x), confidence, "bootstrap")


def paired_difference(a: Any, b: Any, confidence: float = 0.95, method: str = "t",
                      n_boot: int = 10000, seed: int = 0) -> Interval:
    """Mean of ``a - b`` over paired runs (same seed in both) and its interval.

    Args:
        a, b: ``(n,)`` the two methods' numbers, entry ``i`` of both from seed ``i``.
        method: ``"t"`` (Student t on the differences) or ``"bootstrap"`` (percentile).
    """
    x, y = _values(a, "a"), _values(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"paired values need equal lengths, got {len(x)} and {len(y)}")
    if method == "t":
        return t_interval(x - y, confidence)
    if method == "bootstrap":
        return bootstrap_interval(x - y, confidence, n_boot, seed)
    raise ValueError(f"method must be 't' or 'bootstrap', got {method!r}")


def t_test_p(interval: Interval) -> float:
    """Two-sided p-value of the one-sample Student t-test of "mean 0" behind a ``"t"`` interval.

    ``p < 1 - confidence`` exactly when the interval excludes 0. Values without spread give
    0 (a non-zero mean) or 1 (a zero mean); fewer than two values raise ``ValueError``.
    """
    if interval.n < 2:
        raise ValueError(f"a t-test needs at least 2 values, got {interval.n}")
    if not interval.sd > 0:
        return 0.0 if interval.mean != 0 else 1.0
    t = abs(interval.mean) / (interval.sd / np.sqrt(interval.n))
    return float(2.0 * _scipy_stats.t.sf(t, interval.n - 1))


def holm(p_values: Any, alpha: float = 0.05) -> list[bool]:
    """Holm's step-down correction: which of ``m`` hypotheses are rejected at family-wise error ``alpha``.

    Sorts the p-values; the i-th smallest (i = 1..m) is rejected while every smaller one was and
    ``p <= alpha / (m - i + 1)``. Returns one flag per p-value, in the given order.
    """
    p = _values(p_values, "p_values") if len(p_values) else np.zeros(0)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    rejected = [False] * len(p)
    for rank, index in enumerate(np.argsort(p, kind="stable")):
        if p[index] > alpha / (len(p) - rank):
            break
        rejected[int(index)] = True
    return rejected


def seeds_needed(sd: float, target_half_width: float, confidence: float = 0.95,
                 max_n: int = 100000) -> int:
    """Smallest ``n >= 2`` with ``half_width(sd, n) <= target_half_width``.

    ``sd`` is the SD of one paired difference (or of one run); raises ``ValueError``
    when even ``max_n`` seeds are not enough.
    """
    if target_half_width <= 0:
        raise ValueError(f"target_half_width must be positive, got {target_half_width}")
    if not np.isfinite(sd) or sd < 0:
        raise ValueError(f"sd must be a finite number >= 0 (it needs two seeds or more), got {sd}")
    # half_width falls monotonically in n; start near the normal-approximation answer
    z = float(_scipy_stats.norm.ppf(0.5 * (1.0 + confidence)))
    n = max(2, int(np.floor((z * sd / target_half_width) ** 2)))
    while n > 2 and half_width(sd, n - 1, confidence) <= target_half_width:
        n -= 1
    while half_width(sd, n, confidence) > target_half_width:
        n += 1
        if n > max_n:
            raise ValueError(f"more than {max_n} seeds needed for half-width {target_half_width} at SD {sd}")
    return n


@dataclass(frozen=True)
class VarianceComponents:
    """Balanced one-way random-effects decomposition ``y_gr = mu + a_g + e_gr``.

    ``between`` estimates ``Var(a)`` (e.g. pretraining seed), ``within`` ``Var(e)``
    (e.g. evaluation seed with the weights fixed); ``total = between + within`` is the
    variance of one run. ``between`` is the ANOVA estimate ``(MSB - MSW) / r`` clipped at 0
    (``between_raw`` keeps the unclipped value).
    """

    groups: int
    replicates: int
    grand_mean: float
    ms_between: float
    ms_within: float
    between_raw: float
    between: float
    within: float

    @property
    def total(self) -> float:
        return self.between + self.within

    @property
    def icc(self) -> float:
        """Share of the total variance between groups."""
        return self.between / self.total if self.total > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total, "icc": self.icc}


def random_effects(table: Any) -> VarianceComponents:
    """Variance components of ``table`` ``(groups, replicates)`` (balanced, >= 2 of each)."""
    y = np.asarray(table, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] < 2 or y.shape[1] < 2:
        raise ValueError(f"need a (groups >= 2, replicates >= 2) table, got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError("table holds non-finite numbers")
    g, r = y.shape
    group_means = y.mean(axis=1)
    grand = float(y.mean())
    ms_between = float(r * np.sum((group_means - grand) ** 2) / (g - 1))
    ms_within = float(np.sum((y - group_means[:, None]) ** 2) / (g * (r - 1)))
    raw = (ms_between - ms_within) / r
    return VarianceComponents(g, r, grand, ms_between, ms_within, raw, max(raw, 0.0), ms_within)


def binomial_variance(accuracy: float, n: int) -> float:
    """Variance (%²) of an accuracy (%) measured on ``n`` independent test clips: ``p(1-p)/n``."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if not 0.0 <= accuracy <= 100.0:
        raise ValueError(f"accuracy must be a percentage in [0, 100], got {accuracy}")
    p = accuracy / 100.0
    return 1e4 * p * (1.0 - p) / n


def bootstrap_mean_variance(per_clip: Any, n_boot: int = 2000, seed: int = 0) -> float:
    """Bootstrap variance of ``100 * mean(per_clip)`` over test clips.

    ``per_clip`` ``(N,)``: 0/1 correctness of one model (variance of its accuracy, %²),
    or the difference of two models' correctness on the same clips (variance of the
    paired accuracy difference: it counts only the clips on which they disagree).
    """
    x = _values(per_clip, "per_clip")
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}")
    rng = np.random.default_rng(seed)
    means = 100.0 * x[rng.integers(0, len(x), (n_boot, len(x)))].mean(axis=1)
    return float(means.var(ddof=1))
