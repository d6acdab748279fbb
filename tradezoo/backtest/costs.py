"""``CostModel``: every cost of trading a bar series, in one validated, typed place.

Units: fees, spreads and fixed slippage in basis points (1 bp = 0.01 % = 1e-4) of the traded
notional; borrow as an annual fraction of the short notional; funding as the bars'
``funding_rate`` (a fraction of the position notional per funding stamp).

Slippage models (the price moves against the trader by this fraction of the reference price):

- ``"fixed"``: ``slippage_bps``.
- ``"volatility"``: ``slippage_k`` times the decision bar's range ``(high - low) / close``
  (known when the order is placed), plus ``slippage_bps``.
- ``"volume"``: ``slippage_k`` times the square root of the participation rate, traded
  notional over the decision bar's notional volume ``volume * close`` (the square-root impact
  law), plus ``slippage_bps``. A bar with zero volume gives the ``max_participation`` cap's
  slippage.

Leverage and liquidation (the margin rules of the venue, per instrument):

- ``max_leverage``: the largest exposure (position notional over equity) a strategy may ask
  for. The envs, ``simulate`` and the trainers refuse a larger target exposure
  (:meth:`CostModel.check_exposure`); a held position's exposure still drifts with the price,
  and liquidation bounds it from there.
- ``maintenance_margin``: the equity a position must keep, as a fraction of its notional.
  When the bar's adverse extreme reaches the price at which equity falls to
  ``maintenance_margin * |units| * price``, :func:`~tradezoo.backtest.execution.execute_step`
  closes the position there, paying half spread, slippage and the taker fee. ``0`` turns
  liquidation off (equity can then go negative and the callers' bankruptcy rules apply).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from tradezoo.data.checks import FieldChecks

SlippageModel = Literal["fixed", "volatility", "volume"]
BPS = 1e-4
"""One basis point as a fraction."""


@dataclass(frozen=True)
class CostModel:
    """Trading costs. All parameters are non-negative; construction rejects anything else.

    Attributes:
        taker_fee_bps: fee on the fill notional of a market (taker) order, bps.
        maker_fee_bps: fee of a resting (maker) order, bps; used when ``order_type="maker"``.
        half_spread_bps: half the bid-ask spread, paid on every traded unit, bps.
        slippage: slippage model, see the module docstring.
        slippage_bps: fixed slippage, bps (all models add it).
        slippage_k: coefficient of the ``"volatility"`` or ``"volume"`` model (a fraction).
        max_participation: cap on the participation rate in the ``"volume"`` model.
        funding: charge the bars' ``funding_rate`` (perpetuals). Longs pay positive rates on
            their notional at the funding stamp; shorts receive them.
        borrow_rate_annual: annual borrow fee on the short notional (spot shorts), charged per
            bar as ``borrow_rate_annual / periods_per_year``.
        order_type: ``"taker"`` (market orders, default) or ``"maker"``.
        max_leverage: largest target exposure (notional / equity) allowed, > 0. Defaults
            (also for dicts saved before the field existed): 100, Bybit's cap for BTCUSDT.
        maintenance_margin: equity a position must keep, a fraction of its notional in
            [0, 1); a position is liquidated when it falls to it (``0``: never). Default
            0.005 (Bybit's first risk-limit tier for BTCUSDT). ``maintenance_margin *
            max_leverage`` must be at most 1: a position at ``max_leverage`` then starts at or
            above its maintenance margin.
    """

    taker_fee_bps: float = 5.5
    maker_fee_bps: float = 2.0
    half_spread_bps: float = 0.0
    slippage: SlippageModel = "fixed"
    slippage_bps: float = 0.0
    slippage_k: float = 0.0
    max_participation: float = 1.0
    funding: bool = True
    borrow_rate_annual: float = 0.0
    order_type: Literal["taker", "maker"] = "taker"
    max_leverage: float = 100.0
    maintenance_margin: float = 0.005

    def __post_init__(self) -> None:
        check = FieldChecks(self)
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            check.require(value == value and 0 <= value < float("inf"),  # not NaN, < 0, inf
                          f"{item.name} must be a finite number >= 0, got {value!r}")
        check.choice("slippage", ("fixed", "volatility", "volume"),
                     rule="'fixed', 'volatility' or 'volume'")
        check.choice("order_type", ("taker", "maker"), rule="'taker' or 'maker'")
        check.require(self.max_participation > 0,
                      f"max_participation must be > 0, got {self.max_participation!r}")
        check.require(self.taker_fee_bps < 1e4 and self.half_spread_bps < 1e4,
                      "taker_fee_bps and half_spread_bps must be below 10,000 bps (100 %), got "
                      f"{self.taker_fee_bps!r} and {self.half_spread_bps!r}")
        check.number("max_leverage", 0.0, open_low=True, rule="a finite number > 0")
        check.number("maintenance_margin", 0.0, 1.0, open_high=True,
                     rule="a fraction of the notional in [0, 1)")
        check.require(
            self.maintenance_margin * self.max_leverage <= 1,
            f"maintenance_margin * max_leverage must be at most 1, got "
            f"{self.maintenance_margin!r} * {self.max_leverage!r} = "
            f"{self.maintenance_margin * self.max_leverage:g}: a position at max_leverage "
            "would open below its maintenance margin and be liquidated at once")

    @classmethod
    def bybit_linear(cls, **overrides: object) -> CostModel:
        """Bybit USDT perpetuals, non-VIP: taker 5.5 bps, maker 2.0 bps, funding on, leverage
        up to 100, maintenance margin 0.5 % of the notional (BTCUSDT's first risk-limit tier;
        other symbols and larger positions have lower caps and higher margins: override).

        Half spread 0.5 bps and fixed slippage 1 bp are conservative for BTCUSDT (its quoted
        spread is one 0.1 USDT tick, well under 0.1 bp) and leave room for less liquid symbols.
        """
        base = {
            "taker_fee_bps": 5.5,
            "maker_fee_bps": 2.0,
            "half_spread_bps": 0.5,
            "slippage": "fixed",
            "slippage_bps": 1.0,
            "funding": True,
            "borrow_rate_annual": 0.0,
            "max_leverage": 100.0,
            "maintenance_margin": 0.005,
        }
        return cls(**{**base, **overrides})  # type: ignore[arg-type]

    @classmethod
    def equities(cls, **overrides: object) -> CostModel:
        """Liquid US equities and ETFs: 1 bp commission, 0.5 bp half spread, 1 bp slippage,
        no funding, 2 % annual borrow on shorts, leverage up to 4 (a pattern day trader's
        intraday buying power) and a 25 % maintenance margin (FINRA's minimum). A position at
        exactly 4x starts at its maintenance margin, so any adverse move liquidates it; 2
        (Reg T's overnight limit) is the usual ceiling for positions held over bars."""
        base = {
            "taker_fee_bps": 1.0,
            "maker_fee_bps": 1.0,
            "half_spread_bps": 0.5,
            "slippage": "fixed",
            "slippage_bps": 1.0,
            "funding": False,
            "borrow_rate_annual": 0.02,
            "max_leverage": 4.0,
            "maintenance_margin": 0.25,
        }
        return cls(**{**base, **overrides})  # type: ignore[arg-type]

    @classmethod
    def zero(cls, **overrides: object) -> CostModel:
        """No costs at all (for tests and for measuring the cost drag): no fees, spread,
        slippage, funding or borrow, and no liquidation (``maintenance_margin=0``; equity can
        go negative and the bankruptcy rules apply). Leverage is capped at the default 100."""
        base = {
            "taker_fee_bps": 0.0,
            "maker_fee_bps": 0.0,
            "funding": False,
            "max_leverage": 100.0,
            "maintenance_margin": 0.0,
        }
        return cls(**{**base, **overrides})  # type: ignore[arg-type]

    @classmethod
    def for_source(cls, source: str | None, *, what: str) -> CostModel:
        """The default cost model for a bars source: :meth:`bybit_linear` for ``bybit*`` and
        for ``synthetic*`` (the calibration markets of :mod:`tradezoo.data.synthetic` are
        priced as a Bybit USDT perpetual; they have no funding column, so no funding is
        charged), :meth:`equities` for ``yahoo*``.

        Args:
            source: ``bars.attrs["source"]``.
            what: names the input in the error (e.g. ``"dataset 'x': source"``).

        Raises:
            ValueError: any other source (a user's CSV could be crypto or stocks, so guessing
                would silently charge the wrong costs); the caller must pass ``costs=``.
        """
        text = str(source or "")
        if text.startswith("bybit") or text.startswith("synthetic"):
            return cls.bybit_linear()
        if text.startswith("yahoo"):
            return cls.equities()
        raise ValueError(
            f"{what}: no default cost model for {text or None!r} (defaults exist for 'bybit*', "
            "'synthetic*' and 'yahoo*' sources); pass costs=CostModel(...), e.g. "
            "CostModel.bybit_linear(), CostModel.equities() or CostModel.zero()"
        )

    @property
    def fee_rate(self) -> float:
        """Fee as a fraction of the fill notional for this model's order type."""
        return (self.taker_fee_bps if self.order_type == "taker" else self.maker_fee_bps) * BPS

    @property
    def one_way_cost_bps(self) -> float:
        """Fee + half spread + fixed slippage of one side, bps (what labels net out)."""
        return self.fee_rate / BPS + self.half_spread_bps + self.slippage_bps

    def check_exposure(self, exposure: float, *, what: str) -> None:
        """Refuse a target exposure above :attr:`max_leverage`.

        Args:
            exposure: the largest absolute target exposure asked for (notional / equity).
            what: names the input in the error (e.g. ``"TradingEnv max_leverage"``).

        Raises:
            ValueError: ``exposure > max_leverage``, naming both values.
        """
        if not abs(exposure) <= self.max_leverage:  # NaN fails too
            raise ValueError(
                f"{what} = {exposure!r} exceeds the cost model's max_leverage = "
                f"{self.max_leverage!r}: the venue does not lend that much. Lower it, or pass "
                f"a cost model that allows it (e.g. costs=CostModel.bybit_linear("
                f"max_leverage=...))"
            )

    def to_dict(self) -> dict[str, object]:
        """Every field by name (JSON-safe); :meth:`from_dict` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CostModel:
        """A model from :meth:`to_dict`'s mapping, validated as in the constructor.

        Fields missing from ``data`` take the class defaults: a dict saved before
        ``max_leverage`` and ``maintenance_margin`` existed loads with 100 and 0.005.

        Raises:
            TypeError: ``data`` is not a mapping.
            ValueError: an unknown key (the error lists the valid ones) or a bad value.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"CostModel.from_dict: expected a mapping of CostModel fields, got "
                            f"{type(data).__name__}")
        names = [item.name for item in fields(cls)]
        unknown = sorted(str(key) for key in data if key not in names)
        if unknown:
            raise ValueError(f"CostModel.from_dict: unknown field(s) {unknown}; valid fields: "
                             f"{names}")
        return cls(**dict(data))
