"""The cost model and execution rates of each dataset of a :class:`~tradezoo.envs.market.Market`.

A dataset's default cost model follows its bars' ``attrs["source"]``
(:meth:`~tradezoo.backtest.costs.CostModel.for_source`); the rates are what
:func:`~tradezoo.backtest.execution.execute_step` reads, computed once per dataset with its
periods per year (borrow) and the env's fill rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from tradezoo.backtest.costs import CostModel
from tradezoo.backtest.execution import ExecutionRates, execution_rates
from tradezoo.envs.market import Market

__all__ = ["default_costs", "resolve_costs"]


def default_costs(bars: pd.DataFrame, name: str) -> CostModel:
    """The cost model for a dataset's ``attrs["source"]``: :meth:`CostModel.bybit_linear` for
    ``bybit*``, :meth:`CostModel.equities` for ``yahoo*``; anything else must be given."""
    return CostModel.for_source(bars.attrs.get("source"), what=f"dataset {name!r}: source")


def resolve_costs(
    market: Market, costs: CostModel | Sequence[CostModel | None] | None, fill: str
) -> tuple[tuple[CostModel, ...], tuple[ExecutionRates, ...]]:
    """One :class:`CostModel` and :class:`ExecutionRates` per dataset of ``market``.

    Args:
        costs: ``None`` (default by source), one model for every dataset, or one per dataset
            (``None`` entries take the default).
        fill: ``"next_open"`` or ``"close"``.
    """
    n = len(market.datasets)
    if costs is None or isinstance(costs, CostModel):
        given: list[CostModel | None] = [costs] * n
    elif isinstance(costs, Sequence) and not isinstance(costs, str):
        given = list(costs)
        if len(given) != n:
            raise ValueError(f"costs: got {len(given)} cost model(s) for {n} dataset(s)")
    else:
        raise TypeError(
            f"costs must be a CostModel, a list of them, or None, got {type(costs).__name__}"
        )
    models: list[CostModel] = []
    for dataset, model in zip(market.datasets, given, strict=True):
        if model is None:
            model = default_costs(dataset.bars, dataset.name)
        elif not isinstance(model, CostModel):
            raise TypeError(
                f"costs for dataset {dataset.name!r} must be a CostModel, got "
                f"{type(model).__name__}"
            )
        models.append(model)
    rates = tuple(
        execution_rates(model, fill=fill, periods_per_year=d.periods_per_year)  # type: ignore[arg-type]
        for model, d in zip(models, market.datasets, strict=True)
    )
    return tuple(models), rates

