"""tradezoo.backtest.stats: paper examples, hand-computed values, PBO on noise and on a dominant
configuration, bootstrap coverage, validation."""

from __future__ import annotations

import math
from itertools import combinations
from statistics import NormalDist

import numpy as np
import pytest
import scipy.optimize
import scipy.signal
import scipy.stats

from tradezoo.backtest import stats
from tradezoo.backtest.metrics import compute_metrics
from tradezoo.backtest.stats import (
    deflated_sharpe_ratio,
    expected_max_sharpe,
    iqm,
    pooled_sharpe_difference_pvalue,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    sharpe_confidence_interval,
    sharpe_difference_pvalue,
    stationary_block_length,
)

PHI = NormalDist().cdf


def _returns_with(n: int, sharpe: float, skew: float, kurt: float) -> np.ndarray:
    """``n`` returns whose per-period Sharpe (ddof=1), biased skewness and kurtosis are the
    given ones: normal quantiles through a cubic u + a u^2 + b u^3 solved for the moments
    (affine-invariant), then shifted and scaled to mean ``sharpe`` and std 1."""
    base = np.array([NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)])

    def shaped(params: np.ndarray) -> np.ndarray:
        return base + params[0] * base**2 + params[1] * base**3

    def gap(params: np.ndarray) -> list[float]:
        z = shaped(params)
        return [scipy.stats.skew(z) - skew, scipy.stats.kurtosis(z, fisher=False) - kurt]

    solution = scipy.optimize.fsolve(gap, [-0.3, 0.1], xtol=1e-13)
    z = shaped(solution)
    return (z - z.mean()) / z.std(ddof=1) + sharpe


def _psr_formula(sr: float, sr_star: float, n: int, g3: float, g4: float) -> float:
    return PHI((sr - sr_star) * math.sqrt(n - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2))


# --------------------------------------------------------------------- Sharpe and moments


def test_per_period_sharpe_is_the_metrics_sharpe_without_annualisation() -> None:
    returns = np.random.default_rng(3).normal(0.001, 0.02, 500)
    per_period = float(stats._sharpe_rows(returns))
    assert per_period == pytest.approx(returns.mean() / returns.std(ddof=1), rel=1e-14)
    annual = compute_metrics(returns, periods_per_year=8760).sharpe
    assert per_period * math.sqrt(8760) == pytest.approx(annual, rel=1e-12)


def test_psr_matches_the_formula_with_scipy_moments() -> None:
    # Hand computation: scipy's biased skewness and non-excess kurtosis in eq. 11 of the paper.
    returns = np.random.default_rng(5).lognormal(0.0, 0.5, 300) - 1.05
    sr = returns.mean() / returns.std(ddof=1)
    g3 = scipy.stats.skew(returns)
    g4 = scipy.stats.kurtosis(returns, fisher=False)
    for benchmark in (0.0, 0.05, -0.1):
        expected = _psr_formula(sr, benchmark, returns.size, g3, g4)
        assert probabilistic_sharpe_ratio(returns, benchmark) == pytest.approx(expected,
                                                                               abs=1e-13)


def test_psr_paper_example_bailey_lopez_de_prado_2012() -> None:
    # "The Sharpe Ratio Efficient Frontier" (J. Risk 2012), worked example: 24 monthly returns with
    # SR = 0.458 per month give PSR(0) = 0.982 for normal returns and 0.913 with skewness
    # -2.448 and kurtosis 10.164 (the same figures are asserted by the reference
    # implementation github.com/rubenbriones/Probabilistic-Sharpe-Ratio,
    # tests/test_sharpe_ratio_stats.py).
    normal = _returns_with(24, 0.458, 0.0, 3.0)
    skewed = _returns_with(24, 0.458, -2.448, 10.164)
    assert scipy.stats.skew(skewed) == pytest.approx(-2.448, abs=1e-9)
    assert scipy.stats.kurtosis(skewed, fisher=False) == pytest.approx(10.164, abs=1e-9)
    assert round(probabilistic_sharpe_ratio(normal), 3) == 0.982
    assert round(probabilistic_sharpe_ratio(skewed), 3) == 0.913


def test_dsr_paper_example_bailey_lopez_de_prado_2014() -> None:
    # "The Deflated Sharpe Ratio" (J. Portfolio Management 2014), "A numerical example":
    # N = 100 trials, V[SR] = 1/2 annualised (1/(2*250) daily), T = 1250 daily returns,
    # skewness -3, kurtosis 10, annualised SR 2.5 give SR0 = 0.1132 (daily) and DSR = 0.9004.
    variance = 0.5 / 250
    assert expected_max_sharpe(100, variance) == pytest.approx(0.1132, abs=5e-5)
    # Kurtosis = skewness^2 + 1 is the bound reached only by two-valued samples, so the returns
    # are 105 losses and 1145 gains (skewness -2.9994, kurtosis 9.9965: the nearest a sample
    # of 1250 gets; the DSR moves by about 1e-5 for it).
    two_valued = np.r_[np.full(105, -1.0), np.zeros(1145)]
    returns = (two_valued - two_valued.mean()) / two_valued.std(ddof=1) + 2.5 / math.sqrt(250)
    assert scipy.stats.skew(returns) == pytest.approx(-3.0, abs=1e-3)
    assert scipy.stats.kurtosis(returns, fisher=False) == pytest.approx(10.0, abs=1e-2)
    assert deflated_sharpe_ratio(returns, 100, variance) == pytest.approx(0.9004, abs=5e-5)
    # Fewer trials, a lower bar: hand-computed with the paper's moments.
    sr0 = expected_max_sharpe(46, variance)
    expected = _psr_formula(2.5 / math.sqrt(250), sr0, 1250, -3.0, 10.0)
    assert expected == pytest.approx(0.9505, abs=5e-5)
    assert deflated_sharpe_ratio(returns, 46, variance) == pytest.approx(expected, abs=5e-5)


def test_expected_max_sharpe_hand_values_and_simulation() -> None:
    gamma = 0.5772156649015329
    inv = NormalDist().inv_cdf
    expected = 0.3 * ((1 - gamma) * inv(1 - 1 / 10) + gamma * inv(1 - 1 / (10 * math.e)))
    assert expected_max_sharpe(10, 0.09) == pytest.approx(expected, rel=1e-14)
    assert expected_max_sharpe(1, 0.5) == 0.0  # one trial selects nothing
    assert expected_max_sharpe(50, 0.0) == 0.0
    # The approximation against the simulated mean maximum of 100 skill-less Sharpe ratios:
    # 2.5313 vs 2.5076 for unit variance (about 1 % high, as the False Strategy theorem says).
    draws = np.random.default_rng(0).standard_normal((20_000, 100)).max(axis=1).mean()
    assert expected_max_sharpe(100, 1.0) == pytest.approx(draws, rel=0.02)


def test_dsr_is_psr_against_the_expected_maximum() -> None:
    returns = np.random.default_rng(8).normal(0.002, 0.01, 400)
    sr0 = expected_max_sharpe(25, 0.003)
    assert deflated_sharpe_ratio(returns, 25, 0.003) == probabilistic_sharpe_ratio(returns,
                                                                                   sr0)
    assert deflated_sharpe_ratio(returns, 1, 0.003) == probabilistic_sharpe_ratio(returns)


# ------------------------------------------------------------------------- bootstrap


def test_stationary_indices_have_the_mean_block_length() -> None:
    index = stats._stationary_indices(np.random.default_rng(0), 400, 500, 8.0)
    assert index.shape == (400, 500)
    assert index.min() >= 0 and index.max() < 500
    continues = index[:, 1:] == (index[:, :-1] + 1) % 500
    # A new block starts with probability 1/8 at each bar (a continuation that lands on
    # start + 1 by chance is 1/500 of those).
    assert 1.0 - continues.mean() == pytest.approx(1 / 8 * (1 - 1 / 500), abs=0.004)


def test_block_length_iid_ar1_and_cap() -> None:
    rng = np.random.default_rng(11)
    assert stationary_block_length(rng.standard_normal(2000)) == 1.0
    # AR(1) with coefficient 0.5: the optimal length is (2 phi / (1 - phi^2))^(2/3) n^(1/3)
    # (32.9 at n = 20000); over 10 seeds the estimate fell within 8 % of it.
    n, phi = 20_000, 0.5
    series = scipy.signal.lfilter([1.0], [1.0, -phi], rng.standard_normal(n))
    theory = (2 * phi / (1 - phi**2)) ** (2 / 3) * n ** (1 / 3)
    assert stationary_block_length(series) == pytest.approx(theory, rel=0.15)
    # Over-differenced noise has a long-run variance of about 0, so the plug-in length is
    # huge: capped at ceil(min(3 sqrt(n), n / 3)) = 60 for n = 400.
    assert stationary_block_length(np.diff(rng.standard_normal(401))) == 60.0


def test_confidence_interval_is_reproducible_and_annualises() -> None:
    returns = np.random.default_rng(1).normal(0.001, 0.01, 300)
    first = sharpe_confidence_interval(returns, n_boot=500, seed=4)
    assert sharpe_confidence_interval(returns, n_boot=500, seed=4) == first
    assert sharpe_confidence_interval(returns, n_boot=500, seed=5) != first
    low, high = first
    assert low < float(stats._sharpe_rows(returns)) < high
    annual = sharpe_confidence_interval(returns, n_boot=500, periods_per_year=252, seed=4)
    assert annual.low == pytest.approx(low * math.sqrt(252), rel=1e-12)
    assert annual.high == pytest.approx(high * math.sqrt(252), rel=1e-12)
    narrow = sharpe_confidence_interval(returns, level=0.5, n_boot=500, seed=4)
    assert low < narrow.low < narrow.high < high


def test_confidence_interval_coverage_on_iid_returns() -> None:
    # 200 series of 100 i.i.d. normal returns with true per-period Sharpe 0.1. Tolerance: the
    # coverage must lie in [0.90, 0.99]. Over 1000 series it measured 0.949; with 200 series
    # its binomial standard error is 0.015, so 0.90 is 3 standard errors below and an
    # interval too wide to be useful (coverage -> 1) fails the upper bound. The mean width
    # must match the normal theory, 2 * 1.96 * sqrt((1 + SR^2 / 2) / n), within 10 %.
    rng = np.random.default_rng(2024)
    n, true_sharpe, hits, widths = 100, 0.1, 0, []
    for seed in range(200):
        returns = rng.normal(true_sharpe * 0.01, 0.01, n)
        low, high = sharpe_confidence_interval(returns, n_boot=1000, seed=seed)
        hits += low <= true_sharpe <= high
        widths.append(high - low)
    assert 0.90 <= hits / 200 <= 0.99
    theory = 2 * 1.96 * math.sqrt((1 + true_sharpe**2 / 2) / n)
    assert np.mean(widths) == pytest.approx(theory, rel=0.10)


def test_sharpe_difference_pvalue_edge_identity_and_null() -> None:
    rng = np.random.default_rng(6)
    market = rng.normal(0.0, 0.01, 500)
    edge = market + rng.normal(0.002, 0.003, 500)  # same risk, a clear edge
    assert sharpe_difference_pvalue(edge, market, n_boot=500) < 0.01
    assert sharpe_difference_pvalue(market, edge, n_boot=500) > 0.99
    assert sharpe_difference_pvalue(market, market.copy(), n_boot=500) == 1.0
    assert sharpe_difference_pvalue(edge, market, n_boot=500, seed=3) == \
        sharpe_difference_pvalue(edge, market, n_boot=500, seed=3)
    # Under the null (independent series, equal true Sharpe) a 5 % test rejects about 5 % of
    # the time: at most 12 % of 100 (3 binomial standard errors above 5 %).
    rejections = 0
    for seed in range(100):
        a, b = rng.normal(0.001, 0.01, (2, 150))
        rejections += sharpe_difference_pvalue(a, b, n_boot=300, seed=seed) <= 0.05
    assert rejections <= 12


def test_pooled_sharpe_difference_pvalue_one_run_is_the_paired_test() -> None:
    rng = np.random.default_rng(8)
    market = rng.normal(0.0, 0.01, 400)
    edge = market + rng.normal(0.0005, 0.004, 400)
    for seed in (0, 5):
        assert pooled_sharpe_difference_pvalue(edge[None], market[None], n_boot=300,
                                               seed=seed) == \
            sharpe_difference_pvalue(edge, market, n_boot=300, seed=seed)


def test_pooled_sharpe_difference_pvalue_gains_power_with_runs() -> None:
    """A modest edge in every run: each run's own test is weak, the runs together are not; the
    mean of the per-run p-values does not fall as runs are added."""
    rng = np.random.default_rng(9)
    market = rng.normal(0.0, 0.01, 600)
    runs = 16
    edge = market + rng.normal(0.0006, 0.01, (runs, 600))  # independent runs, same bars
    flat = market + rng.normal(0.0, 0.01, (runs, 600))
    per_run = [sharpe_difference_pvalue(e, f, n_boot=300, seed=1)
               for e, f in zip(edge, flat, strict=True)]
    pooled = pooled_sharpe_difference_pvalue(edge, flat, n_boot=300, seed=1)
    assert np.mean(per_run) > 0.1
    assert pooled < 0.05
    assert pooled_sharpe_difference_pvalue(flat, edge, n_boot=300, seed=1) > 0.95
    # Under the null (equal true Sharpe in every run) a 5 % test rejects at most about 5 % of
    # the time (the test is conservative): at most 12 of 100.
    rejections = 0
    for seed in range(100):
        a, b = rng.normal(0.001, 0.01, (2, 4, 150))
        rejections += pooled_sharpe_difference_pvalue(a, b, n_boot=300, seed=seed) <= 0.05
    assert rejections <= 12


def test_pooled_sharpe_difference_pvalue_counts_the_runs_spread() -> None:
    """One lucky run among equal ones: the bars alone would call the mean difference
    significant; resampling the runs does not."""
    rng = np.random.default_rng(10)
    market = rng.normal(0.0, 0.01, 600)
    base = market + rng.normal(0.0, 0.002, (4, 600))
    lucky = base.copy()
    lucky[0] = market + rng.normal(0.002, 0.002, 600)  # one run with a large edge
    assert sharpe_difference_pvalue(lucky[0], base[0], n_boot=300) < 0.01
    assert pooled_sharpe_difference_pvalue(lucky, base, n_boot=300) > 0.1


def test_pooled_sharpe_difference_pvalue_edges_and_errors() -> None:
    rng = np.random.default_rng(11)
    a = rng.normal(0.0, 0.01, (3, 200))
    assert pooled_sharpe_difference_pvalue(a, a.copy(), n_boot=200) == 1.0
    never = np.zeros((3, 200))  # a form that never trades counts as Sharpe 0
    good = np.abs(a) + 0.001
    assert pooled_sharpe_difference_pvalue(good, never, n_boot=200) < 0.01
    assert pooled_sharpe_difference_pvalue(never, good, n_boot=200) > 0.99
    assert pooled_sharpe_difference_pvalue(good, never, n_boot=200, seed=4) == \
        pooled_sharpe_difference_pvalue(good, never, n_boot=200, seed=4)
    with pytest.raises(ValueError, match=r"returns must be a 2-D array \[runs, bars\]"):
        pooled_sharpe_difference_pvalue(a[0], a[0])
    with pytest.raises(ValueError, match="benchmark_returns must have the shape"):
        pooled_sharpe_difference_pvalue(a, a[:2])
    with pytest.raises(ValueError, match="finite"):
        pooled_sharpe_difference_pvalue(np.full((2, 5), np.nan), a[:2, :5])


# ------------------------------------------------------------------------------- PBO


def _pbo_reference(matrix: np.ndarray, n_splits: int) -> float:
    """CSCV step by step as in Bailey et al. (2015), section 2.2, with loops."""
    t = matrix.shape[0]
    rows = t // n_splits
    blocks = np.split(matrix[t - rows * n_splits :], n_splits)

    def sharpe(part: np.ndarray) -> np.ndarray:
        out = []
        for column in part.T:
            if column.max() == column.min():
                out.append(0.0 if column[0] == 0 else math.copysign(math.inf, column[0]))
            else:
                out.append(column.mean() / column.std(ddof=1))
        return np.array(out)

    overfit = splits = 0
    for chosen in combinations(range(n_splits), n_splits // 2):
        train = np.vstack([blocks[i] for i in chosen])
        test = np.vstack([blocks[i] for i in range(n_splits) if i not in chosen])
        best = int(np.argmax(sharpe(train)))
        ranks = scipy.stats.rankdata(sharpe(test))  # ties averaged
        relative = ranks[best] / (matrix.shape[1] + 1)
        overfit += math.log(relative / (1 - relative)) <= 0
        splits += 1
    return overfit / splits


def test_pbo_hand_example_counts_the_median_as_overfit() -> None:
    # Two blocks of two bars, three configurations (per-period Sharpe in brackets):
    #   A: block 0 [1, 3] (1.414), block 1 [-1, 1] (0)
    #   B: block 0 [0, 2] (0.707), block 1 [1, 3] (1.414)
    #   C: block 0 [-1, 1] (0),    block 1 [0, 2] (0.707)
    # Train on block 0: A wins, ranks 1st of 3 on block 1 (w = 1/4, logit < 0).
    # Train on block 1: B wins, ranks 2nd of 3 on block 0 (w = 2/4, logit = 0: the median).
    matrix = np.array([[1.0, 0.0, -1.0], [3.0, 2.0, 1.0], [-1.0, 1.0, 0.0], [1.0, 3.0, 2.0]])
    assert probability_of_backtest_overfitting(matrix, n_splits=2) == 1.0
    # B's block 0 raised to [1.5, 2.5] (2.83): B wins block 0 and ranks 3rd of 3 on block 1,
    # B wins block 1 and ranks 3rd on block 0 as well: no overfitting.
    matrix[:2, 1] = [1.5, 2.5]
    assert probability_of_backtest_overfitting(matrix, n_splits=2) == 0.0


def test_pbo_matches_a_loop_implementation_with_ties_and_flat_columns() -> None:
    rng = np.random.default_rng(9)
    matrix = rng.integers(-2, 3, size=(63, 7)).astype(float)  # small integers: many ties
    matrix[:, 5] = 0.0  # a flat configuration (Sharpe 0 everywhere)
    matrix[:, 6] = 0.001  # a constant positive return (Sharpe +inf)
    matrix[:, 4] = rng.normal(0.0, 1.0, 63)
    for splits in (2, 4, 6):
        assert probability_of_backtest_overfitting(matrix[:, :5], splits) == pytest.approx(
            _pbo_reference(matrix[:, :5], splits), abs=1e-15)
        assert probability_of_backtest_overfitting(matrix, splits) == pytest.approx(
            _pbo_reference(matrix, splits), abs=1e-15)


def test_pbo_is_about_half_on_noise_and_zero_for_a_dominant_configuration() -> None:
    # With N (even) pure-noise configurations the in-sample winner's out-of-sample rank is
    # uniform, so E[PBO] = 1/2 exactly. One matrix's PBO is noisy (sd 0.17 at S = 8, N = 20),
    # so average 50: standard error 0.025, tolerance 0.08 (3 standard errors).
    rng = np.random.default_rng(12)
    values = [probability_of_backtest_overfitting(rng.standard_normal((400, 20)), n_splits=8)
              for _ in range(50)]
    assert np.mean(values) == pytest.approx(0.5, abs=0.08)
    dominated = rng.standard_normal((1600, 30))
    dominated[:, 7] += 1.0  # Sharpe about 1 per bar against 0: best in every block
    assert probability_of_backtest_overfitting(dominated) == 0.0


# ------------------------------------------------------------------------------- IQM


def test_iqm_hand_values_and_trim_mean() -> None:
    assert iqm([1, 2, 3, 4, 5, 6, 7, 8]) == 4.5  # mean of 3, 4, 5, 6
    assert iqm([100, 1, 3, 2, 4]) == 3.0  # floor(5/4) = 1 dropped at each end
    assert iqm([7.0]) == 7.0
    values = np.random.default_rng(2).standard_cauchy((5, 7))
    assert iqm(values) == pytest.approx(scipy.stats.trim_mean(values, 0.25, axis=None),
                                        rel=1e-14)


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: probabilistic_sharpe_ratio([0.01]), "at least 2 returns"),
        (lambda: probabilistic_sharpe_ratio([0.01, 0.01, 0.01]), "must not be constant"),
        (lambda: probabilistic_sharpe_ratio([0.01, math.nan, 0.02]), "finite"),
        (lambda: probabilistic_sharpe_ratio([[0.01, 0.02]]), "1-D"),
        (lambda: probabilistic_sharpe_ratio([0.01, 0.02], math.inf), "sr_benchmark"),
        (lambda: expected_max_sharpe(0, 0.1), "n_trials must be a finite number of trials"),
        (lambda: expected_max_sharpe(10, -0.1), "sr_variance must be a finite variance"),
        (lambda: deflated_sharpe_ratio([0.01, 0.02], 0.5, 0.1), "n_trials"),
        (lambda: sharpe_confidence_interval([0.01, 0.02, 0.0], level=1.0), "level"),
        (lambda: sharpe_confidence_interval([0.01, 0.02, 0.0], n_boot=10), "n_boot"),
        (lambda: sharpe_confidence_interval([0.01, 0.02, 0.0], periods_per_year=0),
         "periods_per_year"),
        (lambda: sharpe_confidence_interval([0.01, 0.02, 0.0], seed=-1), "seed"),
        (lambda: sharpe_confidence_interval([0.01, 0.02, 0.0], block_length=4), "block_length"),
        (lambda: sharpe_difference_pvalue([0.01, 0.02, 0.0], [0.01, 0.02]),
         "one return per bar"),
        (lambda: sharpe_difference_pvalue([0.01, 0.02, 0.0], [0.0, 0.0, 0.0]),
         "benchmark_returns must not be constant"),
        (lambda: probability_of_backtest_overfitting(np.zeros((40, 1))), "N >= 2"),
        (lambda: probability_of_backtest_overfitting(np.ones((40, 3)), n_splits=5), "even"),
        (lambda: probability_of_backtest_overfitting(np.ones((40, 3)), n_splits=0),
         "n_splits"),
        (lambda: probability_of_backtest_overfitting(np.ones((20, 3)), n_splits=16),
         "at least 2 rows per block"),
        (lambda: probability_of_backtest_overfitting(np.full((40, 3), math.nan), n_splits=4),
         "row 0, column 0"),
        (lambda: iqm([]), "at least one"),
        (lambda: iqm([1.0, math.inf]), "finite"),
    ],
)
def test_bad_input_names_the_input_and_the_rule(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
