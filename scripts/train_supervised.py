"""A buy/hold/sell classifier on the bundled BTCUSDT 1h bars, as a plain PyTorch loop.

    python scripts/train_supervised.py                   # GRU, 5 epochs (a minute on a CPU)
    python scripts/train_supervised.py --arch cfc --epochs 20 --device cuda
    python scripts/train_supervised.py --quick           # a few batches: checks that it runs

tradezoo prepares the data (causal features, labels net of trading costs, time splits with an
embargo, a scaler fitted on the train split only); the model is a zoo backbone plus a 3-class
head, and the loop is yours. The model's inputs are the trainers' own (`ModelInputs`): the
env's Box window, with each bar's elapsed seconds for cfc and ltc, or for msa on intraday bars
the last closed 1h/4h/1d bars (the env's dict observation). Classes are env actions (0 sell,
1 hold, 2 buy), so the test split is then backtested with the shared engine against
buy-and-hold. `tradezoo train supervised` does the same with early stopping, checkpoints and
TensorBoard.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tradezoo.agents.data import prepare_data
from tradezoo.agents.supervised import ModelInputs, SupervisedModel, evaluate_supervised
from tradezoo.backtest.report import print_report
from tradezoo.policies.registry import with_time_unit


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="gru", help="gru, lstm, cfc, ltc, mamba, msa, ...")
    parser.add_argument("--data", default="bybit-btcusdt-1h")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="1 epoch of 10 batches")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    max_batches = 10 if args.quick else None
    epochs = 1 if args.quick else args.epochs

    data = prepare_data(args.data, window=args.window)
    # The liquid networks (cfc, ltc) also take each bar's elapsed seconds, in bar intervals.
    arch_config = with_time_unit(args.arch, {"d_model": args.d_model}, data.bar_seconds)
    # The data with the inputs this model takes, as the trainers prepare them: msa on intraday
    # bars gets closed 1h/4h/1d bars; every other model the Box window.
    data = data.for_model(args.arch, arch_config)
    print(f"{data.name}: {data.n_features} features; train/val/test windows "
          f"{len(data.train)}/{len(data.val)}/{len(data.test)}; inputs: "
          f"{', '.join(data.timeframe_windows) or 'Box window'}")
    model = SupervisedModel(args.arch, data.n_features, data.window, features_dim=args.d_model,
                            arch_config=arch_config, timeframes=data.timeframe_windows,
                            ).to(args.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    # Classes are imbalanced (hold is rare with costs netted out): weight them N / (3 N_c).
    counts = torch.tensor(data.train.class_counts(), dtype=torch.float32)
    weight = (counts.sum() / (3 * counts.clamp_min(1))).to(args.device)
    # The observations of the train windows, gathered on the device batch by batch.
    inputs = ModelInputs(data, data.train.decision_rows, torch.device(args.device),
                         include_dt=model.include_dt)
    labels = data.train.labels.to(args.device)  # [N] class ids
    generator = torch.Generator().manual_seed(args.seed)

    for epoch in range(epochs):
        model.train()
        total, seen = 0.0, 0
        order = torch.randperm(len(inputs), generator=generator)
        for i, items in enumerate(order.split(256)):
            if max_batches is not None and i >= max_batches:
                break
            items = items.to(args.device)
            obs = inputs.get(items)  # [B, window, F + 2], or a dict of windows
            y = labels[items]  # [B]
            loss = F.cross_entropy(model(obs), y, weight=weight)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            total, seen = total + loss.item() * len(y), seen + len(y)
        val = evaluate_supervised(model, data, "val", device=args.device)
        print(f"epoch {epoch + 1}/{epochs}: train loss {total / seen:.4f}, val accuracy "
              f"{val.report.accuracy:.3f}, val macro-F1 {val.report.macro_f1:.3f}")

    # Test split: classification report, then the signals backtested against buy-and-hold.
    test = evaluate_supervised(model, data, "test", device=args.device)
    print(test.report)
    print_report(test.backtest)


if __name__ == "__main__":
    main()
