"""The sweep leaderboard: every column is the stats/metrics function on the fold-stitched series
of each seed, aggregated over seeds; flags, break-even cost and oracle fraction by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from tradezoo.agents import leaderboard as lb
from tradezoo.backtest import baselines as bl
from tradezoo.backtest import stats
from tradezoo.backtest.costs import CostModel
from tradezoo.backtest.diagnostics import (
    Replay,
    break_even_cost_bps,
    diagnose,
    policy_flags,
    record_test_part,
)
from tradezoo.backtest.formatting import json_safe
from tradezoo.backtest.metrics import compute_metrics
from tradezoo.backtest.simulation import simulate
from tradezoo.data import load_dataset
from tradezoo.data.datasets import load_bars
from tradezoo.data.synthetic import oracle_positions

REGIME = "synthetic-regime"
PPY = 8760.0
COSTS = CostModel.bybit_linear()
N_BOOT = 200
SPANS = ((8000, 8300), (8300, 8600))  # two folds' test bars (consecutive, sharing one bar)


def _record(dataset: str, fold: int, arch: str, mode: str, seed: int, span: pd.DataFrame,
            targets: np.ndarray, costs: CostModel = COSTS) -> dict:
    result = simulate(span, targets, costs=costs, periods_per_year=PPY)
    record = {
        "format": "tradezoo.cell", "format_version": 1,
        "key": f"{dataset}-{fold}-{arch}-{mode}-{seed}",
        "cell": {"dataset": dataset, "fold": fold, "arch": arch, "mode": mode, "seed": seed},
        "status": "done", "error": None,
        "metrics": result.metrics.to_dict(),
        "test": record_test_part(result, targets),
        "periods_per_year": PPY, "costs": costs.to_dict(),
    }
    return json.loads(json.dumps(json_safe(record)))  # as read back from a cell file


def _blocks(rng: np.random.Generator, n: int, block: int = 25) -> np.ndarray:
    """Targets in {-1, 0, 1} that change every ``block`` bars."""
    values = rng.choice([-1.0, 0.0, 1.0], size=n // block + 1)
    return np.repeat(values, block)[:n]


@pytest.fixture(scope="module")
def regime() -> pd.DataFrame:
    return load_dataset(REGIME)


@pytest.fixture(scope="module")
def records(regime: pd.DataFrame) -> list[dict]:
    out = []
    for fold, (first, last) in enumerate(SPANS):
        span = regime.iloc[first : last + 1]
        n = len(span)
        for seed in (0, 1):
            rng = np.random.default_rng(100 * seed + fold)
            out.append(_record(REGIME, fold, "noise", "supervised", seed, span, _blocks(rng, n)))
        out.append(_record(REGIME, fold, "long", "supervised", 0, span, np.ones(n)))
        out.append(_record(REGIME, fold, "churn", "ppo", 0, span,
                           np.where(np.arange(n) % 2 == 0, 1.0, -1.0)))
        out.append(_record(REGIME, fold, "mixed", "ppo", 0, span, np.zeros(n)))
        out.append(_record(REGIME, fold, "mixed", "ppo", 1, span, np.ones(n)))
        for name in bl.BASELINES:
            result, targets = bl.baseline_backtest(name, regime, span.index[0], span.index[-1],
                                                   costs=COSTS, periods_per_year=PPY)
            record = _record(REGIME, fold, name, "baseline", 0, span, targets.to_numpy())
            assert record["test"]["returns"] == result.returns.tolist()
            out.append(record)
    out.reverse()  # the stitching orders folds by time, not by record order
    return out


@pytest.fixture(scope="module")
def frame(records: list[dict]) -> pd.DataFrame:
    return lb.leaderboard_frame(records, n_boot=N_BOOT)


def _row(frame: pd.DataFrame, arch: str) -> dict:
    rows = frame[frame["arch"] == arch].to_dict("records")
    assert len(rows) == 1
    return rows[0]


def _stitched(records: list[dict], arch: str, seed: int, field: str) -> np.ndarray:
    cells = sorted((r for r in records if r["cell"]["arch"] == arch
                    and r["cell"]["seed"] == seed), key=lambda r: r["cell"]["fold"])
    return np.concatenate([np.asarray(r["test"][field], dtype=float) for r in cells])


def test_columns_are_the_stats_functions_on_stitched_series(
        records: list[dict], frame: pd.DataFrame) -> None:
    assert list(frame.columns) == ["dataset", "arch", "mode", *lb.COLUMNS, *lb.EXTRA_COLUMNS]
    row = _row(frame, "noise")
    seeds = [_stitched(records, "noise", s, "returns") for s in (0, 1)]
    bench = [_stitched(records, "noise", s, "benchmark_returns") for s in (0, 1)]
    assert seeds[0].size == (SPANS[0][1] - SPANS[0][0]) + (SPANS[1][1] - SPANS[1][0])
    metrics = [compute_metrics(r, periods_per_year=PPY) for r in seeds]
    sharpes = [m.sharpe for m in metrics]
    assert row["n_cells"] == 4 and row["n_seeds"] == 2 and row["n_folds"] == 2
    assert row["sharpe_mean"] == pytest.approx(np.mean(sharpes), rel=1e-12)
    assert row["sharpe_iqm"] == pytest.approx(stats.iqm(sharpes), rel=1e-12)
    intervals = [stats.sharpe_confidence_interval(r, n_boot=N_BOOT, periods_per_year=PPY)
                 for r in seeds]
    assert row["sharpe_ci_low"] == pytest.approx(np.mean([i.low for i in intervals]), rel=1e-12)
    assert row["sharpe_ci_high"] == pytest.approx(np.mean([i.high for i in intervals]),
                                                  rel=1e-12)
    assert row["psr"] == pytest.approx(
        np.mean([stats.probabilistic_sharpe_ratio(r) for r in seeds]), rel=1e-12)
    pvalues = [stats.sharpe_difference_pvalue(r, b, n_boot=N_BOOT)
               for r, b in zip(seeds, bench, strict=True)]
    assert row["p_vs_buy_and_hold"] == pytest.approx(np.mean(pvalues), rel=1e-12)
    assert row["total_return_mean"] == pytest.approx(
        np.mean([np.prod(1 + r) - 1 for r in seeds]), rel=1e-9)
    assert row["max_drawdown_mean"] == pytest.approx(
        np.mean([m.max_drawdown for m in metrics]), rel=1e-12)
    turnover = [np.mean([r["metrics"]["turnover"] for r in records
                         if r["cell"]["arch"] == "noise" and r["cell"]["seed"] == s])
                for s in (0, 1)]  # both folds have 300 return bars: equal weights
    assert row["turnover_mean"] == pytest.approx(np.mean(turnover), rel=1e-12)
    # DSR: n_trials = rows with a defined Sharpe (all: flat's is 0), variance across them
    defined = frame[frame["sharpe_mean"].notna()]
    assert row["n_trials"] == len(defined) == len(frame)
    variance = float(np.var(defined["sharpe_mean"].to_numpy() / math.sqrt(PPY), ddof=1))
    assert row["dsr"] == pytest.approx(np.mean(
        [stats.deflated_sharpe_ratio(r, len(defined), variance) for r in seeds]), rel=1e-12)
    assert row["dsr"] < row["psr"]  # deflation lowers it
    assert frame["sharpe_mean"].dropna().is_monotonic_decreasing


def test_flags_of_rows(frame: pd.DataFrame) -> None:
    assert _row(frame, "flat")["flags"] == "never_trades"
    assert _row(frame, "long")["flags"] == "constant_action, buy_and_hold_clone"
    assert _row(frame, "buy_and_hold")["flags"] == "constant_action, buy_and_hold_clone"
    assert "cost_dominated" in _row(frame, "churn")["flags"]
    assert _row(frame, "mixed")["flags"] == (
        "never_trades (1/2 seeds), constant_action (1/2 seeds), "
        "buy_and_hold_clone (1/2 seeds)")
    assert "never_trades" not in _row(frame, "noise")["flags"]
    flat = _row(frame, "flat")
    # no return and no risk: Sharpe 0 (as oracle_sharpe); PSR, interval and p undefined
    assert flat["sharpe_mean"] == 0.0 and flat["total_return_mean"] == 0.0
    assert math.isnan(flat["psr"]) and math.isnan(flat["sharpe_ci_low"])
    assert math.isnan(flat["break_even_cost_bps"])  # no trade: no cost moves its return
    # one flat seed and one long seed: the mean Sharpe counts the flat one as 0, and the
    # statistics undefined for it are undefined for the row (never a subset's mean)
    mixed, long = _row(frame, "mixed"), _row(frame, "long")
    assert mixed["sharpe_mean"] == pytest.approx(long["sharpe_mean"] / 2, rel=1e-12)
    assert mixed["total_return_mean"] == pytest.approx(long["total_return_mean"] / 2,
                                                       rel=1e-12)
    assert math.isnan(mixed["psr"]) and math.isnan(mixed["dsr"])
    # buy-and-hold against itself: identical series, p = 1
    assert _row(frame, "buy_and_hold")["p_vs_buy_and_hold"] == 1.0


def _flags(**overrides: object) -> list[str]:
    n = 100
    base = {"targets": np.r_[np.ones(50), -np.ones(49)],
            "positions": np.r_[np.ones(50), -np.ones(50)],
            "returns": np.tile([0.01, -0.005], 50),
            "gross": np.tile([0.01, -0.005], 50) + 1e-5,
            "benchmark_returns": np.sin(np.arange(n))}
    base.update(overrides)
    return policy_flags(**base)  # type: ignore[arg-type]


def test_policy_flags_by_hand() -> None:
    assert _flags() == []
    assert _flags(positions=np.zeros(100)) == ["never_trades"]
    assert _flags(targets=np.full(99, 0.5)) == ["constant_action"]
    # always flat decisions are never_trades, not constant_action
    assert _flags(targets=np.zeros(99), positions=np.zeros(100)) == ["never_trades"]
    r = np.tile([0.01, -0.005], 50)
    clone = _flags(benchmark_returns=2 * r + 1e-4)
    assert clone == ["buy_and_hold_clone"]
    in_market_95 = np.r_[np.ones(95), np.zeros(5)]  # exposure 0.95 is not above 0.95
    assert _flags(benchmark_returns=2 * r, positions=in_market_95) == []
    assert _flags(benchmark_returns=-r) == []  # anti-correlated
    # costs 0.002 per bar against a gross P&L of 0.25 / 100 bars: not dominated ...
    assert _flags(gross=r + 0.002) == []
    # ... costs 0.01 per bar (1.0 in all) against a gross P&L of 0.25 + 1.0 - 1.0: dominated
    assert _flags(gross=r + 0.01, returns=r + 0.01 - 0.01 - 0.0025) == ["cost_dominated"]
    # a losing gross P&L larger than the costs is not cost-dominated
    assert _flags(gross=r - 0.01, returns=r - 0.011) == []


def _ramp_bars(end_close: float, n: int = 40) -> pd.DataFrame:
    close = np.full(n, 100.0)
    close[-1] = end_close
    index = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")
    frame = pd.DataFrame({"open": 100.0, "high": np.maximum(close, 100.0) + 0.01,
                          "low": np.minimum(close, 100.0) - 0.01, "close": close,
                          "volume": 1000.0}, index=index)
    return load_bars(frame, symbol="T", interval="1h")[0]


FEE_ONLY = CostModel(taker_fee_bps=5.5, funding=False, maintenance_margin=0.0)


def test_break_even_on_a_constructed_case() -> None:
    # long 1 from open[1] = 100 to close = 100.5, one fill of fee f: equity 1.005 - f,
    # zero at f = 50 bps; two seeds ending at 100.5 and 100.3: mean zero at 40 bps
    hold = np.ones(40)
    one = Replay(_ramp_bars(100.5), hold, FEE_ONLY, periods_per_year=PPY)
    assert break_even_cost_bps([[one]]) == pytest.approx(50.0, abs=0.01)
    other = Replay(_ramp_bars(100.3), hold, FEE_ONLY, periods_per_year=PPY)
    assert break_even_cost_bps([[one], [other]]) == pytest.approx(40.0, abs=0.01)
    # folds compound: 1.005 * 1.003 - ... the root of (1.005 - f)(1.003 - f) = 1
    root = ((1.005 + 1.003) - math.sqrt((1.005 + 1.003) ** 2 - 4 * (1.005 * 1.003 - 1))) / 2
    assert break_even_cost_bps([[one, other]]) == pytest.approx(root * 1e4, abs=0.01)
    losing = Replay(_ramp_bars(99.0), hold, FEE_ONLY, periods_per_year=PPY)
    assert math.isnan(break_even_cost_bps([[losing]]))  # loses even without costs
    huge = Replay(_ramp_bars(190.0), hold, FEE_ONLY, periods_per_year=PPY)
    assert break_even_cost_bps([[huge]]) == math.inf  # still earns at 5,000 bps
    zero = CostModel.zero(funding=False)
    free = Replay(_ramp_bars(100.5), hold, zero, periods_per_year=PPY)
    assert break_even_cost_bps([[free]]) == pytest.approx(50.0, abs=0.01)  # from a 1 bp fee


def test_break_even_of_a_row_zeroes_its_total_return(records: list[dict],
                                                     frame: pd.DataFrame,
                                                     regime: pd.DataFrame) -> None:
    row = _row(frame, "momentum")
    cost = row["break_even_cost_bps"]
    assert math.isfinite(cost) and cost > 0
    cells = sorted((lb.parse_cell(r) for r in records if r["cell"]["arch"] == "momentum"),
                   key=lambda c: c.fold)
    scale = cost / COSTS.one_way_cost_bps
    total = 1.0
    for cell in cells:
        replay = Replay(regime.loc[cell.timestamps[0] : cell.timestamps[-1]], cell.targets,
                        COSTS, periods_per_year=PPY)
        total *= 1.0 + replay.total_return(scale)
    assert abs(total - 1.0) < 1e-3


def test_oracle_fraction(records: list[dict], frame: pd.DataFrame,
                         regime: pd.DataFrame) -> None:
    # the oracle replayed on the same test bars with the dataset's costs (as oracle_backtest)
    oracle_targets = oracle_positions(REGIME)
    parts = [simulate(regime.iloc[a : b + 1], oracle_targets.iloc[a : b + 1], costs=COSTS,
                      periods_per_year=PPY).returns.to_numpy() for a, b in SPANS]
    oracle = compute_metrics(np.concatenate(parts), periods_per_year=PPY).sharpe
    assert oracle > 1.0
    seeds = [compute_metrics(_stitched(records, "noise", s, "returns"),
                             periods_per_year=PPY).sharpe for s in (0, 1)]
    assert _row(frame, "noise")["oracle_fraction"] == pytest.approx(
        np.mean([s / oracle for s in seeds]), rel=1e-12)
    assert _row(frame, "noise")["oracle_sharpe"] == pytest.approx(oracle, rel=1e-12)
    # synthetic-noise: the oracle's Sharpe is 0, so no fraction
    noise = load_dataset("synthetic-noise")
    span = noise.iloc[5000:5200]
    one = [_record("synthetic-noise", 0, "long", "supervised", 0, span, np.ones(len(span)))]
    noise_row = lb.leaderboard_frame(one, n_boot=N_BOOT).iloc[0]
    assert math.isnan(noise_row["oracle_fraction"]) and noise_row["oracle_sharpe"] == 0.0
    # a dataset without an oracle
    custom = [_record("custom", 0, "long", "supervised", 0, span, np.ones(len(span)))]
    out = lb.leaderboard_frame(custom, bars={"custom": noise}, n_boot=N_BOOT)
    assert math.isnan(out["oracle_fraction"].iloc[0])


def test_refuses_other_bars_and_overlapping_folds(records: list[dict],
                                                  regime: pd.DataFrame) -> None:
    one = [r for r in records if r["cell"]["arch"] == "long"]
    moved = regime.copy()
    moved["close"] *= 1.01
    moved["high"] *= 1.01
    with pytest.raises(ValueError, match="does not reproduce its returns"):
        lb.leaderboard_frame(one, bars={REGIME: moved}, n_boot=N_BOOT)
    span = regime.iloc[8200:8400]
    overlapping = [one[0], _record(REGIME, 7, "long", "supervised", 0, span, np.ones(len(span)))]
    with pytest.raises(ValueError, match="overlapping test parts"):
        lb.leaderboard_frame(overlapping, n_boot=N_BOOT)
    with pytest.raises(ValueError, match="n_boot must be an integer >= 100"):
        lb.leaderboard_frame(one, n_boot=10)
    with pytest.raises(ValueError, match="no field 'test'"):
        lb.leaderboard_frame([{"key": "k", "cell": one[0]["cell"], "status": "done"}])


def test_failed_cells_are_counted_not_aggregated(records: list[dict]) -> None:
    long_cells = [r for r in records if r["cell"]["arch"] == "long"]
    failed = {"key": "x", "cell": {**long_cells[0]["cell"], "seed": 3}, "status": "failed",
              "error": "RuntimeError: boom"}
    out = lb.leaderboard_frame([*long_cells, failed], n_boot=N_BOOT)
    assert out["n_cells"].iloc[0] == 2 and out["n_failed"].iloc[0] == 1
    with pytest.raises(ValueError, match="no finished cell"):
        lb.leaderboard_frame([failed])


def test_single_run_diagnostics_are_the_rows(records: list[dict], regime: pd.DataFrame) -> None:
    first, last = SPANS[0]
    span = regime.iloc[first : last + 1]
    result, targets = bl.baseline_backtest("sma_cross", regime, span.index[0], span.index[-1],
                                           costs=COSTS, periods_per_year=PPY)
    single = diagnose(result, span, targets)
    cell = [r for r in records if r["cell"]["arch"] == "sma_cross" and r["cell"]["fold"] == 0]
    row = lb.leaderboard_frame(cell, n_boot=N_BOOT).iloc[0]
    assert single.break_even_cost_bps == row["break_even_cost_bps"]
    assert single.flags_text() == (row["flags"] or "none")


def test_baselines_are_ranked_rows(frame: pd.DataFrame) -> None:
    baselines = frame[frame["mode"] == lb.BASELINE_MODE]
    assert sorted(baselines["arch"]) == sorted(bl.BASELINES)
    assert "buy_and_hold" in set(baselines["arch"])
    # one ranking over models and baselines: mean Sharpe descending
    assert list(frame.index) == list(
        frame.sort_values("sharpe_mean", ascending=False, kind="stable").index)


def test_a_single_seed_row_is_that_seeds_statistics(records: list[dict],
                                                     frame: pd.DataFrame) -> None:
    row = _row(frame, "long")
    assert row["n_seeds"] == 1
    returns = _stitched(records, "long", 0, "returns")
    sharpe = compute_metrics(returns, periods_per_year=PPY).sharpe
    assert row["sharpe_mean"] == pytest.approx(sharpe, rel=1e-12)
    assert row["sharpe_iqm"] == pytest.approx(sharpe, rel=1e-12)
    assert row["psr"] == pytest.approx(stats.probabilistic_sharpe_ratio(returns), rel=1e-12)
    interval = stats.sharpe_confidence_interval(returns, n_boot=N_BOOT, periods_per_year=PPY)
    assert (row["sharpe_ci_low"], row["sharpe_ci_high"]) == pytest.approx(
        (interval.low, interval.high), rel=1e-12)


def test_markdown_title_notes_ranks_and_bold_baselines(records: list[dict],
                                                      frame: pd.DataFrame) -> None:
    noise = load_dataset("synthetic-noise")
    span = noise.iloc[5000:5200]
    other = _record("synthetic-noise", 0, "long", "supervised", 0, span, np.ones(len(span)))
    both = lb.leaderboard_frame([*records, other], n_boot=N_BOOT)
    assert list(dict.fromkeys(both["dataset"])) == [REGIME, "synthetic-noise"]  # as recorded
    text = lb.leaderboard_markdown(both, title="T", notes=["first note", "second note"])
    lines = text.splitlines()
    assert lines[:5] == ["# T", "", "first note", "second note", ""]
    assert lines.index(f"## {REGIME}") < lines.index("## synthetic-noise")
    table = [line for line in lines[lines.index(f"## {REGIME}"):lines.index("## synthetic-noise")]
             if line.startswith("| ") and not line.startswith("| #")]
    ranked = frame.to_dict("records")
    assert len(table) == len(ranked)
    for rank, (line, row) in enumerate(zip(table, ranked, strict=True), start=1):
        cells = [c.strip() for c in line.strip("|").split("|")]
        bold = row["mode"] == lb.BASELINE_MODE
        assert cells[:3] == [str(rank), f"**{row['arch']}**" if bold else row["arch"],
                             row["mode"]]
    assert "±" not in text  # one statistic per cell, never a spread over seeds


def test_write_leaderboard_files(records: list[dict], tmp_path) -> None:
    failed = {"key": "x", "cell": {**records[0]["cell"], "seed": 9}, "status": "failed"}
    paths = lb.write_leaderboard_files([*records, failed], tmp_path, n_boot=N_BOOT,
                                       title="T", notes=["a note"])
    assert set(paths) == {"markdown", "csv", "folds", "equity"}
    csv = pd.read_csv(paths["csv"])
    assert list(csv.columns) == ["dataset", "arch", "mode", *lb.COLUMNS, *lb.EXTRA_COLUMNS]
    text = paths["markdown"].read_text()
    assert "## synthetic-regime" in text and "a note" in text and "1 failed cell" in text
    header = next(line for line in text.splitlines() if line.startswith("| #"))
    for column in lb.COLUMNS:
        assert f" {column} " in header
    for name in ("folds", "equity"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize(("fill", "rebalance", "costs"), [
    ("next_open", "on_change", COSTS),
    ("close", "every_bar", CostModel.bybit_linear(slippage="volatility", slippage_k=0.1)),
    ("next_open", "every_bar", CostModel.equities(max_leverage=4.0)),
])
def test_simulate_equity_is_simulates_equity(regime: pd.DataFrame, fill: str, rebalance: str,
                                             costs: CostModel) -> None:
    from tradezoo.backtest.simulation import simulate_equity

    span = regime.iloc[3000:3400]
    targets = _blocks(np.random.default_rng(3), len(span), block=7) * 3.0  # leveraged
    targets[::11] = np.nan
    full = simulate(span, targets, costs=costs, fill=fill, rebalance=rebalance,  # type: ignore[arg-type]
                    periods_per_year=PPY)
    alone = simulate_equity(span, targets, costs=costs, fill=fill,  # type: ignore[arg-type]
                            rebalance=rebalance, periods_per_year=PPY)  # type: ignore[arg-type]
    assert alone.index.equals(full.equity.index)
    np.testing.assert_array_equal(alone.to_numpy(), full.equity.to_numpy())


def test_turnover_is_weighted_by_bars(regime: pd.DataFrame) -> None:
    rng = np.random.default_rng(8)
    spans = [regime.iloc[8600:8701], regime.iloc[8700:9001]]  # 100 and 300 return bars
    cells = [_record(REGIME, fold, "w", "supervised", 0, span, _blocks(rng, len(span), 9))
             for fold, span in enumerate(spans)]
    turnovers = [c["metrics"]["turnover"] for c in cells]
    assert turnovers[0] != pytest.approx(turnovers[1])
    row = lb.leaderboard_frame(cells, n_boot=N_BOOT).iloc[0]
    assert row["turnover_mean"] == pytest.approx((100 * turnovers[0] + 300 * turnovers[1]) / 400,
                                                 rel=1e-12)


def test_record_test_part(regime: pd.DataFrame) -> None:
    from tradezoo.backtest.diagnostics import gross_returns

    span = regime.iloc[4000:4200]
    targets = pd.Series(_blocks(np.random.default_rng(2), len(span), 5), index=span.index)
    targets.iloc[-1] = np.nan
    result = simulate(span, targets, costs=COSTS, periods_per_year=PPY)
    part = record_test_part(result, targets.iloc[:-1])  # a PPO evaluation's targets: one short
    assert part["targets"][-1] is None and part["targets"][:-1] == targets.iloc[:-1].tolist()
    assert len(part["timestamps"]) == len(span) and len(part["returns"]) == len(span) - 1
    assert part["fill"] == "next_open" and part["rebalance"] == "on_change"
    # gross - net = the bar's cost lines over the equity before it
    cost = (gross_returns(result).to_numpy() - result.returns.to_numpy()) \
        * result.equity.to_numpy()[:-1]
    np.testing.assert_allclose(cost, result.costs.sum(axis=1).to_numpy()[1:], atol=1e-15)
    assert cost.sum() > 0
    with pytest.raises(ValueError, match="one target per bar"):
        record_test_part(result, targets.to_numpy()[:-1])
