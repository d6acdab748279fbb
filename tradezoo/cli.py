"""The ``tradezoo`` command.

    tradezoo data list                               bundled datasets and cached files
    tradezoo data info bybit-btcusdt-1h              validation report + feature summary
    tradezoo data info path/to/bars.csv
    tradezoo data fetch bybit BTCUSDT --interval 1h --start 2024-01-01 --end 2024-02-01
    tradezoo data fetch yahoo SPY --interval 1d --start 2020-01-01 --end 2020-12-31

Every subcommand has ``--help``. Heavy imports happen inside the handlers so ``--help`` is
instant and nothing here imports torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tradezoo import __version__


def _console():  # rich is imported lazily: the parser alone must be cheap
    from rich.console import Console

    return Console()


def _cmd_data_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from tradezoo.data.cache import BarCache
    from tradezoo.data.datasets import list_datasets

    console = _console()
    table = Table(title="Bundled datasets", title_justify="left")
    for column in ("name", "symbol", "interval", "source", "description"):
        table.add_column(column)
    for info in list_datasets():
        table.add_row(info.name, info.symbol, info.interval, info.source, info.description)
    console.print(table)
    cache = BarCache()
    entries = cache.entries()
    if not entries:
        console.print(f"Cache {cache.root}: empty")
        return 0
    cached = Table(title=f"Cached downloads in {cache.root}", title_justify="left")
    for column in ("source", "symbol", "interval", "file", "MB"):
        cached.add_column(column)
    for key, path in entries:
        size = f"{path.stat().st_size / 1e6:.2f}"
        cached.add_row(key.source, key.symbol, key.interval, path.name, size)
    console.print(cached)
    return 0


def _cmd_data_info(args: argparse.Namespace) -> int:
    from rich.table import Table

    from tradezoo.data.datasets import load_bars
    from tradezoo.data.features import compute_features, describe_features

    console = _console()
    bars, report = load_bars(args.source, repair=args.repair)
    console.print(report)
    attrs = bars.attrs
    console.print(
        f"[bold]{attrs.get('symbol')}[/bold] {attrs.get('interval')} from "
        f"{attrs.get('source')}: {len(bars)} bars, {bars.index[0]} to {bars.index[-1]}; "
        f"columns {list(bars.columns)}"
    )
    if "funding_rate" in bars:
        stamps = int((bars["funding_rate"] != 0).sum())
        console.print(
            f"funding: {stamps} non-zero funding stamps, history "
            f"{attrs.get('funding_start')} to {attrs.get('funding_end')}"
        )
    if attrs.get("attribution"):
        console.print(f"data: {attrs['attribution']}")
    features = compute_features(bars)
    summary = describe_features(features)
    table = Table(
        title=f"Features: {features.shape[1]} columns x {len(features)} rows "
        f"({features.attrs.get('warmup_rows', 0)} warm-up rows dropped)",
        title_justify="left",
    )
    table.add_column("feature")
    for column in summary.columns:
        table.add_column(str(column), justify="right")
    for name, row in summary.iterrows():
        table.add_row(str(name), *(f"{value:.4g}" for value in row.to_numpy()))
    console.print(table)
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    console = _console()
    cache = not args.no_cache
    if args.source == "bybit":
        from tradezoo.data.bybit import BybitClient, fetch_bybit

        client = BybitClient(base_url=args.base_url) if args.base_url else None
        frame = fetch_bybit(
            args.symbol,
            args.interval,
            args.start,
            args.end,
            category=args.category,
            client=client,
            cache=cache,
            progress=not args.quiet,
        )
    else:
        from tradezoo.data.yahoo import fetch_yahoo

        frame = fetch_yahoo(
            args.symbol,
            args.start,
            args.end,
            interval=args.interval,
            auto_adjust=not args.no_adjust,
            cache=cache,
        )
    fetch = frame.attrs.get("fetch_summary")
    if len(frame):
        console.print(
            f"{args.symbol} {frame.attrs.get('interval')}: {len(frame)} bars from "
            f"{frame.index[0]} to {frame.index[-1]}"
        )
    else:
        console.print(f"{args.symbol}: no bars in the range")
    if fetch:
        console.print(fetch)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tradezoo",
        description="Trading environments, sequence models and honest backtests on real bars.",
    )
    parser.add_argument("--version", action="version", version=f"tradezoo {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="bundled datasets, files, downloads and the cache")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    listing = data_commands.add_parser("list", help="list bundled datasets and cached downloads")
    listing.set_defaults(handler=_cmd_data_list)

    info = data_commands.add_parser(
        "info", help="validation report and feature summary of a dataset or file"
    )
    info.add_argument("source", metavar="NAME|PATH", help="bundled dataset name or CSV/Parquet")
    info.add_argument(
        "--repair",
        choices=("safe", "none"),
        default="safe",
        help="validation policy: repair what is safe (default) or fail on any finding",
    )
    info.set_defaults(handler=_cmd_data_info)

    fetch = data_commands.add_parser(
        "fetch", help="download bars into the cache ($TRADEZOO_DATA_DIR, ~/.cache/tradezoo)"
    )
    sources = fetch.add_subparsers(dest="source", required=True, metavar="SOURCE")
    bybit = sources.add_parser("bybit", help="Bybit v5 klines (+ funding for perpetuals)")
    bybit.add_argument("symbol", help="e.g. BTCUSDT")
    bybit.add_argument("--interval", default="1h", help="1m..12h, 1d, 1w, 1M or Bybit codes")
    bybit.add_argument("--category", default="linear", choices=("linear", "inverse", "spot"))
    bybit.add_argument("--base-url", default=None, help="API base URL (default api.bybit.com)")
    yahoo = sources.add_parser("yahoo", help="Yahoo Finance bars through yfinance")
    yahoo.add_argument("symbol", help="ticker, e.g. SPY")
    yahoo.add_argument("--interval", default="1d", help="1m..1h, 1d, 1w, 1M")
    yahoo.add_argument(
        "--no-adjust", action="store_true", help="keep raw prices (default: dividend-adjusted)"
    )
    for sub, zone in ((bybit, "UTC"), (yahoo, "exchange-local, e.g. New York")):
        sub.add_argument("--start", required=True, help=f"first bar open time ({zone}), ISO")
        sub.add_argument("--end", required=True, help=f"last bar open time ({zone}), ISO")
        sub.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
        sub.set_defaults(handler=_cmd_data_fetch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tradezoo`` console script."""
    args = build_parser().parse_args(argv)
    from tradezoo.data.errors import DataError, SourceError

    try:
        return int(args.handler(args))
    except (DataError, SourceError, FileNotFoundError, ValueError) as exc:
        print(f"tradezoo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
