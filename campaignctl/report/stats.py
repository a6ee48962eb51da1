"""The statistics of a controlled experiment, as pure functions of arrays.

Treated and control are compared per *assigned* customer, zeros included
(intention to treat): a treated customer who never opened the message still
counts. scipy and statsmodels do the tests; what is written here is only the
glue they do not provide (the delta-method interval of a ratio, CUPED's
adjustment, turning a standardised effect back into roubles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05  # two-sided; the interval is the 95% one
POWER = 0.8  # the power a minimum detectable effect is quoted at
SRM_ALPHA = 0.001  # a split this unlikely under the configured one means assignment is broken


@dataclass(frozen=True)
class Comparison:
    """Treated minus control for one metric, with its interval and p-value."""

    metric: str  # "conversion" | "revenue_per_customer"
    method: str  # "welch" | "bootstrap" | "welch+cuped"
    treated_n: int
    control_n: int
    treated_mean: float
    control_mean: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    relative_lift: float | None  # treated/control - 1; None when the control mean is 0
    lift_ci_low: float | None
    lift_ci_high: float | None

    @property
    def significant(self) -> bool:
        """The interval excludes zero at the 95% level."""
        return self.p_value < ALPHA

    @property
    def significant_uplift(self) -> bool:
        return self.significant and self.difference > 0

    def to_dict(self) -> dict:
        return {**self.__dict__, "significant": self.significant}


def welch(treated: np.ndarray, control: np.ndarray, metric: str, alpha: float = ALPHA, method: str = "welch") -> Comparison:
    """Welch's t-test (unequal variances) on the difference of means, its
    interval, and the relative lift with a delta-method interval."""
    from scipy import stats

    treated, control = _floats(treated), _floats(control)
    nt, nc = len(treated), len(control)
    mt, mc = _mean(treated), _mean(control)
    difference = mt - mc
    if nt < 2 or nc < 2:
        low = high = p = math.nan
    elif _constant(treated) and _constant(control):
        # No variance at all (e.g. nobody converted in either group): the data
        # cannot tell the groups apart unless their constants differ.
        low = high = difference
        p = 1.0 if difference == 0 else 0.0
    else:
        result = stats.ttest_ind(treated, control, equal_var=False)
        interval = result.confidence_interval(1 - alpha)
        low, high, p = float(interval.low), float(interval.high), float(result.pvalue)
    lift, lift_low, lift_high = relative_lift(treated, control, alpha)
    return Comparison(metric, method, nt, nc, mt, mc, difference, low, high, p, lift, lift_low, lift_high)


def relative_lift(treated: np.ndarray, control: np.ndarray, alpha: float = ALPHA) -> tuple[float | None, float | None, float | None]:
    """mean(t)/mean(c) - 1 and its interval by the delta method:
    Var(mt/mc) ≈ Var(mt)/mc² + mt²·Var(mc)/mc⁴ for independent groups."""
    from scipy import stats

    if len(treated) < 2 or len(control) < 2:
        return None, None, None
    mt, mc = _mean(treated), _mean(control)
    if mc == 0:
        return None, None, None
    var_t = float(np.var(treated, ddof=1)) / len(treated)
    var_c = float(np.var(control, ddof=1)) / len(control)
    lift = mt / mc - 1
    se = math.sqrt(var_t / mc**2 + mt**2 * var_c / mc**4)
    z = float(stats.norm.ppf(1 - alpha / 2))
    return lift, lift - z * se, lift + z * se


def bootstrap(treated: np.ndarray, control: np.ndarray, metric: str, alpha: float = ALPHA, resamples: int = 2000,
              seed: int = 0) -> Comparison:
    """The same comparison with a percentile bootstrap interval of the
    difference (scipy.stats.bootstrap) for skewed revenue; the p-value stays Welch's."""
    from scipy import stats

    base = welch(treated, control, metric, alpha)
    if base.treated_n < 2 or base.control_n < 2:
        return base
    result = stats.bootstrap((_floats(treated), _floats(control)), _difference_of_means, n_resamples=resamples,
                             confidence_level=1 - alpha, method="percentile", vectorized=True,
                             rng=np.random.default_rng(seed))
    interval = result.confidence_interval
    return Comparison(**{**base.__dict__, "method": "bootstrap", "ci_low": float(interval.low), "ci_high": float(interval.high)})


def _difference_of_means(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def cuped(treated: np.ndarray, control: np.ndarray, treated_pre: np.ndarray, control_pre: np.ndarray, metric: str,
          alpha: float = ALPHA) -> Comparison:
    """Welch on CUPED-adjusted values: y - θ(x - mean x) with θ = cov(x, y)/var(x)
    over both groups, x the pre-period spend. The estimate stays unbiased
    (x was fixed before assignment); the variance shrinks by corr(x, y)²."""
    y = np.concatenate([_floats(treated), _floats(control)])
    x = np.concatenate([_floats(treated_pre), _floats(control_pre)])
    theta = cuped_theta(x, y)
    adjusted = y - theta * (x - x.mean()) if len(x) else y
    result = welch(adjusted[: len(treated)], adjusted[len(treated):], metric, alpha, method="welch+cuped")
    # The relative lift is of the unadjusted means, with the adjusted difference's precision.
    return result


def cuped_theta(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2:
        return 0.0
    variance = float(np.var(x, ddof=1))
    return 0.0 if variance == 0 else float(np.cov(x, y, ddof=1)[0, 1]) / variance


@dataclass(frozen=True)
class SampleRatio:
    """Did assignment produce the split it was configured to? (sample-ratio mismatch)"""

    treated: int
    control: int
    expected_treated_share: float
    chi2: float
    p_value: float

    @property
    def mismatch(self) -> bool:
        return self.p_value < SRM_ALPHA

    def to_dict(self) -> dict:
        return {**self.__dict__, "mismatch": self.mismatch}


def sample_ratio(treated: int, control: int, expected_treated_share: float) -> SampleRatio:
    """Pearson's chi-square goodness of fit (scipy.stats.chisquare) of the
    observed counts against the configured split."""
    from scipy import stats

    total = treated + control
    if total == 0 or not 0 < expected_treated_share < 1:
        return SampleRatio(treated, control, expected_treated_share, math.nan, 1.0)
    expected = [total * expected_treated_share, total * (1 - expected_treated_share)]
    result = stats.chisquare([treated, control], f_exp=expected)
    return SampleRatio(treated, control, expected_treated_share, float(result.statistic), float(result.pvalue))


@dataclass(frozen=True)
class DetectableEffect:
    """The smallest true difference the experiment finds with POWER at ALPHA."""

    metric: str
    absolute: float | None
    relative: float | None  # of the control (baseline) mean

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def detectable_conversion(baseline: float, treated_n: int, control_n: int, alpha: float = ALPHA, power: float = POWER) -> DetectableEffect:
    """statsmodels' NormalIndPower solves for Cohen's h; h is turned back into a
    conversion rate above ``baseline``."""
    from statsmodels.stats.power import NormalIndPower

    if treated_n < 2 or control_n < 2 or not 0 < baseline < 1:
        return DetectableEffect("conversion", None, None)
    h = float(NormalIndPower().solve_power(effect_size=None, nobs1=treated_n, alpha=alpha, power=power, ratio=control_n / treated_n))
    target = math.sin(min(math.pi / 2, math.asin(math.sqrt(baseline)) + h / 2)) ** 2
    return DetectableEffect("conversion", target - baseline, (target - baseline) / baseline)


def detectable_mean(baseline: float, sd: float, treated_n: int, control_n: int, metric: str, alpha: float = ALPHA,
                    power: float = POWER) -> DetectableEffect:
    """statsmodels' TTestIndPower solves for Cohen's d; d × sd is the effect in the metric's units."""
    from statsmodels.stats.power import TTestIndPower

    if treated_n < 2 or control_n < 2 or not sd > 0:
        return DetectableEffect(metric, None, None)
    d = float(TTestIndPower().solve_power(effect_size=None, nobs1=treated_n, alpha=alpha, power=power, ratio=control_n / treated_n))
    absolute = d * sd
    return DetectableEffect(metric, absolute, absolute / baseline if baseline else None)


def _floats(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else math.nan


def _constant(values: np.ndarray) -> bool:
    return len(values) == 0 or bool(values.min() == values.max())
