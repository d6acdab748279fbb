"""How much of a calibration market's hidden edge a network can read from its bars: the
ablation's pairs trained on the market's ``oracle_signal`` instead of trading labels.

    python scripts/oracle_probe.py --changes cfc.dt_dynamics,ltc.dt_dynamics --seeds 5
    python scripts/oracle_probe.py --quick          # a few batches: checks that it runs

The ablation (``scripts/ablation.py``) grades each form of a change by the test Sharpe of a
classifier trained on buy/hold/sell labels, whose noise (one bar's realised return) can hide
what a model is able to represent. This probe asks the narrower question: trained on the
noise-free target, which form recovers more of the market's edge?

- Forms: each change of ``scripts/ablation.py``'s ``CHANGES``, both forms, with their
  ``arch_config.*`` and ``features.*`` options (the ``supervised.*`` ones belong to the
  classifier and are not used, so a change of those alone is refused). The liquid networks
  get the data's bar interval as ``time_unit``, as in the trainers. The probe feeds Box
  windows: a model that takes multi-timeframe inputs on these bars (``msa`` on hourly data)
  is refused.
- Target: the calibration market's ``oracle_signal`` (``tradezoo.data.synthetic.hidden_state``)
  at each decision row, divided by its standard deviation on the train part.
- Model and loop: the zoo backbone (library defaults plus the form's options) and a linear
  head, mean squared error, Adam (lr 1e-3), batches of 128, gradient norm clipped at 1; the
  epoch with the best validation correlation is the one reported.
- Data: ``prepare_data`` with the default 70/15/15 split and window 64; each seed changes the
  initial weights and the batch order. ``torch.set_flush_denormal(True)``, one thread.
- Reported per form: the test correlation with the oracle signal (mean over seeds) and the
  test Sharpe of holding ``sign(prediction)``, replayed through the one engine with the
  market's costs (``tradezoo.agents.calibration.backtest_positions``). Reference rows: the
  generator-aware Kalman filter with and without ``dt`` (``filtered_signal``) on the same rows.
- Verdicts per pair, each ``chapter better`` / ``previous better`` where that one-sided
  ``p`` is below ``--alpha``, else ``within noise``: on the correlation, the paired t-test
  over seeds (H0: ``corr(chapter) <= corr(previous)``); on the Sharpe, the ablation's pooled
  paired bootstrap over seeds and bars (``scripts/ablation.py``'s ``verdict``).

A probe model sees the hidden state while it trains: it measures capacity, it is not a
strategy. Files in ``--out`` (optional): ``oracle_probe.md`` and ``oracle_probe.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn

from tradezoo.agents.calibration import backtest_positions
from tradezoo.agents.data import PreparedData, prepare_data
from tradezoo.agents.rundir import write_text_atomic
from tradezoo.data.synthetic import filtered_signal, hidden_state
from tradezoo.policies.registry import make_backbone, uses_dt, with_time_unit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation import CHANGES, FORMS, Change, verdict  # the pairs and their Sharpe verdict

WINDOW = 64
"""Bars per input window (the trainers' default)."""


class Part(NamedTuple):
    """One part's probe inputs, ``N`` decision rows."""

    windows: torch.Tensor  # [N, L, F] float32, scaled features
    elapsed: torch.Tensor  # [N, L] float32, seconds since the previous bar, unscaled
    target: torch.Tensor  # [N] float32, oracle_signal / its train std
    rows: np.ndarray  # [N] int64, feature rows the windows end at


def form_options(change: Change, form: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(arch_config, features)`` options of one form of ``change``."""
    arch_config, features = {}, {}
    for key, value in change.options(form).items():
        section, _, name = key.partition(".")
        if section == "arch_config":
            arch_config[name] = value
        elif section == "features":
            features[name] = value
    return arch_config, features


def probe_parts(data: PreparedData, target: np.ndarray) -> dict[str, Part]:
    """The train, val and test parts' decision rows as :class:`Part` (``target`` ``[T]``)."""
    elapsed = data.elapsed()  # [T] seconds, unscaled
    offsets = np.arange(-WINDOW + 1, 1)
    out = {}
    for part in ("train", "val", "test"):
        rows = data.decision_rows(part)
        out[part] = Part(
            torch.from_numpy(data.windows(rows)),
            torch.from_numpy(elapsed[rows[:, None] + offsets].astype(np.float32)),
            torch.from_numpy(target[rows]),
            rows,
        )
    return out


def correlation(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Pearson correlation of two ``[N]`` series (NaN if either is constant)."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)  # float32 model outputs stay float32
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


@functools.lru_cache(maxsize=4)
def prepared(dataset: str, features: tuple[tuple[str, Any], ...]) -> PreparedData:
    """``dataset`` prepared once per feature options (every seed of a form shares it)."""
    return prepare_data(dataset, window=WINDOW, feature_spec=dict(features))


def sign_backtest(data: PreparedData, rows: np.ndarray, signal: np.ndarray
                  ) -> tuple[float, np.ndarray, float]:
    """Annualised Sharpe, per-bar returns ``[n]`` and periods per year of holding
    ``sign(signal)`` (``[N]``) decided at the contiguous feature ``rows`` (``[N]``), flat before
    and after, replayed through the engine with the market's costs from the first decision bar
    to the bar after the last."""
    index = data.features.index
    positions = pd.Series(0.0, index=data.bars.index)
    positions.loc[index[rows]] = np.sign(signal)
    start, end = index[rows[0]], index[rows[-1] + 1]
    result = backtest_positions(data.name, positions, start, end)
    metrics = result.metrics
    return float(metrics.sharpe), result.returns.to_numpy(), float(metrics.periods_per_year)


def probe(dataset: str, change: Change, form: str, seed: int, epochs: int,
          max_batches: int | None) -> dict[str, Any]:
    """Train one form with one seed and grade the epoch with the best validation correlation.

    Returns:
        ``val_corr``, ``test_corr``, ``epoch`` (1-based), ``test_sharpe``,
        ``test_returns`` (per-bar returns of the sign trade, ``[n]``) and
        ``periods_per_year``.
    """
    arch_config, features = form_options(change, form)
    torch.manual_seed(seed)
    data = prepared(dataset, tuple(sorted(features.items())))
    config = with_time_unit(change.arch, arch_config, data.bar_seconds)
    if data.for_model(change.arch, config).timeframe_windows:
        raise SystemExit(f"oracle_probe: {change.name}: {change.arch} takes multi-timeframe "
                         "inputs on these bars; the probe feeds Box windows only")
    signal = hidden_state(dataset)["oracle_signal"].reindex(data.features.index).to_numpy()
    target = (signal / signal[data.decision_rows("train")].std()).astype(np.float32)
    split = probe_parts(data, target)
    backbone = make_backbone(change.arch, data.n_features, **config)
    head = nn.Linear(backbone.config.d_model, 1)
    params = [*backbone.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    takes_dt = uses_dt(change.arch)

    def predict(windows: torch.Tensor, elapsed: torch.Tensor) -> torch.Tensor:
        return head(backbone(windows, elapsed if takes_dt else None)).squeeze(-1)  # [B]

    train = split["train"]
    generator = torch.Generator().manual_seed(seed)
    best: dict[str, Any] = {}
    best_score = -math.inf
    for epoch in range(epochs):
        backbone.train()
        for i, items in enumerate(torch.randperm(len(train.target),
                                                 generator=generator).split(128)):
            if max_batches is not None and i >= max_batches:
                break
            prediction = predict(train.windows[items], train.elapsed[items])  # [B]
            loss = (prediction - train.target[items]).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
        backbone.eval()
        with torch.no_grad():
            val_part, test_part = split["val"], split["test"]
            val = correlation(predict(val_part.windows, val_part.elapsed), val_part.target)
            # A constant prediction has no correlation: it ranks below every other epoch.
            score = val if math.isfinite(val) else -math.inf
            if not best or score > best_score:
                test = predict(test_part.windows, test_part.elapsed)  # [N]
                best_score = score
                best = {"val_corr": val, "test_corr": correlation(test, test_part.target),
                        "epoch": epoch + 1, "test_signal": test.numpy()}
    best["test_sharpe"], best["test_returns"], best["periods_per_year"] = sign_backtest(
        data, split["test"].rows, best.pop("test_signal"))
    return best


def kalman_rows(dataset: str) -> list[dict[str, Any]]:
    """The generator-aware filter with and without ``dt`` on the default data's test rows."""
    data = prepared(dataset, ())
    rows = data.decision_rows("test")
    when = data.features.index[rows]
    signal = hidden_state(dataset)["oracle_signal"].loc[when].to_numpy()
    out = []
    for use_dt in (True, False):
        estimate = filtered_signal(dataset, use_dt=use_dt).loc[when].to_numpy()
        out.append({"form": f"Kalman filter, use_dt={use_dt}",
                    "test_corr": correlation(estimate, signal),
                    "test_sharpe": sign_backtest(data, rows, estimate)[0]})
    return out


def correlation_verdict(chapter: Sequence[float], previous: Sequence[float], alpha: float
                        ) -> tuple[float, str]:
    """One-sided paired t-test p of H0 corr(chapter) <= corr(previous) over the seeds, and
    the verdict (``chapter better`` / ``previous better`` where that side's p is below
    ``alpha``, as the ablation's)."""
    if len(chapter) < 2:
        return float("nan"), "within noise"
    p = float(stats.ttest_rel(chapter, previous, alternative="greater").pvalue)
    said = ("chapter better" if p < alpha else "previous better" if 1.0 - p < alpha
            else "within noise")
    return p, said


def main(argv: Sequence[str] | None = None) -> None:
    """Probe the ``--changes`` on ``--dataset`` and print (and with ``--out``, write) the
    table of the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", default="cfc.dt_dynamics,ltc.dt_dynamics",
                        help="comma-separated names of scripts/ablation.py's CHANGES")
    parser.add_argument("--dataset", default="synthetic-cycle",
                        help="a calibration market with a filter (synthetic-cycle, "
                             "synthetic-irregular)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=None, help="folder for the md/json files")
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 epoch of 5 batches")
    args = parser.parse_args(argv)
    torch.set_flush_denormal(True)  # denormals slow recurrent backward passes on CPUs
    torch.set_num_threads(1)
    seeds, epochs = (1, 1) if args.quick else (args.seeds, args.epochs)
    max_batches = 5 if args.quick else None
    by_name = {change.name: change for change in CHANGES}
    unknown = [name for name in args.changes.split(",") if name not in by_name]
    if unknown:
        parser.error(f"--changes: unknown {unknown}; they are {sorted(by_name)}")
    changes = [by_name[name] for name in args.changes.split(",")]
    same = [c.name for c in changes if form_options(c, "chapter") == form_options(c, "previous")]
    if same:
        parser.error(f"--changes: {same} differ only in the classifier's (supervised.*) "
                     "options, which the probe does not use")

    started = time.perf_counter()
    lines = [f"Command: `python scripts/oracle_probe.py {' '.join(argv or sys.argv[1:])}`", "",
             "| change | form | options | test corr | higher in | p better | test Sharpe "
             "| higher in | p better | verdict (corr; Sharpe) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    record: dict[str, Any] = {"dataset": args.dataset, "seeds": seeds, "epochs": epochs,
                              "changes": {}}
    for change in changes:
        runs = {form: [probe(args.dataset, change, form, seed, epochs, max_batches)
                       for seed in range(seeds)] for form in FORMS}
        returns = {form: [run.pop("test_returns") for run in runs[form]] for form in FORMS}
        corr = {form: [run["test_corr"] for run in runs[form]] for form in FORMS}
        sharpe = {form: [run["test_sharpe"] for run in runs[form]] for form in FORMS}
        p_corr, corr_said = correlation_verdict(corr["chapter"], corr["previous"], args.alpha)
        # The ablation's verdict: seeds and bars resampled, on the same test bars.
        sharpe_verdict = verdict(returns["chapter"], returns["previous"],
                                 runs["chapter"][0]["periods_per_year"], alpha=args.alpha,
                                 n_boot=2000)
        p_sharpe = (sharpe_verdict["p_chapter"], sharpe_verdict["p_previous"])
        sharpe_said = sharpe_verdict["verdict"]
        for form in FORMS:
            options = ", ".join(f"{k.partition('.')[2]}={v}"
                                for k, v in change.options(form).items()
                                if not k.startswith("supervised."))
            other = "previous" if form == "chapter" else "chapter"
            corr_wins = sum(a > b for a, b in zip(corr[form], corr[other], strict=True))
            sharpe_wins = sum(a > b for a, b in zip(sharpe[form], sharpe[other], strict=True))
            p_form = (p_corr if form == "chapter" else 1.0 - p_corr,
                      p_sharpe[0] if form == "chapter" else p_sharpe[1])
            tail = f"{corr_said}; {sharpe_said}" if form == "chapter" else ""
            lines.append(f"| {change.name} | {form} | `{options}` | {np.mean(corr[form]):.3f} "
                         f"| {corr_wins}/{seeds} | {p_form[0]:.3f} "
                         f"| {np.mean(sharpe[form]):.2f} | {sharpe_wins}/{seeds} "
                         f"| {p_form[1]:.3f} | {tail} |")
            print(lines[-1], flush=True)
        record["changes"][change.name] = {
            "runs": runs, "p_corr": p_corr, "p_sharpe": p_sharpe,
            "verdict_corr": corr_said, "verdict_sharpe": sharpe_said}
    record["reference"] = kalman_rows(args.dataset)
    for row in record["reference"]:
        lines.append(f"| reference | {row['form']} | | {row['test_corr']:.3f} | | "
                     f"| {row['test_sharpe']:.2f} | | | |")
    seconds = time.perf_counter() - started
    lines += ["", f"{args.dataset}, {seeds} seed(s) x {epochs} epoch(s); "
                  f"wall time {seconds:.0f} s."]
    print("\n".join(lines))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out / "oracle_probe.md", "\n".join(lines) + "\n")
        write_text_atomic(args.out / "oracle_probe.json", json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
