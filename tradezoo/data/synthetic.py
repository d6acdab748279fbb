"""Synthetic calibration markets: bars whose edge is known, with the hidden state that holds it.

Five markets, each generated at load time from a fixed seed by a vectorised numpy generator
(a few milliseconds; no file, no cache), on a 1-hour UTC grid starting 2018-01-01 00:00.
Their formulas, parameters, seeds and oracle figures are in ``docs/calibration.md``:

- ``synthetic-regime``: a hidden drift ``mu * s_t`` whose sign ``s_t`` is a two-state Markov
  chain (trend following has an edge);
- ``synthetic-meanrevert``: log price = a random-walk level + an Ornstein-Uhlenbeck deviation
  (fading deviations has an edge);
- ``synthetic-noise``: a martingale random walk (no strategy has an edge);
- ``synthetic-irregular``: 1-hour bars with random missing hours, over a price whose drift is
  an OU signal decaying with real elapsed time (a model that sees ``dt`` has an edge over one
  that counts bars);
- ``synthetic-cycle``: 1-hour bars at random hours (every step random, mean 3 h), over a price
  whose drift is a damped cycle in real time (16 h period, 48 h decay): without ``dt`` the
  phase of what the last bars showed is lost, and with it the sign of the trade.

Each market's hidden state (:func:`hidden_state`) has a column ``oracle_signal``; the oracle
(:func:`oracle_positions`) holds ``sign(oracle_signal)`` (long 1 or short 1) and keeps its
previous position while ``|oracle_signal| <= band`` (a hysteresis band, in the signal's
units, that keeps it from paying a round trip for a negligible edge). It is a reference policy
that sees the hidden state, not a proven optimum. Its figures, replayed through the one
engine with the dataset's own cost model, come from :mod:`tradezoo.agents.calibration` (the data
layer imports nothing above it).

Bar shapes (all markets): ``open`` is the log-price path at the bar's open, ``close`` at its
close; ``high`` and ``low`` are the exact maximum and minimum of a Brownian bridge from open to
close with the bar's diffusion variance ``v`` (for a log move ``c``,
``high = open * exp((c + sqrt(c^2 - 2 v ln U)) / 2)`` and
``low = open * exp((c - sqrt(c^2 - 2 v ln V)) / 2)``, ``U, V ~ Uniform(0, 1]``; the law of the
bridge's extremes), so ``low <= min(open, close) <= max(open, close) <= high`` by
construction. ``volume = 1000 * exp(0.3 z) * (1 + |c| / sqrt(v))``, ``z ~ N(0, 1)``: positive,
lognormal, higher on bars that move more.

Reproducibility: the same seed gives the same bytes on the same numpy build and CPU. numpy
does not promise the ``Generator`` streams across versions, and its vectorised ``exp``/``log``
may differ in the last bit between CPUs; neither changes a figure at the precision reported.

Run ``python -m tradezoo.agents.calibration`` to print every market's oracle and buy-and-hold
Sharpe on the train, validation and test parts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tradezoo.data.bars import finalize_bars

SOURCE = "synthetic"
"""``attrs["source"]`` of every synthetic market (its cost model: ``CostModel.for_source``)."""
INTERVAL = "1h"
START = pd.Timestamp("2018-01-01 00:00", tz="UTC")
"""Open time of the first grid hour of every market."""
BASE_PRICE = 100.0
BASE_VOLUME = 1000.0
_HOUR = pd.Timedelta(hours=1)


@dataclass(frozen=True)
class SyntheticMarket:
    """One calibration market's settings (the generator's parameters are in ``params``).

    Attributes:
        name: dataset name (``load_dataset(name)``).
        symbol: ``attrs["symbol"]`` of its bars.
        seed: seed of ``numpy.random.default_rng``.
        n_bars: number of bars.
        band: the oracle's hysteresis band, in units of ``oracle_signal``.
        description: one line for ``tradezoo data list``.
        params: the generator's parameters (names as in docs/calibration.md).
    """

    name: str
    symbol: str
    seed: int
    n_bars: int
    band: float
    description: str
    params: tuple[tuple[str, float], ...]

    def param(self, key: str) -> float:
        """The parameter ``key`` of :attr:`params`."""
        return dict(self.params)[key]


@dataclass(frozen=True)
class SyntheticSeries:
    """A generated market: bars (not yet validated) and the hidden state on the same index."""

    bars: pd.DataFrame
    hidden: pd.DataFrame


MARKETS: dict[str, SyntheticMarket] = {
    market.name: market
    for market in (
        SyntheticMarket(
            name="synthetic-regime",
            symbol="SYN-REGIME",
            seed=1001,
            n_bars=12_000,
            band=0.0,
            description="Synthetic: hidden drift whose sign is a Markov chain (trends), 1h",
            params=(("sigma", 0.005), ("mu", 0.0005), ("p_switch", 1.0 / 200.0)),
        ),
        SyntheticMarket(
            name="synthetic-meanrevert",
            symbol="SYN-MEANREVERT",
            seed=1002,
            n_bars=12_000,
            band=0.005,
            description="Synthetic: random-walk level + OU deviation (mean reversion), 1h",
            params=(("sigma_level", 0.002), ("sigma_dev", 0.004), ("tau_bars", 24.0)),
        ),
        SyntheticMarket(
            name="synthetic-noise",
            symbol="SYN-NOISE",
            seed=1003,
            n_bars=12_000,
            band=0.0,
            description="Synthetic: martingale random walk, no edge anywhere, 1h",
            params=(("sigma", 0.005),),
        ),
        SyntheticMarket(
            name="synthetic-irregular",
            symbol="SYN-IRREGULAR",
            seed=1004,
            n_bars=10_000,
            band=0.5,
            description="Synthetic: OU drift decaying in real time, random missing hours, 1h",
            params=(
                ("sigma", 0.005),
                ("a", 0.002),
                ("tau_hours", 6.0),
                ("p_next_hour", 0.8),
                ("mean_outage_hours", 24.0),
            ),
        ),
        SyntheticMarket(
            name="synthetic-cycle",
            symbol="SYN-CYCLE",
            seed=1005,
            n_bars=10_000,
            band=0.0,
            description="Synthetic: damped 16h cycle in the drift, bars at random hours, 1h",
            params=(
                ("sigma", 0.005),
                ("a", 0.003),
                ("tau_hours", 48.0),
                ("period_hours", 16.0),
                ("mean_step_hours", 3.0),
            ),
        ),
    )
}
"""The calibration markets by dataset name."""


def market(name: str) -> SyntheticMarket:
    """The settings of the synthetic market ``name``.

    Raises:
        KeyError: not a synthetic market (the message lists them).
    """
    try:
        return MARKETS[name]
    except KeyError:
        raise KeyError(f"unknown synthetic market {name!r}; they are {sorted(MARKETS)}") from None


# ------------------------------------------------------------------------------ bar shapes


def _bars(
    index: pd.DatetimeIndex,
    log_open: np.ndarray,
    log_close: np.ndarray,
    variance: np.ndarray | float,
    rng: np.random.Generator,
    spec: SyntheticMarket,
) -> pd.DataFrame:
    """A bars frame from log open/close [n] and each bar's diffusion variance (see module)."""
    n = len(index)
    u_high = 1.0 - rng.random(n)  # (0, 1]: ln U is finite
    u_low = 1.0 - rng.random(n)
    z_volume = rng.standard_normal(n)
    move = log_close - log_open
    reach_high = np.sqrt(move * move - 2.0 * variance * np.log(u_high))
    reach_low = np.sqrt(move * move - 2.0 * variance * np.log(u_low))
    open_ = np.exp(log_open)
    close = np.exp(log_close)
    # In exact arithmetic high >= max(open, close); the max/min guard the last float bit.
    high = np.maximum(np.exp(log_open + 0.5 * (move + reach_high)), np.maximum(open_, close))
    low = np.minimum(np.exp(log_open + 0.5 * (move - reach_low)), np.minimum(open_, close))
    volume = BASE_VOLUME * np.exp(0.3 * z_volume) * (1.0 + np.abs(move) / np.sqrt(variance))
    frame = pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume},
        index=index,
    )
    return finalize_bars(
        frame,
        symbol=spec.symbol,
        interval=INTERVAL,
        source=SOURCE,
        calendar="24/7",
        seed=spec.seed,
        generator=f"tradezoo.data.synthetic:{spec.name}",
    )


def _hourly_index(hours: np.ndarray) -> pd.DatetimeIndex:
    stamps = START + pd.to_timedelta(np.asarray(hours, dtype=np.int64), unit="h")
    return pd.DatetimeIndex(stamps, name="timestamp").as_unit("ns")


def _continuous(
    returns: np.ndarray, variance: np.ndarray | float, rng: np.random.Generator,
    spec: SyntheticMarket,
) -> pd.DataFrame:
    """Bars of a market trading every hour: ``open[t] = close[t-1]``, log returns [n]."""
    log_close = math.log(BASE_PRICE) + np.cumsum(returns)
    log_open = np.concatenate([[math.log(BASE_PRICE)], log_close[:-1]])
    index = _hourly_index(np.arange(len(returns)))
    return _bars(index, log_open, log_close, variance, rng, spec)


def _sampled(
    hourly: np.ndarray, hours: np.ndarray, variance: float, rng: np.random.Generator,
    spec: SyntheticMarket,
) -> pd.DataFrame:
    """Bars of a market observed at some grid hours only: from the hourly log returns
    ``[H]`` of a latent path ``L`` (``L_0 = log BASE_PRICE``), bar ``i`` is grid hour
    ``g_i = hours[i]`` with open ``L_{g_i}`` and close ``L_{g_i + 1}``; the hours between
    bars are missing."""
    latent = math.log(BASE_PRICE) + np.concatenate([[0.0], np.cumsum(hourly)])  # L_h
    return _bars(_hourly_index(hours), latent[hours], latent[hours + 1], variance, rng, spec)


# ------------------------------------------------------------------------------ generators


def _regime(spec: SyntheticMarket, rng: np.random.Generator) -> SyntheticSeries:
    """``r_t = mu * s_t - sigma^2 / 2 + sigma * e_t``; ``s_t`` flips with probability p."""
    n, sigma, mu, p = spec.n_bars, spec.param("sigma"), spec.param("mu"), spec.param("p_switch")
    first = 1.0 if rng.random() < 0.5 else -1.0
    flips = rng.random(n) < p
    flips[0] = False
    regime = first * np.where(np.cumsum(flips) % 2 == 0, 1.0, -1.0)  # s_t drives bar t
    noise = rng.standard_normal(n)
    returns = mu * regime - 0.5 * sigma**2 + sigma * noise
    bars = _continuous(returns, sigma**2, rng, spec)
    # At the close of bar t: E[s_{t+1}] = (1 - 2p) s_t.
    expected = mu * (1.0 - 2.0 * p) * regime - 0.5 * sigma**2
    hidden = pd.DataFrame(
        {"regime": regime, "drift": mu * regime, "expected_return": expected,
         "oracle_signal": regime},
        index=bars.index,
    )
    return SyntheticSeries(bars, hidden)


def _meanrevert(spec: SyntheticMarket, rng: np.random.Generator) -> SyntheticSeries:
    """``log P_t = m_t + x_t``; ``m`` a random walk, ``x_t = phi x_{t-1} + sigma_dev e_t``."""
    n = spec.n_bars
    sigma_m, sigma_x = spec.param("sigma_level"), spec.param("sigma_dev")
    phi = math.exp(-1.0 / spec.param("tau_bars"))
    stationary = sigma_x / math.sqrt(1.0 - phi * phi)
    level_steps = sigma_m * rng.standard_normal(n)
    shocks = sigma_x * rng.standard_normal(n)
    shocks[0] = stationary * rng.standard_normal()  # x_0 from the stationary law
    deviation = _ar1(shocks, phi)
    level = np.cumsum(level_steps) - 0.5 * sigma_m**2 * np.arange(n)
    log_price = level + deviation
    returns = np.diff(log_price, prepend=0.0)
    bars = _continuous(returns, sigma_m**2 + sigma_x**2, rng, spec)
    hidden = pd.DataFrame(
        {"level": level, "deviation": deviation,
         "expected_return": (phi - 1.0) * deviation - 0.5 * sigma_m**2,
         "oracle_signal": -deviation},
        index=bars.index,
    )
    return SyntheticSeries(bars, hidden)


def _noise(spec: SyntheticMarket, rng: np.random.Generator) -> SyntheticSeries:
    """``r_t = -sigma^2 / 2 + sigma * e_t``: the price is a martingale (E[P_{t+1}] = P_t)."""
    n, sigma = spec.n_bars, spec.param("sigma")
    returns = -0.5 * sigma**2 + sigma * rng.standard_normal(n)
    bars = _continuous(returns, sigma**2, rng, spec)
    hidden = pd.DataFrame(
        {"expected_return": np.full(n, -0.5 * sigma**2), "oracle_signal": np.zeros(n)},
        index=bars.index,
    )
    return SyntheticSeries(bars, hidden)


def _irregular(spec: SyntheticMarket, rng: np.random.Generator) -> SyntheticSeries:
    """Hourly latent path ``L_{h+1} = L_h + a s_h - sigma^2/2 + sigma e_h`` with an OU signal
    ``s_{h+1} = phi s_h + sqrt(1 - phi^2) eta_h`` (``phi = exp(-1 h / tau)``, unit variance);
    bar ``i`` is grid hour ``g_i`` (open ``L_{g_i}``, close ``L_{g_i + 1}``) and the hours
    between bars are missing."""
    n, sigma, a = spec.n_bars, spec.param("sigma"), spec.param("a")
    phi = math.exp(-1.0 / spec.param("tau_hours"))
    next_hour = rng.random(n - 1) < spec.param("p_next_hour")
    outage = 1 + np.ceil(rng.exponential(spec.param("mean_outage_hours"), n - 1))
    steps = np.where(next_hour, 1, outage).astype(np.int64)  # hours between bar opens
    hours = np.concatenate([[0], np.cumsum(steps)])  # g_i
    total = int(hours[-1]) + 2
    innovations = math.sqrt(1.0 - phi * phi) * rng.standard_normal(total)
    innovations[0] = rng.standard_normal()  # s_0 from the stationary law
    signal = _ar1(innovations, phi)  # s_h, the drift rate of hour h
    noise = rng.standard_normal(total - 1)
    hourly = a * signal[:-1] - 0.5 * sigma**2 + sigma * noise
    bars = _sampled(hourly, hours, sigma**2, rng, spec)
    # At the close of bar i (hour g_i + 1) the signal in force is s_{g_i + 1}; over the k
    # hours to the next close its expected drift sums to a s (1 - phi^k) / (1 - phi).
    now = signal[hours + 1]
    ahead = np.append(steps, 1)
    expected = a * now * (1.0 - phi**ahead) / (1.0 - phi) - 0.5 * sigma**2 * ahead
    hidden = pd.DataFrame(
        {"signal": now, "hours_to_next": ahead.astype(np.float64),
         "expected_return": expected, "oracle_signal": now},
        index=bars.index,
    )
    return SyntheticSeries(bars, hidden)


def _cycle_transition(spec: SyntheticMarket, hours: float = 1.0) -> np.ndarray:
    """``M^k`` of ``synthetic-cycle`` over ``k = hours``: decay ``exp(-k / tau)`` times the
    rotation by ``2 pi k / period`` (float64 [2, 2])."""
    decay = math.exp(-hours / spec.param("tau_hours"))
    angle = 2.0 * math.pi * hours / spec.param("period_hours")
    cos, sin = math.cos(angle), math.sin(angle)
    return decay * np.array([[cos, -sin], [sin, cos]])


def _cycle_readout(spec: SyntheticMarket) -> np.ndarray:
    """Row vector ``r`` [2] with ``r . z = E[sum of z[0] over the next bar's hours | z]``.

    The hours to the next bar are ``K ~ Geometric(p)`` (``K >= 1``, independent of ``z``), so
    ``E[sum_{j<K} M^j] = sum_j P(K > j) M^j = (I - (1 - p) M)^{-1}``; ``r`` is its first row."""
    p_bar = 1.0 / spec.param("mean_step_hours")
    return np.linalg.inv(np.eye(2) - (1.0 - p_bar) * _cycle_transition(spec))[0]


def _cycle(spec: SyntheticMarket, rng: np.random.Generator) -> SyntheticSeries:
    """Hourly latent path ``L_{h+1} = L_h + a z_h[0] - sigma^2/2 + sigma e_h`` over a damped
    rotation ``z_{h+1} = M z_h + sqrt(1 - rho^2) eta_h`` in the plane (``M = rho R(2 pi /
    period)``, ``rho = exp(-1 h / tau)``, unit variance per component); bar ``i`` is grid hour
    ``g_i`` (open ``L_{g_i}``, close ``L_{g_i + 1}``) and the hours between bar opens are
    ``Geometric(1 / mean_step_hours)`` (1, 2, 3, ...)."""
    n, sigma, a = spec.n_bars, spec.param("sigma"), spec.param("a")
    p_bar = 1.0 / spec.param("mean_step_hours")
    steps = rng.geometric(p_bar, n - 1).astype(np.int64)  # hours between bar opens, >= 1
    hours = np.concatenate([[0], np.cumsum(steps)])  # g_i
    total = int(hours[-1]) + 2
    rho = math.exp(-1.0 / spec.param("tau_hours"))
    shocks = math.sqrt(1.0 - rho * rho) * rng.standard_normal((total, 2))
    shocks[0] = rng.standard_normal(2)  # z_0 from the stationary law
    state = _var1(shocks, _cycle_transition(spec))  # z_h [total, 2]
    noise = rng.standard_normal(total - 1)
    hourly = a * state[:-1, 0] - 0.5 * sigma**2 + sigma * noise
    bars = _sampled(hourly, hours, sigma**2, rng, spec)
    now = state[hours + 1]  # z in force at each bar's close [n, 2]
    drift_ahead = now @ _cycle_readout(spec)  # E[sum of z[0] to the next close], signal units
    hidden = pd.DataFrame(
        {"signal": now[:, 0], "quadrature": now[:, 1],
         "hours_to_next": np.append(steps, 1).astype(np.float64),
         "expected_return": a * drift_ahead - 0.5 * sigma**2 / p_bar,
         "oracle_signal": drift_ahead},
        index=bars.index,
    )
    return SyntheticSeries(bars, hidden)


def _var1(shocks: np.ndarray, transition: np.ndarray) -> np.ndarray:
    """``y_0 = shocks_0``, ``y_t = transition @ y_{t-1} + shocks_t`` (float64 [n, 2]).

    A loop over Python floats for the same reason as :func:`_ar1`."""
    (m00, m01), (m10, m11) = transition.tolist()
    out = [(0.0, 0.0)] * len(shocks)
    y0 = y1 = 0.0
    for t, (e0, e1) in enumerate(shocks.tolist()):
        y0, y1 = m00 * y0 + m01 * y1 + e0, m10 * y0 + m11 * y1 + e1
        out[t] = (y0, y1)
    return np.asarray(out, dtype=np.float64).reshape(len(shocks), 2)


def _ar1(shocks: np.ndarray, phi: float) -> np.ndarray:
    """``y_0 = shocks_0``, ``y_t = phi y_{t-1} + shocks_t`` (float64 [n]).

    A plain loop over Python floats (~10 ms for 50k steps): exact and the same on every
    machine, where a vectorised form would sum powers of ``phi`` in a different order."""
    out = [0.0] * len(shocks)
    state = 0.0
    for t, shock in enumerate(shocks.tolist()):
        state = phi * state + shock
        out[t] = state
    return np.asarray(out, dtype=np.float64)


_GENERATORS: dict[str, Callable[[SyntheticMarket, np.random.Generator], SyntheticSeries]] = {
    "synthetic-regime": _regime,
    "synthetic-meanrevert": _meanrevert,
    "synthetic-noise": _noise,
    "synthetic-irregular": _irregular,
    "synthetic-cycle": _cycle,
}


@functools.lru_cache(maxsize=len(MARKETS))
def _generated(name: str) -> SyntheticSeries:
    spec = market(name)
    series = _GENERATORS[name](spec, np.random.default_rng(spec.seed))
    series.hidden.index.name = "timestamp"
    return series


# --------------------------------------------------------------------------------- public


def generate(name: str) -> SyntheticSeries:
    """Generate the market ``name`` from its seed: bars (a bars frame, not yet validated; load
    it through :func:`tradezoo.data.load_dataset`) and its hidden state. Fresh copies."""
    series = _generated(name)
    bars, hidden = series.bars.copy(), series.hidden.copy()
    bars.attrs = dict(series.bars.attrs)
    return SyntheticSeries(bars, hidden)


def hidden_state(name: str) -> pd.DataFrame:
    """The hidden state of market ``name`` on its bars' index (float64 columns).

    Columns: ``expected_return`` (expected log return from this bar's close to the next
    bar's close given the hidden state) and ``oracle_signal`` (what the oracle trades on), plus
    per market: regime ``regime`` (s_t = +-1, the sign of bar t's drift) and ``drift``
    (``mu s_t``); meanrevert ``level`` (m_t) and ``deviation`` (x_t, log units); irregular
    ``signal`` (the OU drift signal in force at the bar's close) and ``hours_to_next`` (hours
    from this bar's open to the next one's; 1 for the last bar); cycle ``signal`` and
    ``quadrature`` (the two components of the cycle's state at the bar's close; the drift is
    ``a * signal``) and ``hours_to_next``.
    """
    return _generated(name).hidden.copy()


def oracle_positions(name: str) -> pd.Series:
    """The oracle's target exposure decided at each bar's close (``simulate``'s positions).

    ``sign(oracle_signal)`` where ``|oracle_signal| > band``, else the previous target (0
    before the first). On ``synthetic-noise`` the signal is 0 everywhere: the oracle stays flat.

    Returns:
        float64 Series named ``target`` on the bars' index, values in {-1, 0, 1}.
    """
    return _hysteresis(_generated(name).hidden["oracle_signal"], market(name).band)


def _hysteresis(signal: pd.Series, band: float) -> pd.Series:
    """``sign(signal)`` where ``|signal| > band``, else the previous value (0 before any)."""
    decided = np.sign(signal).where(signal.abs() > band)
    return decided.ffill().fillna(0.0).astype(np.float64).rename("target")


IRREGULAR = "synthetic-irregular"
CYCLE = "synthetic-cycle"
FILTER_BANDS: dict[str, float] = {IRREGULAR: 0.25, CYCLE: 0.0}
"""Hysteresis band of :func:`filter_positions` per market, in units of its ``oracle_signal``."""
BLIND_STEP_HOURS: dict[str, int] = {IRREGULAR: 1, CYCLE: 3}
"""Hours between bars that :func:`filtered_signal` assumes with ``use_dt=False``: the most
common step of ``synthetic-irregular`` (80 % of its steps are 1 h) and the mean step of
``synthetic-cycle`` (whose steps are geometric, mean 3 h; of 1, 2, 3 and 4 h, 3 trades best)."""


def _filter_model(name: str) -> tuple[Callable[[float], np.ndarray], np.ndarray]:
    """The state-space model :func:`filtered_signal` runs on market ``name``: the state's
    transition over ``k`` hours (``[d, d]``; the state has unit stationary covariance and its
    first component drives the drift ``a z[0]``) and the readout ``[d]`` that maps the state at
    a bar's close to the market's ``oracle_signal``."""
    spec = market(name)
    if name == IRREGULAR:
        phi = math.exp(-1.0 / spec.param("tau_hours"))
        return (lambda k: np.array([[phi**k]])), np.ones(1)
    if name == CYCLE:
        return (lambda k: _cycle_transition(spec, k)), _cycle_readout(spec)
    raise KeyError(f"no filter for market {name!r}; there is one for {sorted(FILTER_BANDS)}")


def filtered_signal(name: str, *, use_dt: bool = True) -> pd.Series:
    """Kalman-filter estimate of the ``oracle_signal`` of an irregular market from its bars.

    The filter knows the generator's parameters and observes each bar's open-to-close log
    return ``y_i + sigma^2 / 2 = a z_{g_i}[0] + sigma e_i`` (gap returns are not used). Between
    bars its state moves as the hidden state does over ``k`` hours (``synthetic-irregular``:
    decays by ``phi^k``; ``synthetic-cycle``: decays and turns by ``M^k``); with
    ``use_dt=False`` it is told that every bar follows the previous one by
    :data:`BLIND_STEP_HOURS` hours, the best a model that counts bars instead of hours can
    assume. The gap between the two is the value of knowing ``dt`` on the market.

    Args:
        name: ``synthetic-irregular`` or ``synthetic-cycle``.
        use_dt: use each bar's true elapsed time.

    Returns:
        float64 Series on the bars' index: the estimated ``oracle_signal`` at each bar's close.
    """
    spec = market(name)
    transition, readout = _filter_model(name)
    bars = _generated(name).bars
    sigma, a = spec.param("sigma"), spec.param("a")
    observed = np.log(bars["close"].to_numpy() / bars["open"].to_numpy()) + 0.5 * sigma**2
    # k_i: hours since the previous bar's open (0 for the first bar, whose prior is stationary)
    hours = bars.index.to_series().diff().dt.total_seconds().fillna(0.0).to_numpy() / 3600.0
    if not use_dt:
        hours = np.where(hours > 0, float(BLIND_STEP_HOURS[name]), 0.0)
    size = len(readout)
    identity = np.eye(size)
    to_close = readout @ transition(1.0)  # the signal in force one hour after the open
    mean, cov = np.zeros(size), identity.copy()  # the stationary law of the state
    estimate = np.empty(len(observed))
    for i, (y, k) in enumerate(zip(observed.tolist(), hours.tolist(), strict=True)):
        step = transition(k)
        mean = step @ mean  # predict to this bar's open
        cov = step @ cov @ step.T + (identity - step @ step.T)
        gain = cov[:, 0] * a / (a * a * cov[0, 0] + sigma * sigma)
        mean = mean + gain * (y - a * mean[0])
        cov = cov - np.outer(gain, a * cov[0])
        estimate[i] = to_close @ mean
    return pd.Series(estimate, index=bars.index, name="filtered_signal", dtype=np.float64)


def filter_positions(name: str, *, use_dt: bool = True) -> pd.Series:
    """Targets of the filter policy on market ``name``: :func:`filtered_signal` through the
    oracle's hysteresis rule with band :data:`FILTER_BANDS` ``[name]``."""
    return _hysteresis(filtered_signal(name, use_dt=use_dt), FILTER_BANDS[name])
