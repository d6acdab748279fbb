"""Labels: known answers per class, costs, horizons, NaN tails, the vol threshold, errors,
label_balance, and the no-look-ahead property under perturbation of the future."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradezoo.data.bars import read_bars
from tradezoo.data.errors import DataError
from tradezoo.data.labels import forward_returns, label_balance, make_labels, vol_threshold

BUNDLED_BTC = (
    Path(__file__).resolve().parents[1]
    / "tradezoo"
    / "data"
    / "bundled"
    / "bybit_linear_BTCUSDT_1h.csv.gz"
)


def bars_from_opens(opens: list[float], closes: list[float] | None = None) -> pd.DataFrame:
    """A minimal bars frame: given opens (and closes, default = opens), hourly UTC index."""
    opens_array = np.asarray(opens, dtype=np.float64)
    closes_array = opens_array if closes is None else np.asarray(closes, dtype=np.float64)
    index = pd.date_range("2024-01-01", periods=len(opens_array), freq="h", tz="UTC")
    return pd.DataFrame(
        {
            "open": opens_array,
            "high": np.maximum(opens_array, closes_array),
            "low": np.minimum(opens_array, closes_array),
            "close": closes_array,
            "volume": np.ones(len(opens_array)),
        },
        index=index.rename("timestamp"),
    )


@pytest.fixture(scope="module")
def btc_bars() -> pd.DataFrame:
    return read_bars(BUNDLED_BTC)


# ---------------------------------------------------------------- known answers


def test_each_class_from_next_open_to_following_open() -> None:
    # Row t is judged on open[t+2] / open[t+1] - 1 (horizon 1): the fill rule, not close[t].
    opens = [100.0, 100.0, 101.0, 100.0, 100.2, 100.2, 100.2]
    labels = make_labels(bars_from_opens(opens), horizon=1, threshold=0.005)
    # t=0: 101/100-1 = +1 %     -> buy
    # t=1: 100/101-1 = -0.99 %  -> sell
    # t=2: 100.2/100-1 = +0.2 % -> hold
    # t=3: 100.2/100.2-1 = 0    -> hold
    # t=4: 100.2/100.2-1 = 0    -> hold
    # t=5, t=6: no complete horizon -> NaN
    expected = [2.0, 0.0, 1.0, 1.0, 1.0, np.nan, np.nan]
    np.testing.assert_array_equal(labels.to_numpy(), expected)
    assert labels.name == "label"
    assert labels.dtype == np.float64
    assert labels.index.equals(bars_from_opens(opens).index)


def test_close_of_bar_t_is_not_the_entry_price() -> None:
    # A jump between close[t] and open[t+1] is not earned by the order placed at t.
    opens = [100.0, 110.0, 110.0, 110.0]
    closes = [100.0, 110.0, 110.0, 110.0]
    labels = make_labels(bars_from_opens(opens, closes), threshold=0.005)
    assert labels.iloc[0] == 1.0  # open[2] / open[1] - 1 = 0: hold, despite the +10 % gap


def test_cost_flips_buy_to_hold() -> None:
    # gross = 100.6 / 100 - 1 = +0.6 % > 0.5 %: buy at zero cost; with 10 bps per side the
    # round trip costs 0.2 %, net +0.4 % < 0.5 %: hold.
    bars = bars_from_opens([100.0, 100.0, 100.6, 100.6])
    assert make_labels(bars, threshold=0.005, cost_bps=0.0).iloc[0] == 2.0
    assert make_labels(bars, threshold=0.005, cost_bps=10.0).iloc[0] == 1.0
    # 4 bps per side: net +0.52 % > 0.5 % is still a buy, so the cost is per side, doubled.
    assert make_labels(bars, threshold=0.005, cost_bps=4.0).iloc[0] == 2.0
    assert make_labels(bars, threshold=0.005, cost_bps=5.5).iloc[0] == 1.0


def test_cost_flips_sell_to_hold() -> None:
    bars = bars_from_opens([100.0, 100.0, 99.4, 99.4])
    assert make_labels(bars, threshold=0.005, cost_bps=0.0).iloc[0] == 0.0
    assert make_labels(bars, threshold=0.005, cost_bps=10.0).iloc[0] == 1.0


def test_zero_threshold_zero_cost_labels_every_move() -> None:
    bars = bars_from_opens([1.0, 1.0, 1.0001, 1.0, 1.0, 1.0])
    labels = make_labels(bars, threshold=0.0)
    np.testing.assert_array_equal(labels.to_numpy(), [2.0, 0.0, 1.0, 1.0, np.nan, np.nan])


def test_horizon_three_uses_open_t_plus_4() -> None:
    opens = [100.0, 100.0, 90.0, 95.0, 102.0, 100.0, 100.0, 95.0, 95.0]
    labels = make_labels(bars_from_opens(opens), horizon=3, threshold=0.01)
    # t=0: open[4] / open[1] = 102/100: +2 %      -> buy  (intermediate dips do not matter)
    # t=1: open[5] / open[2] = 100/90:  +11.1 %   -> buy
    # t=2: open[6] / open[3] = 100/95:  +5.3 %    -> buy
    # t=3: open[7] / open[4] = 95/102:  -6.9 %    -> sell
    # t=4: open[8] / open[5] = 95/100:  -5 %      -> sell
    # t=5..8: the last 1 + 3 rows have no complete horizon
    expected = [2.0, 2.0, 2.0, 0.0, 0.0, np.nan, np.nan, np.nan, np.nan]
    np.testing.assert_array_equal(labels.to_numpy(), expected)


@pytest.mark.parametrize("horizon", [1, 2, 5, 24])
def test_nan_tail_is_exactly_one_plus_horizon(btc_bars: pd.DataFrame, horizon: int) -> None:
    bars = btc_bars.iloc[:500]
    labels = make_labels(bars, horizon=horizon, threshold=0.002)
    assert labels.iloc[-(1 + horizon) :].isna().all()
    assert labels.iloc[: -(1 + horizon)].notna().all()


def test_forward_returns_matches_definition(btc_bars: pd.DataFrame) -> None:
    bars = btc_bars.iloc[:300]
    opens = bars["open"].to_numpy()
    gross = forward_returns(bars, 4)
    assert gross.name == "forward_return"
    t = np.arange(len(bars) - 5)
    np.testing.assert_array_equal(gross.to_numpy()[t], opens[t + 5] / opens[t + 1] - 1.0)
    assert gross.iloc[-5:].isna().all()


def test_too_short_frame_is_all_nan() -> None:
    labels = make_labels(bars_from_opens([100.0, 101.0]), horizon=1)
    assert labels.isna().all()
    assert len(labels) == 2


def test_nan_open_inside_horizon_gives_nan_label() -> None:
    bars = bars_from_opens([100.0, 100.0, np.nan, 100.0, 102.0, 100.0])
    labels = make_labels(bars, horizon=1, threshold=0.005)
    # t=0 exits at open[2] (NaN); t=1 enters at open[2] (NaN); t=2 is judged 102/100.
    np.testing.assert_array_equal(labels.to_numpy(), [np.nan, np.nan, 2.0, 0.0, np.nan, np.nan])


# ---------------------------------------------------------------- vol threshold


def test_vol_threshold_on_constructed_series() -> None:
    # Closes alternate +-1 % log moves, so every 4-return window has the same known std;
    # then a big up-move in opens must be a buy and a small one a hold.
    n = 16
    log_moves = np.array([0.0] + [0.01 * (-1) ** k for k in range(n - 1)])
    closes = 100.0 * np.exp(np.cumsum(log_moves))
    opens = np.full(n, 100.0)
    opens[10] = 100.0
    opens[11] = 103.0  # row 9: entry open[10]=100, exit open[11]=103: +3 %
    opens[12] = 103.5  # row 10: +0.49 %
    bars = bars_from_opens(list(opens), list(closes))

    window = 4
    expected_std = np.std([0.01, -0.01, 0.01, -0.01], ddof=1)
    thr = vol_threshold(bars, horizon=1, vol_k=1.5, vol_window=window)
    assert thr.iloc[:window].isna().all()  # r[0] does not exist: first full window ends at 4
    np.testing.assert_allclose(thr.iloc[window:].to_numpy(), 1.5 * expected_std, rtol=1e-9)

    labels = make_labels(bars, horizon=1, threshold="vol", vol_k=1.5, vol_window=window)
    assert 1.5 * expected_std == pytest.approx(0.0173205, rel=1e-5)
    assert labels.iloc[:window].isna().all()  # warm-up rows are unlabelled
    assert labels.iloc[9] == 2.0  # +3 % > 1.73 %
    assert labels.iloc[10] == 1.0  # +0.49 % < 1.73 %
    assert labels.iloc[11] == 0.0  # 100 / 103.5 - 1 = -3.4 %
    assert labels.iloc[-2:].isna().all()


def test_vol_threshold_scales_with_sqrt_horizon(btc_bars: pd.DataFrame) -> None:
    bars = btc_bars.iloc[:400]
    one = vol_threshold(bars, horizon=1, vol_window=24).to_numpy()
    four = vol_threshold(bars, horizon=4, vol_window=24).to_numpy()
    np.testing.assert_allclose(four[24:], 2.0 * one[24:], rtol=1e-12)
    log_returns = np.diff(np.log(bars["close"].to_numpy()))
    t = 100
    reference = np.std(log_returns[t - 24 : t], ddof=1)  # r[t-23..t] = diff index t-24..t-1
    assert one[t] == pytest.approx(reference, rel=1e-9)


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"horizon": 0}, ValueError, "horizon"),
        ({"horizon": -2}, ValueError, "horizon"),
        ({"horizon": 1.5}, TypeError, "horizon"),
        ({"horizon": True}, TypeError, "horizon"),
        ({"threshold": -0.001}, ValueError, "threshold"),
        ({"threshold": math.nan}, ValueError, "threshold"),
        ({"threshold": "volatility"}, ValueError, "threshold"),
        ({"cost_bps": -1.0}, ValueError, "cost_bps"),
        ({"cost_bps": math.inf}, ValueError, "cost_bps"),
        ({"cost_bps": "10"}, TypeError, "cost_bps"),
        ({"threshold": "vol", "vol_k": 0.0}, ValueError, "vol_k"),
        ({"threshold": "vol", "vol_k": -1.0}, ValueError, "vol_k"),
        ({"vol_k": 0.0}, ValueError, "vol_k"),
        ({"threshold": "vol", "vol_window": 1}, ValueError, "vol_window"),
        ({"threshold": "vol", "vol_window": 2.5}, TypeError, "vol_window"),
    ],
)
def test_bad_arguments_name_the_argument(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    bars = bars_from_opens([100.0, 101.0, 102.0, 103.0])
    with pytest.raises(error, match=match):
        make_labels(bars, **kwargs)  # type: ignore[arg-type]


def test_bars_must_be_a_frame_with_open() -> None:
    with pytest.raises(TypeError, match="bars"):
        make_labels(np.ones((5, 5)))  # type: ignore[arg-type]
    with pytest.raises(DataError, match="open"):
        make_labels(bars_from_opens([1.0, 2.0, 3.0]).drop(columns=["open"]))
    with pytest.raises(DataError, match="close"):
        make_labels(bars_from_opens([1.0, 2.0, 3.0]).drop(columns=["close"]), threshold="vol")


def test_non_positive_prices_are_rejected() -> None:
    with pytest.raises(DataError, match=r"'open'.*> 0"):
        make_labels(bars_from_opens([100.0, 0.0, 100.0, 100.0]))


# ---------------------------------------------------------------- balance


def test_label_balance_counts_and_fractions() -> None:
    labels = pd.Series([0.0, 1.0, 1.0, 2.0, 2.0, 2.0, np.nan, np.nan])
    table = label_balance(labels)
    assert list(table.index) == ["sell", "hold", "buy", "nan"]
    assert table.index.name == "class"
    assert table["count"].tolist() == [1, 2, 3, 2]
    assert table["count"].dtype == np.int64
    np.testing.assert_allclose(table["fraction"].to_numpy(), [1 / 6, 2 / 6, 3 / 6, 2 / 8])


def test_label_balance_of_nothing_labelled() -> None:
    table = label_balance(np.array([np.nan, np.nan]))
    assert table["count"].tolist() == [0, 0, 0, 2]
    assert table["fraction"].iloc[:3].isna().all()
    assert table.loc["nan", "fraction"] == 1.0


def test_label_balance_rejects_other_values() -> None:
    with pytest.raises(ValueError, match=r"0 \(sell\), 1 \(hold\), 2 \(buy\)"):
        label_balance(pd.Series([0.0, 3.0, 1.0]))


def test_label_balance_on_real_labels(btc_bars: pd.DataFrame) -> None:
    labels = make_labels(btc_bars, horizon=4, threshold=0.005, cost_bps=5.5)
    table = label_balance(labels)
    assert table["count"].sum() == len(btc_bars)
    assert table.loc["nan", "count"] == 5
    assert table["fraction"].iloc[:3].sum() == pytest.approx(1.0)
    assert (table["count"].iloc[:3] > 0).all()


# ---------------------------------------------------------------- no look-ahead


LABEL_CONFIGS: list[dict[str, object]] = [
    {"horizon": 1, "threshold": 0.003},
    {"horizon": 6, "threshold": 0.004, "cost_bps": 5.5},
    {"horizon": 1, "threshold": "vol", "vol_window": 24},
    {"horizon": 3, "threshold": "vol", "vol_k": 0.5, "vol_window": 10, "cost_bps": 2.0},
]


def perturb_after(bars: pd.DataFrame, t: int, rng: np.random.Generator) -> pd.DataFrame:
    """Every price of every bar after ``t`` multiplied by a random positive factor."""
    changed = bars.copy()
    n_after = len(bars) - t - 1
    factors = np.exp(rng.normal(0.0, 0.05, size=(n_after, 1)))
    columns = ["open", "high", "low", "close"]
    changed.iloc[t + 1 :, [bars.columns.get_loc(c) for c in columns]] = (
        bars[columns].to_numpy()[t + 1 :] * factors
    )
    changed.iloc[t + 1 :, bars.columns.get_loc("volume")] = rng.uniform(1, 9, size=n_after)
    return changed


_BTC_HEAD: list[pd.DataFrame] = []


def _btc_head() -> pd.DataFrame:
    """The first 2,000 bundled BTCUSDT bars, read once (hypothesis calls the test many times)."""
    if not _BTC_HEAD:
        _BTC_HEAD.append(read_bars(BUNDLED_BTC).iloc[:2000].copy())
    return _BTC_HEAD[0]


@settings(max_examples=25, derandomize=True, deadline=None)
@given(t=st.integers(min_value=0, max_value=1999), seed=st.integers(0, 2**32 - 1))
def test_future_changes_do_not_reach_completed_labels(t: int, seed: int) -> None:
    bars = _btc_head()
    changed = perturb_after(bars, t, np.random.default_rng(seed))
    for config in LABEL_CONFIGS:
        horizon = int(config["horizon"])  # type: ignore[call-overload]
        before = make_labels(bars, **config).to_numpy()  # type: ignore[arg-type]
        after = make_labels(changed, **config).to_numpy()  # type: ignore[arg-type]
        # Row s's horizon ends at bar s + 1 + horizon; every row with s + 1 + horizon <= t
        # must be bit-identical (NaN where it was NaN).
        complete = max(t - horizon, 0)  # rows s = 0 .. t - 1 - horizon
        np.testing.assert_array_equal(before[:complete], after[:complete])
        assert before[:complete].tobytes() == after[:complete].tobytes()


def test_perturbation_test_can_fail() -> None:
    # Guard against a vacuous perturbation test: the first label whose horizon reaches past t
    # does change for some perturbation.
    bars = _btc_head()
    t = 1000
    changed = bars.copy()
    changed.iloc[t + 1 :, changed.columns.get_loc("open")] *= 1.05
    before = make_labels(bars, horizon=1, threshold=0.003).to_numpy()
    after = make_labels(changed, horizon=1, threshold=0.003).to_numpy()
    # Row t - 1 exits at open[t + 1]: its label must see the +5 % jump.
    assert before[t - 1] != 2.0
    assert after[t - 1] == 2.0
    np.testing.assert_array_equal(before[: t - 1], after[: t - 1])
