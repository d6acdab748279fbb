"""The backtest figure: price with positions, equity against buy-and-hold, drawdown.

matplotlib is imported inside the functions, never at module import, so importing
:mod:`tradezoo.backtest` stays cheap. Figures are built with :class:`matplotlib.figure.Figure`
and an Agg canvas directly, not through ``pyplot``: no GUI backend is touched, no global figure
registry grows, and the envs' ``render_mode="rgb_array"`` works headless and in subprocesses.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_FIGSIZE: tuple[float, float] = (6.4, 4.8)
"""Inches; at :data:`DEFAULT_DPI` this is a 640 x 480 image (small, so rendering is quick)."""
DEFAULT_DPI = 100

_LONG = "#2ca02c"
_SHORT = "#d62728"
_STRATEGY = "#1f77b4"
_BENCHMARK = "#7f7f7f"


def _as_float_array(name: str, values: Any, length: int | None) -> np.ndarray:
    array = np.asarray(values, dtype="float64").reshape(-1)
    if length is not None and len(array) != length:
        raise ValueError(
            f"figure_backtest: {name} has length {len(array)}, expected {length} "
            "(one value per bar of index)"
        )
    return array


def figure_backtest(
    index: Sequence[Any] | np.ndarray | Any,
    close: Sequence[float] | np.ndarray | Any,
    positions: Sequence[float] | np.ndarray | Any,
    equity: Sequence[float] | np.ndarray | Any,
    benchmark_equity: Sequence[float] | np.ndarray | Any | None = None,
    title: str | None = None,
    *,
    figsize: tuple[float, float] = DEFAULT_FIGSIZE,
    dpi: int = DEFAULT_DPI,
) -> Figure:
    """Three stacked panels sharing the time axis.

    1. Close price; bars held long shaded green and short shaded red; markers where a long
       (``^``) or short (``v``) position is entered.
    2. Equity and, if given, the buy-and-hold benchmark, both rebased to 1 at the first bar.
    3. Drawdown from the running peak (``equity / cummax(equity) - 1``, a negative fraction;
       the starting equity counts as a peak), strategy filled, benchmark dashed.

    Args:
        index: bar timestamps (or any monotone x values), length n.
        close: close prices, length n.
        positions: exposure held over each bar (signed fraction of equity), length n.
        equity: account equity at each close, length n (any positive scale).
        benchmark_equity: buy-and-hold equity, length n, or ``None``.
        title: figure title.
        figsize, dpi: figure size in inches and resolution (default 640 x 480 pixels).

    Returns:
        A :class:`matplotlib.figure.Figure` with an Agg canvas attached (no pyplot).

    Raises:
        ValueError: inputs of different lengths, or fewer than 2 bars.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if getattr(index, "tz", None) is not None and hasattr(index, "tz_convert"):
        index = index.tz_convert(None)  # UTC wall times as datetime64 (matplotlib's fast path)
    x = np.asarray(index).reshape(-1)
    n = len(x)
    if n < 2:
        raise ValueError(f"figure_backtest: need at least 2 bars to plot, got {n}")
    price = _as_float_array("close", close, n)
    held = np.nan_to_num(_as_float_array("positions", positions, n), nan=0.0)
    curve = _as_float_array("equity", equity, n)
    bench = None if benchmark_equity is None else _as_float_array(
        "benchmark_equity", benchmark_equity, n
    )

    figure = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(figure)
    price_ax, equity_ax, drawdown_ax = figure.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [2.0, 1.5, 1.0]}
    )

    # Panel 1: price, shading over the full panel height where a position is held.
    price_ax.plot(x, price, color="black", linewidth=0.8)
    shade = price_ax.get_xaxis_transform()  # x in data units, y in axes fraction [0, 1]
    price_ax.fill_between(x, 0, 1, where=held > 0, step="post", color=_LONG, alpha=0.15,
                          linewidth=0, transform=shade, label="long")
    price_ax.fill_between(x, 0, 1, where=held < 0, step="post", color=_SHORT, alpha=0.15,
                          linewidth=0, transform=shade, label="short")
    side = np.sign(held)
    entered = np.flatnonzero(side[1:] != side[:-1]) + 1
    if side[0] != 0:
        entered = np.concatenate([[0], entered])
    longs = entered[side[entered] > 0]
    shorts = entered[side[entered] < 0]
    price_ax.scatter(x[longs], price[longs], marker="^", color=_LONG, s=18, zorder=3)
    price_ax.scatter(x[shorts], price[shorts], marker="v", color=_SHORT, s=18, zorder=3)
    price_ax.set_ylabel("price")
    price_ax.legend(loc="upper left", fontsize="x-small", frameon=False, ncols=2)

    # Panel 2: equity against buy-and-hold, both rebased to 1.
    def rebased(values: np.ndarray) -> np.ndarray:
        return values / values[0] if values[0] != 0 else values

    equity_ax.plot(x, rebased(curve), color=_STRATEGY, linewidth=1.0, label="strategy")
    if bench is not None:
        equity_ax.plot(x, rebased(bench), color=_BENCHMARK, linewidth=0.9, label="buy & hold")
    equity_ax.set_ylabel("equity")
    equity_ax.legend(loc="upper left", fontsize="x-small", frameon=False, ncols=2)

    # Panel 3: drawdown.
    def drawdown(values: np.ndarray) -> np.ndarray:
        peak = np.maximum.accumulate(values)
        return np.where(peak > 0, values / np.where(peak > 0, peak, 1.0) - 1.0, 0.0)

    strategy_drawdown = drawdown(curve)
    drawdown_ax.fill_between(x, strategy_drawdown, 0.0, color=_STRATEGY, alpha=0.35,
                             linewidth=0)
    if bench is not None:
        drawdown_ax.plot(x, drawdown(bench), color=_BENCHMARK, linewidth=0.8, linestyle="--")
    drawdown_ax.set_ylabel("drawdown")

    # Few ticks and fixed margins: tick creation and layout passes dominate the draw time,
    # and the envs draw this figure for every rgb_array frame.
    for axis in (price_ax, equity_ax, drawdown_ax):
        axis.yaxis.set_major_locator(MaxNLocator(nbins=3))
        axis.tick_params(labelsize="x-small")
        axis.grid(True, linewidth=0.3, alpha=0.5)
        axis.yaxis.label.set_size("small")
    if np.issubdtype(x.dtype, np.datetime64):
        locator = AutoDateLocator(minticks=2, maxticks=5)
        drawdown_ax.xaxis.set_major_locator(locator)
        drawdown_ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    else:
        drawdown_ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    figure.subplots_adjust(left=0.11, right=0.98, bottom=0.08, top=0.93 if title else 0.97,
                           hspace=0.08)
    if title:
        figure.suptitle(title, fontsize="small")
    return figure


def figure_to_rgb(figure: Figure, dpi: float | None = None) -> np.ndarray:
    """Render ``figure`` with Agg and return its pixels, then close it.

    Args:
        figure: a matplotlib figure (from :func:`figure_backtest` or pyplot).
        dpi: resolution to render at; default the figure's own (640 x 480 for
            :func:`figure_backtest`'s defaults).

    Returns:
        ``np.ndarray`` of dtype uint8 and shape ``[H, W, 3]`` (RGB, alpha dropped), a fresh
        C-contiguous array owned by the caller.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if dpi is not None:
        figure.set_dpi(dpi)
    canvas = figure.canvas
    if not isinstance(canvas, FigureCanvasAgg):
        canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgb = np.array(np.asarray(canvas.buffer_rgba())[..., :3], dtype=np.uint8, order="C")
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:  # only pyplot keeps figures alive; ours are not registered there
        pyplot.close(figure)
    return rgb
