"""Backtest a strategy with tradezoo's execution engine, against buy-and-hold.

    python scripts/backtest.py                                # SMA crossover, BTCUSDT 1h
    python scripts/backtest.py --data yahoo-spy-1d --fast 10 --slow 50 --long-only
    python scripts/backtest.py --checkpoint runs/gru-.../ppo/best_model.zip   # a trained model
    python scripts/backtest.py --quick                        # the last 2,000 bars only

A strategy is a series of target positions (signed fraction of equity) decided at each bar's
close from data up to that close; `simulate` fills them at the next bar's open with the
dataset's costs (fees, spread, slippage, funding) and reports the metrics of the strategy and
of buy-and-hold on the same bars. The span is the test part of the default split (the last
15 % of the bars), the part trained models are graded on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tradezoo.backtest import simulate
from tradezoo.backtest.report import print_report, save_png, to_json
from tradezoo.data import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="bybit-btcusdt-1h", help="a bundled dataset")
    parser.add_argument("--fast", type=int, default=24, help="fast moving average, bars")
    parser.add_argument("--slow", type=int, default=96, help="slow moving average, bars")
    parser.add_argument("--long-only", action="store_true", help="flat instead of short")
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--checkpoint", help="backtest a tradezoo checkpoint instead (.pt/.zip)")
    parser.add_argument("--out", default="runs/scripts/backtest")
    parser.add_argument("--quick", action="store_true", help="only the last 2,000 bars")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if args.checkpoint:  # a model from `tradezoo train ...`, `tradezoo run` or compare
        from tradezoo.agents.run import backtest_checkpoint

        outcome = backtest_checkpoint(args.checkpoint, split="test", out_dir=out)
        print_report(outcome.result)
        print(f"wrote {outcome.json_path} and {outcome.png_path}")
        return

    bars = load_dataset(args.data)
    if args.quick:
        bars = bars.iloc[-2_000:]
    close = bars["close"]
    # Moving averages of closes up to t: the position decided at t uses nothing after t.
    fast = close.rolling(args.fast).mean()
    slow = close.rolling(args.slow).mean()
    short = 0.0 if args.long_only else -1.0
    target = np.where(fast > slow, 1.0, short)
    target[: args.slow - 1] = 0.0  # flat until the slow average exists

    start = int(len(bars) * (1.0 - args.test_fraction))
    result = simulate(bars.iloc[start:], target[start:])
    print_report(result)
    to_json(result, out / "sma_crossover.json")
    save_png(result, out / "sma_crossover.png")
    print(f"wrote {out / 'sma_crossover.json'} and {out / 'sma_crossover.png'}")


if __name__ == "__main__":
    main()
