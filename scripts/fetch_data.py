"""Download bars from Bybit or Yahoo Finance into the cache and a CSV or Parquet file.

    python scripts/fetch_data.py bybit BTCUSDT --interval 1h --start 2024-01-01 --end 2024-03-01
    python scripts/fetch_data.py yahoo SPY --interval 1d --start 2020-01-01 --end 2020-12-31
    python scripts/fetch_data.py bybit ETHUSDT --quick        # one week of hourly bars
    BYBIT_BASE_URL=https://api-testnet.bybit.com python scripts/fetch_data.py bybit BTCUSDT

Bybit perpetuals come with their funding rates; every download is validated and cached
(Parquet under $TRADEZOO_DATA_DIR, default ~/.cache/tradezoo), so a second run only fetches
what is missing. Train on the file with, e.g.:

    tradezoo run --data data/bybit_BTCUSDT_1h.csv --costs bybit-linear
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tradezoo.data.bybit import BybitClient, fetch_bybit
from tradezoo.data.yahoo import fetch_yahoo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", choices=("bybit", "yahoo"))
    parser.add_argument("symbol", help="e.g. BTCUSDT (Bybit) or SPY (Yahoo)")
    parser.add_argument("--interval", default=None, help="default 1h (Bybit), 1d (Yahoo)")
    parser.add_argument("--start", default="2024-01-01", help="first bar open time")
    parser.add_argument("--end", default="2024-03-01", help="last bar open time")
    parser.add_argument("--category", default="linear", help="Bybit: linear, inverse, spot")
    parser.add_argument("--base-url", default=os.environ.get("BYBIT_BASE_URL"),
                        help="Bybit API root (default $BYBIT_BASE_URL or api.bybit.com)")
    parser.add_argument("--out", help="output .csv or .parquet (default data/<source>_...csv)")
    parser.add_argument("--no-cache", action="store_true", help="skip the download cache")
    parser.add_argument("--quick", action="store_true", help="one week from --start")
    args = parser.parse_args()
    interval = args.interval or ("1h" if args.source == "bybit" else "1d")
    end = args.end
    if args.quick:
        import pandas as pd

        end = str(pd.Timestamp(args.start) + pd.Timedelta(days=7))

    if args.source == "bybit":
        client = BybitClient(base_url=args.base_url) if args.base_url else None
        bars = fetch_bybit(args.symbol, interval, args.start, end, category=args.category,
                           client=client, cache=not args.no_cache, progress=True)
    else:
        bars = fetch_yahoo(args.symbol, args.start, end, interval=interval,
                           cache=not args.no_cache)

    out = Path(args.out or f"data/{args.source}_{args.symbol}_{interval}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        bars.to_parquet(out)
    else:
        bars.to_csv(out)
    print(f"{args.symbol} {interval}: {len(bars)} bars, {bars.index[0]} .. {bars.index[-1]}, "
          f"columns {list(bars.columns)}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
