"""Statistics that survive many trials: PSR, DSR, bootstrap Sharpe intervals and tests, PBO, IQM.

Formulas, conventions and references are in ``docs/evaluation.md``; each function's docstring
restates its own. Conventions shared by every function here:

- ``returns`` are per-period returns (simple returns of the account, as everywhere in
  :mod:`tradezoo.backtest`), 1-D, finite, at least 2 of them and not all equal.
- **Per-period Sharpe** ``SR = mean(r) / std(r, ddof=1)``: the Sharpe of
  :mod:`tradezoo.backtest.metrics` with no risk-free rate and no annualisation
  (``compute_metrics(r, periods_per_year=P).sharpe == SR * sqrt(P)``). Pass excess returns to
  account for a risk-free rate. Sharpe ratios going in (``sr_benchmark``, ``sr_variance``)
  are per period too: divide an annualised Sharpe by ``sqrt(P)`` and its variance by ``P``.
- **Skewness** ``g3 = m3 / m2**1.5`` and **kurtosis** ``g4 = m4 / m2**2`` (not excess: 3 for
  a normal) from the biased central moments ``m_k = mean((r - mean(r))**k)``: the values of
  ``scipy.stats.skew(r)`` and ``scipy.stats.kurtosis(r, fisher=False)``, computed here with
  numpy (scipy is not a runtime dependency).
- Bootstraps draw from ``numpy.random.default_rng(seed)``: one seed, one result, on any
  machine. The stationary bootstrap's mean block length is chosen from the data by
  :func:`stationary_block_length` unless given.

References: D. H. Bailey and M. López de Prado, "The Sharpe Ratio Efficient Frontier",
J. Risk 15(2), 2012; "The Deflated Sharpe Ratio: Correcting for Selection Bias, Backtest
Overfitting and Non-Normality", J. Portfolio Management 40(5), 2014. D. N. Politis and
J. P. Romano, "The Stationary Bootstrap", JASA 89(428), 1994. D. N. Politis and H. White,
"Automatic Block-Length Selection for the Dependent Bootstrap", Econometric Reviews 23(1),
2004, with A. Patton, D. N. Politis and H. White, "Correction", Econometric Reviews 28(4),
2009. D. H. Bailey, J. M. Borwein, M. López de Prado and Q. J. Zhu, "The Probability of
Backtest Overfitting", J. Computational Finance 20(4), 2017 (SSRN 2326253, 2015).
R. Agarwal, M. Schwarzer, P. S. Castro, A. Courville and M. G. Bellemare, "Deep
Reinforcement Learning at the Edge of the Statistical Precipice", NeurIPS 2021.
"""

from __future__ import annotations

import math
import numbers
from itertools import combinations
from statistics import NormalDist
from typing import NamedTuple

import numpy as np

from tradezoo.backtest.metrics import _as_series_array, _check_finite

EULER_GAMMA = 0.5772156649015329
"""The Euler-Mascheroni constant."""

_NORMAL = NormalDist()
_BOOT_CHUNK_ELEMENTS = 1 << 22
"""Bootstrap resamples are drawn and reduced this many elements (rows x bars) at a time, which
bounds memory (about 32 MiB per float64 array) whatever ``n_boot`` and the series length;
the chunking is fixed, so a seed gives one result."""


class SharpeInterval(NamedTuple):
    """A confidence interval for a Sharpe ratio: ``low <= high``, per period or annualised."""

    low: float
    high: float


# ---------------------------------------------------------------------------- validation


def _returns(name: str, values: object) -> np.ndarray:
    """``values`` as a float64 array [n]: 1-D, finite, n >= 2, not all equal."""
    array, _ = _as_series_array(name, values)
    _check_finite(name, array, " (per-period returns; fill or drop gaps first)")
    if array.size < 2:
        raise ValueError(f"{name} must hold at least 2 returns for a Sharpe ratio "
                         f"(std with ddof=1), got {array.size}")
    if array.max() == array.min():
        raise ValueError(f"{name} must not be constant: its standard deviation is 0, so the "
                         f"Sharpe ratio mean/std is undefined (all {array.size} values are "
                         f"{array[0]!r})")
    return array


def _real(name: str, value: object, rule: str, low: float = -math.inf,
          low_inclusive: bool = True) -> float:
    """``value`` as a finite float that is ``>= low`` (or ``> low``); ``rule`` names the rule."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number ({rule}), got {value!r}")
    number = float(value)
    ok = math.isfinite(number) and (number >= low if low_inclusive else number > low)
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return number


def _count(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _level(level: object) -> float:
    if (isinstance(level, bool) or not isinstance(level, numbers.Real)
            or not 0.0 < float(level) < 1.0):
        raise ValueError(f"level must be a confidence level strictly between 0 and 1, got "
                         f"{level!r}")
    return float(level)


# ------------------------------------------------------------------------------- moments


def _sharpe_rows(values: np.ndarray) -> np.ndarray:
    """Per-period Sharpe ``mean / std(ddof=1)`` along the last axis; NaN where a row is
    constant (tested exactly, as :mod:`~tradezoo.backtest.metrics` does)."""
    std = np.std(values, axis=-1, ddof=1)
    dispersed = values.max(axis=-1) != values.min(axis=-1)
    return np.divide(np.mean(values, axis=-1), std, out=np.full(std.shape, np.nan),
                     where=dispersed)


def _moments(returns: np.ndarray) -> tuple[float, float, float]:
    """(per-period Sharpe, skewness, kurtosis) of a validated series (module docstring)."""
    centered = returns - returns.mean()
    m2 = float(np.mean(centered**2))
    skew = float(np.mean(centered**3)) / m2**1.5
    kurt = float(np.mean(centered**4)) / m2**2
    return float(_sharpe_rows(returns)), skew, kurt


# ------------------------------------------------------------------- PSR, SR0 and DSR


def probabilistic_sharpe_ratio(returns: object, sr_benchmark: float = 0.0) -> float:
    """Probability that the true per-period Sharpe exceeds ``sr_benchmark`` (Bailey & López de
    Prado 2012, eq. 11):

        PSR = Phi((SR - SR*) sqrt(n - 1) / sqrt(1 - g3 SR + (g4 - 1) / 4 SR^2))

    Args:
        returns: per-period returns, shape [n] (n >= 2, finite, not constant).
        sr_benchmark: SR*, a per-period Sharpe (an annual one divided by sqrt(periods/year)).

    Returns:
        A probability in [0, 1].

    Raises:
        ValueError: bad ``returns`` (see module docstring) or a non-finite ``sr_benchmark``.
    """
    values = _returns("returns", returns)
    benchmark = _real("sr_benchmark", sr_benchmark, "a finite per-period Sharpe ratio")
    sharpe, skew, kurt = _moments(values)
    # 1 - g3 SR + (g4 - 1)/4 SR^2 >= (1 - g3 SR / 2)^2 >= 0 since g4 >= g3^2 + 1 for any
    # sample; it is 0 only for a two-valued series with g3 SR = 2.
    spread = 1.0 - skew * sharpe + (kurt - 1.0) / 4.0 * sharpe**2
    if not spread > 0.0:
        raise ValueError("returns give a zero variance for the Sharpe estimate "
                         f"(1 - skew*SR + (kurt-1)/4*SR^2 = {spread!r}): PSR is undefined")
    z = (sharpe - benchmark) * math.sqrt(values.size - 1) / math.sqrt(spread)
    return _NORMAL.cdf(z)


def expected_max_sharpe(n_trials: float, sr_variance: float) -> float:
    """Expected maximum of ``n_trials`` per-period Sharpe ratios of skill-less strategies whose
    Sharpe estimates have variance ``sr_variance`` (Bailey & López de Prado 2014, eq. 3, from
    the False Strategy theorem):

        SR0 = sqrt(V) ((1 - gamma) Phi^-1(1 - 1/N) + gamma Phi^-1(1 - 1/(N e)))

    Args:
        n_trials: N, the number of independent configurations tried (>= 1; an effective,
            non-integer count is allowed). One trial selects nothing: SR0 = 0.
        sr_variance: V, the variance of the per-period Sharpe ratios across the trials (>= 0;
            an annualised Sharpe's variance divided by periods per year).

    Returns:
        SR0, a per-period Sharpe ratio (>= 0).
    """
    trials = _real("n_trials", n_trials, "a finite number of trials >= 1", 1.0)
    variance = _real("sr_variance", sr_variance, "a finite variance >= 0", 0.0)
    if trials == 1.0 or variance == 0.0:
        return 0.0  # no selection (Phi^-1(0) = -inf in the formula), or no dispersion
    quantiles = ((1.0 - EULER_GAMMA) * _NORMAL.inv_cdf(1.0 - 1.0 / trials)
                 + EULER_GAMMA * _NORMAL.inv_cdf(1.0 - 1.0 / (trials * math.e)))
    return math.sqrt(variance) * quantiles


def deflated_sharpe_ratio(returns: object, n_trials: float, sr_variance: float) -> float:
    """The deflated Sharpe ratio (Bailey & López de Prado 2014, eq. 2): the
    :func:`probabilistic_sharpe_ratio` of ``returns`` against SR* =
    :func:`expected_max_sharpe` ``(n_trials, sr_variance)``, i.e. the probability that the
    selected strategy's true Sharpe beats the best of ``n_trials`` skill-less ones.

    Args:
        returns: per-period returns of the selected configuration, shape [n].
        n_trials: number of configurations tried (>= 1).
        sr_variance: variance of the per-period Sharpe ratios across them (>= 0).

    Returns:
        A probability in [0, 1]; > 0.95 passes a 5 % test after selection.
    """
    return probabilistic_sharpe_ratio(returns, expected_max_sharpe(n_trials, sr_variance))


# ------------------------------------------------------------------ block length


def _flat_top(u: np.ndarray) -> np.ndarray:
    """Politis' trapezoidal flat-top lag window: 1 on |u| <= 1/2, 2(1 - |u|) to |u| = 1."""
    u = np.abs(u)
    return np.where(u <= 0.5, 1.0, np.where(u <= 1.0, 2.0 * (1.0 - u), 0.0))


def stationary_block_length(returns: object) -> float:
    """Automatic mean block length of the stationary bootstrap for ``returns``.

    Politis & White (2004) with the Patton, Politis & White (2009) correction
    ``D_SB = 2 g(0)^2``:

        b = (2 G^2 / D_SB)^(1/3) n^(1/3) = (|G| / |g(0)|)^(2/3) n^(1/3)
        G = sum_{|k| <= M} lambda(k/M) |k| R(k),   g(0) = sum_{|k| <= M} lambda(k/M) R(k)

    with R(k) the sample autocovariance (divisor n), lambda the flat-top window and the
    bandwidth M = 2 m, m the smallest lag after which K = max(5, ceil(sqrt(log10 n)))
    consecutive autocorrelations are all below 2 sqrt(log10(n) / n) in absolute value
    (Politis 2003), searched up to lag ceil(sqrt(n)) + K (M is that cap when none is found).
    The result is clipped to [1, ceil(min(3 sqrt(n), n / 3))]: 1 (the i.i.d. bootstrap) for
    serially uncorrelated returns, the cap for an over-differenced series whose long-run
    variance estimate g(0) is about 0 (or below: D_SB squares it).

    Args:
        returns: per-period returns, shape [n] (n >= 2, finite, not constant).

    Returns:
        The mean block length in bars, a float in [1, ceil(min(3 sqrt(n), n / 3))].
    """
    values = _returns("returns", returns)
    n = values.size
    b_max = max(1.0, float(math.ceil(min(3.0 * math.sqrt(n), n / 3.0))))
    centered = values - values.mean()
    k_n = max(5, math.ceil(math.sqrt(math.log10(n))))
    lag_cap = min(math.ceil(math.sqrt(n)) + k_n, n - 1)
    # einsum, not BLAS dot: BLAS threads spin on busy cores (0.9 s instead of 3 ms, n = 20,000).
    acov = np.array([np.einsum("i,i->", centered[: n - k], centered[k:]) / n
                     for k in range(lag_cap + 1)])
    rho = np.abs(acov / acov[0])
    threshold = 2.0 * math.sqrt(math.log10(n) / n)
    bandwidth = lag_cap
    for m in range(lag_cap - k_n + 1):
        if (rho[m + 1 : m + 1 + k_n] < threshold).all():
            bandwidth = min(2 * m, lag_cap)
            break
    if bandwidth == 0:
        return 1.0
    lags = np.arange(1, bandwidth + 1)
    weights = _flat_top(lags / bandwidth)
    g_big = 2.0 * float(np.sum(weights * lags * acov[1 : bandwidth + 1]))
    g_zero = acov[0] + 2.0 * float(np.sum(weights * acov[1 : bandwidth + 1]))
    if g_zero == 0.0:  # no long-run variance (an over-differenced series): longest blocks
        return b_max
    b = (abs(g_big) / abs(g_zero)) ** (2.0 / 3.0) * n ** (1.0 / 3.0)
    return float(min(max(b, 1.0), b_max))


def _block_length(name: str, block_length: object, *series: np.ndarray) -> float:
    """The given mean block length (1 <= b <= n), or the largest automatic one of ``series``."""
    if block_length is None:
        return max(stationary_block_length(values) for values in series)
    n = series[0].size
    rule = f"a mean block length in bars between 1 and the number of returns ({n})"
    value = _real(name, block_length, rule, 1.0)
    if value > n:
        raise ValueError(f"{name} must be {rule}, got {block_length!r}")
    return value


# ---------------------------------------------------------------- stationary bootstrap


def _stationary_indices(rng: np.random.Generator, rows: int, n: int,
                        block_length: float) -> np.ndarray:
    """``rows`` stationary-bootstrap index rows [rows, n] (Politis & Romano 1994): blocks
    start at uniform positions, last Geometric(1 / block_length) bars and wrap around."""
    starts = rng.integers(0, n, size=(rows, n))
    if block_length <= 1.0:
        return starts
    new_block = rng.random((rows, n)) < 1.0 / block_length
    new_block[:, 0] = True
    bars = np.arange(n)
    block_begin = np.where(new_block, bars, 0)
    np.maximum.accumulate(block_begin, axis=1, out=block_begin)
    index = np.take_along_axis(starts, block_begin, axis=1)
    index += bars - block_begin
    index %= n
    return index


def _bootstrap_sharpes(series: tuple[np.ndarray, ...], n_boot: int, block_length: float,
                       seed: int) -> np.ndarray:
    """Per-period Sharpe of each series on ``n_boot`` shared stationary-bootstrap resamples:
    float64 [n_boot, len(series)], NaN where a resample is constant."""
    n = series[0].size
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, len(series)))
    chunk = max(1, _BOOT_CHUNK_ELEMENTS // n)
    for first in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - first)
        index = _stationary_indices(rng, rows, n, block_length)
        for j, values in enumerate(series):
            out[first : first + rows, j] = _sharpe_rows(values[index])
    return out


def _seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def sharpe_confidence_interval(
    returns: object,
    level: float = 0.95,
    n_boot: int = 2000,
    periods_per_year: float | None = None,
    seed: int = 0,
    *,
    block_length: float | None = None,
) -> SharpeInterval:
    """Percentile confidence interval of the Sharpe ratio by the stationary bootstrap
    (Politis & Romano 1994).

    ``n_boot`` resamples of ``returns`` are built from blocks with uniform random starts and
    Geometric(1 / b) lengths, wrapping around the end, so serial dependence up to about b
    bars is kept; the interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles
    (linear interpolation) of the resamples' per-period Sharpe ratios, times
    ``sqrt(periods_per_year)`` when given. Resamples that happen to be constant (Sharpe
    undefined) are left out.

    Args:
        returns: per-period returns, shape [n] (n >= 2, finite, not constant).
        level: coverage, in (0, 1).
        n_boot: number of resamples (>= 100).
        periods_per_year: annualise with ``sqrt(periods_per_year)`` (> 0); ``None`` keeps the
            per-period Sharpe.
        seed: seed of the ``numpy.random.Generator`` (>= 0): same seed, same interval.
        block_length: mean block length b in bars (1 = i.i.d. bootstrap); ``None`` picks it
            with :func:`stationary_block_length`.

    Returns:
        A :class:`SharpeInterval` ``(low, high)``.
    """
    values = _returns("returns", returns)
    coverage = _level(level)
    boots = _count("n_boot", n_boot, 100)
    scale = 1.0 if periods_per_year is None else math.sqrt(_real(
        "periods_per_year", periods_per_year, "a finite number > 0 (bars per year)", 0.0,
        False))
    mean_block = _block_length("block_length", block_length, values)
    sharpes = _bootstrap_sharpes((values,), boots, mean_block, _seed(seed))[:, 0]
    sharpes = sharpes[np.isfinite(sharpes)]
    if sharpes.size == 0:
        raise ValueError("returns: every bootstrap resample was constant; the series has too "
                         "few distinct values for a Sharpe interval")
    tail = (1.0 - coverage) / 2.0
    low, high = np.quantile(sharpes, [tail, 1.0 - tail])
    return SharpeInterval(float(low) * scale, float(high) * scale)


def sharpe_difference_pvalue(
    returns: object,
    benchmark_returns: object,
    n_boot: int = 2000,
    seed: int = 0,
    *,
    block_length: float | None = None,
) -> float:
    """One-sided p-value of H0: SR(returns) <= SR(benchmark_returns), on the same bars, by
    the paired stationary bootstrap.

    Both series are resampled with the same indices (so their correlation is kept). With
    D = SR - SR_b the observed difference of per-period Sharpe ratios and D*_i its value on
    resample i, the null distribution of D is that of D* - D (the bootstrap recentred on the
    null), and

        p = (1 + #{i : D*_i - D >= D}) / (1 + B)

    over the B resamples where both Sharpe ratios are defined (Davison & Hinkley 1997,
    eq. 4.11, whose +1 keeps p > 0). Small p: the strategy's Sharpe exceeds the
    benchmark's. The mean block length is the larger of the two series' automatic lengths.

    Args:
        returns: the strategy's per-period returns, shape [n].
        benchmark_returns: the benchmark's per-period returns on the same bars, shape [n].
        n_boot: number of resamples (>= 100).
        seed: seed of the ``numpy.random.Generator`` (>= 0).
        block_length: mean block length in bars; ``None`` picks it automatically.

    Returns:
        A p-value in (0, 1]; 1 when the two series are identical.
    """
    strategy = _returns("returns", returns)
    benchmark = _returns("benchmark_returns", benchmark_returns)
    if benchmark.size != strategy.size:
        raise ValueError(f"benchmark_returns must have one return per bar of returns "
                         f"({strategy.size}), got {benchmark.size}")
    boots = _count("n_boot", n_boot, 100)
    mean_block = _block_length("block_length", block_length, strategy, benchmark)
    observed = float(_sharpe_rows(strategy) - _sharpe_rows(benchmark))
    sharpes = _bootstrap_sharpes((strategy, benchmark), boots, mean_block, _seed(seed))
    differences = sharpes[:, 0] - sharpes[:, 1]
    differences = differences[np.isfinite(differences)]
    if differences.size == 0:
        raise ValueError("every bootstrap resample of returns or benchmark_returns was "
                         "constant; too few distinct values for a test")
    exceed = int(np.count_nonzero(differences - observed >= observed))
    return (1.0 + exceed) / (1.0 + differences.size)


def _runs(name: str, values: object) -> np.ndarray:
    """``values`` as a float64 array [runs, n]: 2-D, finite, runs >= 1, n >= 2."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 2:
        raise ValueError(f"{name} must be a 2-D array [runs, bars] with at least 1 run and 2 "
                         f"bars (each run's per-period returns), got shape {array.shape}")
    _check_finite(name, array, " (per-period returns; fill or drop gaps first)")
    return array


def _sharpe_or_zero(values: np.ndarray) -> np.ndarray:
    """Per-period Sharpe along the last axis, 0 where a row is constant (a strategy that never
    trades: the leaderboard's convention)."""
    return np.nan_to_num(_sharpe_rows(values), nan=0.0)


def pooled_sharpe_difference_pvalue(
    returns: object,
    benchmark_returns: object,
    n_boot: int = 2000,
    seed: int = 0,
    *,
    block_length: float | None = None,
) -> float:
    """One-sided p-value of H0: mean SR(returns) <= mean SR(benchmark_returns) over several
    runs (training seeds) of each, on the same bars, by a two-level bootstrap.

    Run ``r`` of the strategy is paired with run ``r`` of the benchmark (row ``r`` of each).
    With ``D = mean_r (SR_r - SR_b,r)`` the observed mean difference of per-period Sharpe
    ratios, each resample draws the runs with replacement (the same draw for both) and the
    bars by the stationary bootstrap (the same indices for every run), so its ``D*`` varies
    with both the runs' spread (the training seeds) and the bars' noise (the market). Runs and
    bars are crossed (every run trades the same bars), so this is the pigeonhole bootstrap of
    Owen (2007, "The pigeonhole bootstrap", Ann. Appl. Stat. 1(2)), with stationary blocks for
    the bars: its variance counts the run-by-bar interaction twice, so the test errs on the
    conservative side. As for :func:`sharpe_difference_pvalue`,

        p = (1 + #{i : D*_i - D >= D}) / (1 + B)

    A run whose returns are constant (a strategy that never trades), in the data or in a
    resample, counts as Sharpe 0. The mean block length is the largest automatic length of the
    runs that are not constant. With one run the runs are not resampled, and the p-value equals
    :func:`sharpe_difference_pvalue`'s on two non-constant series. Unlike the mean of per-run
    p-values, this test gains power as runs are added.

    Args:
        returns: the strategy's per-period returns, shape [runs, n].
        benchmark_returns: the benchmark's per-period returns on the same bars, shape
            [runs, n] (row ``r`` paired with row ``r`` of ``returns``).
        n_boot: number of resamples (>= 100).
        seed: seed of the ``numpy.random.Generator`` (>= 0).
        block_length: mean block length in bars; ``None`` picks it automatically.

    Returns:
        A p-value in (0, 1]; 1 when the two arrays are identical.
    """
    strategy = _runs("returns", returns)
    benchmark = _runs("benchmark_returns", benchmark_returns)
    if benchmark.shape != strategy.shape:
        raise ValueError(f"benchmark_returns must have the shape of returns [runs, bars] "
                         f"{strategy.shape}, got {benchmark.shape}")
    boots = _count("n_boot", n_boot, 100)
    runs, n = strategy.shape
    if np.array_equal(strategy, benchmark):
        return 1.0
    dispersed = [row for row in (*strategy, *benchmark) if row.max() != row.min()]
    if block_length is None:
        mean_block = max((stationary_block_length(row) for row in dispersed), default=1.0)
    else:
        mean_block = _block_length("block_length", block_length, strategy[0])
    observed = float(np.mean(_sharpe_or_zero(strategy) - _sharpe_or_zero(benchmark)))
    rng = np.random.default_rng(_seed(seed))
    differences = np.empty(boots)
    chunk = max(1, _BOOT_CHUNK_ELEMENTS // (runs * n))
    for first in range(0, boots, chunk):
        rows = min(chunk, boots - first)
        drawn = (rng.integers(0, runs, size=(rows, runs)) if runs > 1
                 else np.zeros((rows, 1), dtype=np.int64))  # [rows, runs]
        index = _stationary_indices(rng, rows, n, mean_block)  # [rows, n]
        per_run = (_sharpe_or_zero(strategy[:, index])
                   - _sharpe_or_zero(benchmark[:, index]))  # [runs, rows]
        picked = np.take_along_axis(per_run.T, drawn, axis=1)  # [rows, runs]
        differences[first : first + rows] = picked.mean(axis=1)
    exceed = int(np.count_nonzero(differences - observed >= observed))
    return (1.0 + exceed) / (1.0 + boots)


# ------------------------------------------------------------------------- PBO (CSCV)


def probability_of_backtest_overfitting(returns_matrix: object, n_splits: int = 16) -> float:
    """Probability of backtest overfitting by combinatorially symmetric cross-validation
    (Bailey, Borwein, López de Prado & Zhu 2015, section 2).

    The T rows (bars) of the [T, N] matrix of per-period returns of N configurations are cut
    into S = ``n_splits`` contiguous blocks of floor(T / S) rows (the first T mod S rows are
    dropped, keeping the latest data). For each of the C(S, S/2) ways to pick S/2 blocks as
    the in-sample set (the rest out of sample): n* = the configuration with the highest
    in-sample per-period Sharpe (the first on ties); w = the rank of its out-of-sample Sharpe
    among the N (1 = worst, ties averaged) over N + 1; logit = ln(w / (1 - w)). PBO is the
    share of splits with logit <= 0: the in-sample winner at or below the out-of-sample
    median. A configuration that is constant over a set scores 0 there when that constant is
    0 (no return, no risk) and +-inf otherwise, so that every set can be ranked.

    Args:
        returns_matrix: per-period returns, shape [T, N] (rows = bars, columns =
            configurations; N >= 2, finite).
        n_splits: S, even, >= 2, with at least 2 rows per block (T >= 2 S). S = 16 makes
            12,870 splits.

    Returns:
        PBO in [0, 1]: about 0.5 when the configurations are noise, near 0 when the
        in-sample winner stays ahead out of sample.
    """
    try:
        matrix = np.array(returns_matrix, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"returns_matrix must be numeric: {exc}") from None
    if matrix.ndim != 2 or matrix.shape[1] < 2:
        raise ValueError("returns_matrix must be 2-D [T bars, N configurations] with N >= 2, "
                         f"got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        row, col = np.argwhere(~np.isfinite(matrix))[0]
        raise ValueError(f"returns_matrix must be finite: NaN/inf at row {row}, column {col}")
    t, n_configs = matrix.shape
    splits = _count("n_splits", n_splits, 2)
    if splits % 2:
        raise ValueError(f"n_splits must be even (half the blocks in sample), got {splits}")
    rows_per_block = t // splits
    if rows_per_block < 2:
        raise ValueError(f"returns_matrix must have at least 2 rows per block: {t} rows over "
                         f"n_splits={splits} blocks; use fewer splits or more bars")
    blocks = matrix[t - rows_per_block * splits :].reshape(splits, rows_per_block, n_configs)
    # Per-block sums of the column-centred values (Sharpe is not shift-invariant, but the
    # variance is: centring keeps the sum-of-squares variance free of cancellation).
    column_mean = blocks.mean(axis=(0, 1))
    centered = blocks - column_mean
    sums = centered.sum(axis=1)  # [S, N]
    squares = np.square(centered).sum(axis=1)
    lows, highs = blocks.min(axis=1), blocks.max(axis=1)

    chosen = np.array(list(combinations(range(splits), splits // 2)))
    in_sample = np.zeros((len(chosen), splits), dtype=bool)
    np.put_along_axis(in_sample, chosen, True, axis=1)
    is_sharpe = _set_sharpe(in_sample, sums, squares, lows, highs, column_mean, rows_per_block)
    oos_sharpe = _set_sharpe(~in_sample, sums, squares, lows, highs, column_mean,
                             rows_per_block)
    best = np.argmax(is_sharpe, axis=1)
    best_oos = np.take_along_axis(oos_sharpe, best[:, None], axis=1)
    below = np.count_nonzero(oos_sharpe < best_oos, axis=1)
    tied = np.count_nonzero(oos_sharpe == best_oos, axis=1)
    rank = below + (tied + 1) / 2.0  # 1..N, ties averaged
    relative = rank / (n_configs + 1.0)
    logits = np.log(relative / (1.0 - relative))
    return float(np.count_nonzero(logits <= 0.0)) / len(logits)


def _set_sharpe(members: np.ndarray, sums: np.ndarray, squares: np.ndarray, lows: np.ndarray,
                highs: np.ndarray, column_mean: np.ndarray, rows_per_block: int) -> np.ndarray:
    """Per-period Sharpe [C, N] of each configuration over the union of the blocks selected by
    each row of ``members`` [C, S] (see :func:`probability_of_backtest_overfitting` for
    constant sets)."""
    weights = members.astype(np.float64)
    count = rows_per_block * float(members[0].sum())
    total = np.einsum("cs,sn->cn", weights, sums)
    mean = total / count + column_mean
    variance = np.maximum((np.einsum("cs,sn->cn", weights, squares) - total**2 / count)
                          / (count - 1.0), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        sharpe = mean / np.sqrt(variance)
    # A set is constant only if each of its blocks is: look at those configurations only.
    columns = np.flatnonzero((highs == lows).any(axis=0))
    if columns.size:
        big = np.full((len(members), columns.size), -np.inf)
        small = np.full((len(members), columns.size), np.inf)
        for block in range(members.shape[1]):
            member = members[:, block, None]
            np.maximum(big, np.where(member, highs[block, columns], -np.inf), out=big)
            np.minimum(small, np.where(member, lows[block, columns], np.inf), out=small)
        flat_value = np.where(big == 0.0, 0.0, np.copysign(np.inf, big))
        sharpe[:, columns] = np.where(big == small, flat_value, sharpe[:, columns])
    return sharpe


# --------------------------------------------------------------------------------- IQM


def iqm(values: object) -> float:
    """Interquartile mean (Agarwal et al. 2021): the mean of the values left after dropping
    the floor(n / 4) smallest and the floor(n / 4) largest, as ``scipy.stats.trim_mean(values,
    0.25)`` and rliable compute it. Robust to outlying runs, less noisy than the median.

    Args:
        values: scores, any shape (flattened), at least 1, finite.

    Returns:
        The interquartile mean.
    """
    try:
        array = np.array(values, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"values must be numeric: {exc}") from None
    if array.size == 0:
        raise ValueError("values must hold at least one number, got none")
    _check_finite("values", array)
    cut = array.size // 4
    return float(np.mean(np.sort(array)[cut : array.size - cut]))
