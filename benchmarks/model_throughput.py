"""Model throughput: every tradezoo backbone against ncps, mambapy and the textbook Mamba loop.

One run measures, with the harness in ``benchmarks/harness/models.py`` (each (model, length)
case in a fresh process, so peak RSS is that case's), at batch 64, 16 features, hidden 64,
one thread and ``torch.set_flush_denormal(True)`` on CPU:

- parameter count, forward+backward samples/s at L = 64 and L = 256, batch-1 forward latency
  at L = 64 (the policy re-encodes the window at every env step; a dedicated pass, median of
  ``--latency-repeats`` repeats of 20 calls), peak memory;
- peers in the same run: ncps CfC and LTC, mambapy's parallel scan (``mambapy_pscan``), the
  textbook Mamba loop (``mamba_loop``; its backward is quadratic) and its ``unbind`` variant,
  ``nn.LSTM`` and a 2-layer ``nn.TransformerEncoder``;
- Mamba and mambapy at L = 257 too (mambapy pads to a power of two), each beside an L = 256
  case measured back to back, which the 257/256 ratio uses.

Configurations: every backbone is built through the registry with ``d_model = hidden``;
``mamba`` with one layer, like the mambapy peer (``n_layers=1, d_state=16, expand=2``);
``cfc`` and ``ltc`` fully connected with ``hidden`` units, like the ncps peers (``tz_cfc``,
``tz_ltc``; ``tz_cfc`` in the published CfC's mode, ncps' ``"default"``); their library
default, NCP wiring (sensory -> inter -> command -> motor, sparsity 0.5; ``cfc`` in the
published mode), in the rows ``tz_cfc_ncp`` and ``tz_ltc_ncp`` (``tz_cfc_ncp_chapter``: the
NCP CfC in the design chapter's mode), and with a per-sample ``dt [B, L]`` (what
the trainers pass: real elapsed time, here one bar each) in ``tz_cfc_ncp_dt`` and
``tz_ltc_ncp_dt``; the others with their defaults (the design chapters' forms), and beside
them the forms the ablation compared them with: ``tz_mambats_gate_hidden`` (sigmoid-gate
fusion, per-token hidden mixing), ``tz_msa_gated`` (gated fusion with hierarchical
aggregation) and ``tz_timeparticle_scan`` (one attention head, messages not fed back into the
recurrence, no per-particle outputs: the batched scan and, for inference on CPU, the compiled
kernel run it). The wrapper returns the backbone's ``[B, d_model]`` output, which is what the
peers' wrappers return (the last step).

Targets printed as met / NOT MET: Mamba >= 1.5x mambapy at L = 256; Mamba's L = 257 costs at
most 1.2x its L = 256; CfC >= ncps CfC; LTC >= 3x ncps LTC with at most a quarter of its peak
memory at L = 256; batch-1 latency at L = 64 <= 2 ms for every architecture.

Usage (repository root, after ``pip install -e ".[bench]"``, which installs ncps and mambapy)::

    python benchmarks/model_throughput.py                      # CPU, about 10-15 minutes
    python benchmarks/model_throughput.py --json models.json
    python benchmarks/model_throughput.py --device cuda        # where a GPU is available
    python benchmarks/model_throughput.py --quick              # a smoke run, rough figures
    python benchmarks/model_throughput.py --quick --archs mamba cfc   # a shorter smoke run
    python benchmarks/model_throughput.py --quick --archs mlp --peers --lengths 16  # shortest

``--peers`` picks the peers (none when given alone; the Mamba L = 257 pair needs
``mambapy_pscan``) and ``--lengths`` the window lengths (the summary table shows L = 64 and
256).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness import models as harness
from harness import workers

#: Peers measured in the same run (names of the harness's peer models).
PEERS = ("ncps_cfc", "ncps_ltc", "mambapy_pscan", "lstm", "transformer")
#: The textbook loops are very slow at L = 256 (quadratic backward): one short repeat.
SLOW_PEERS = ("mamba_loop", "mamba_loop_unbind")
PREFIX = "tz_"

#: Per-architecture overrides that make the ``tz_<arch>`` rows like for like with their peers
#: (see module docstring); the :data:`VARIANTS` rows do not inherit them.
BENCH_CONFIGS: dict[str, dict[str, Any]] = {
    "mamba": {"n_layers": 1},
    "cfc": {"wiring": None, "mode": "default"},
    "ltc": {"wiring": None},
}

#: Config key of a row that calls the backbone with ``dt`` (ones: one bar per step).
WITH_DT = "_with_dt"

#: Extra rows: an architecture with another backend or form, ``{row name: (arch, config)}``;
#: ``config`` is over the library defaults, so a row that does not name a field measures
#: the default.
#: ``tz_ltc`` runs the default backend (``auto``: the compiled kernel of
#: ``tradezoo.policies.native`` on CPU); ``tz_ltc_torch`` is the same model on its PyTorch
#: reference path. The ``mambats``, ``msa`` and ``timeparticle`` rows are the forms the
#: ablation compared the defaults with (module docstring).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "ltc_torch": ("ltc", {"wiring": None, "backend": "torch"}),
    "cfc_ncp": ("cfc", {"wiring": "ncp"}),
    "cfc_ncp_chapter": ("cfc", {"wiring": "ncp", "mode": "chapter"}),
    "cfc_ncp_dt": ("cfc", {"wiring": "ncp", WITH_DT: True}),
    "ltc_ncp": ("ltc", {"wiring": "ncp"}),
    "ltc_ncp_dt": ("ltc", {"wiring": "ncp", WITH_DT: True}),
    "mambats_gate_hidden": ("mambats", {"fusion": "gate", "channel_mixing": "hidden"}),
    "msa_gated": ("msa", {"fusion": "gated"}),
    "timeparticle_scan": ("timeparticle", {"attention_heads": 1, "message_feedback": False,
                                           "particle_outputs": False}),
}

LATENCY_TARGET_MS = 2.0


# ----------------------------------------------------------------------------- factories --
# ``harness.models --extra model_throughput:factories`` imports this module in its workers.


def factories() -> dict[str, Callable[[int, int, int], Any]]:
    """``{"tz_<arch>": factory(n_features, hidden, seq_len) -> nn.Module}`` for every
    architecture."""
    from torch import nn

    from tradezoo.policies.registry import ARCHITECTURES, make_backbone

    class Wrapped(nn.Module):
        def __init__(self, name: str, n_features: int, hidden: int, seq_len: int,
                     variant: dict[str, Any] | None = None) -> None:
            super().__init__()
            cfg = dict(BENCH_CONFIGS.get(name, {}) if variant is None else variant)
            self.with_dt = bool(cfg.pop(WITH_DT, False))
            if name == "mlp":
                cfg["window"] = seq_len  # the MLP flattens the window: it needs its length
            self.backbone = make_backbone(name, n_features, d_model=hidden, **cfg)

        def forward(self, x: Any) -> Any:
            if self.with_dt:  # a per-sample dt [B, L], as the trainers pass it
                return self.backbone(x, x.new_ones(x.shape[:2]))  # [B, d_model]
            return self.backbone(x)  # [B, d_model]

    def make(name: str, variant: dict[str, Any] | None = None) -> Callable[[int, int, int], Any]:
        return lambda n_features, hidden, seq_len: Wrapped(name, n_features, hidden, seq_len,
                                                           variant)

    made = {PREFIX + name: make(name) for name in ARCHITECTURES}
    made.update({PREFIX + row: make(arch, cfg) for row, (arch, cfg) in VARIANTS.items()})
    return made


# ------------------------------------------------------------------------------- running --


def run_cases(models: Sequence[str], seq_lens: Sequence[int], args: argparse.Namespace,
             *, repeats: int, min_time: float, latency: bool = True) -> list[dict[str, Any]]:
    """Every (model, length) case, each in a fresh worker process; returns the result rows
    (a case that failed has an ``error``)."""
    case = harness.ModelCase(
        repeats=repeats, min_time=min_time, threads=args.threads, device=args.device,
        flush_denormal=args.device == "cpu", latency=latency,
    )
    env = workers.child_env(threads=args.threads)
    rows: list[dict[str, Any]] = []
    print(f"# {' '.join(models)} at L={list(seq_lens)}", file=sys.stderr, flush=True)
    for model in models:
        for length in seq_lens:
            row = harness.run_isolated(
                model, length, case, extra=["model_throughput:factories"], env=env
            )
            sps = row.get("train_sps_median", 0.0)
            status = row.get("error", "")[-200:] or f"{sps:,.0f} samples/s"
            print(f"#   {model} L={length}: {status}", file=sys.stderr, flush=True)
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------ reporting --


def _get(rows: list[dict[str, Any]], model: str, length: int, key: str,
         group: str | None = None) -> float:
    """``key`` of the first row of ``model`` at ``length`` (in ``group``: rows tagged so)."""
    for row in rows:
        if (row.get("model") == model and row.get("seq_len") == length
                and row.get("group") == group):
            value = row.get(key)
            return float(value) if value is not None else math.nan
    return math.nan


def _latency(rows: list[dict[str, Any]], model: str) -> float:
    """Batch-1 latency at L = 64: from the dedicated latency pass when it ran (median of
    ``--latency-repeats``), else from the main pass (median of ``--repeats``)."""
    value = _get(rows, model, 64, "fwd_b1_ms_median", "latency")
    return value if math.isfinite(value) else _get(rows, model, 64, "fwd_b1_ms_median")


def _fmt(value: float, spec: str = "{:,.0f}") -> str:
    return "n/a" if not math.isfinite(value) else spec.format(value)


def summarise(rows: list[dict[str, Any]], arch_names: Sequence[str],
              meta: dict[str, Any]) -> str:
    memory_key = "peak_cuda_mb" if meta["device"].startswith("cuda") else "peak_rss_mb"
    memory_label = ("peak CUDA allocated" if memory_key == "peak_cuda_mb"
                    else "peak RSS of the case process")
    lines = [
        f"device {meta['device']}, threads {meta['threads']}, flush denormals "
        f"{meta['flush_denormal']}, batch 64, features 16, hidden 64 "
        f"(train = forward+backward samples/s, median of repeats; memory = "
        f"{memory_label})",
        "",
        "| model | params | train L=64 | train L=256 | fwd b=1 L=64 ms | memory L=256 MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    names = [PREFIX + a for a in arch_names]
    for row, (arch, _) in VARIANTS.items():
        if PREFIX + arch in names:
            names.insert(names.index(PREFIX + arch) + 1, PREFIX + row)
    names += list(PEERS) + list(SLOW_PEERS)
    for name in names:
        if not any(r.get("model") == name for r in rows):
            continue
        params = _get(rows, name, 64, "params")
        lines.append(
            f"| {name} | {_fmt(params)} | {_fmt(_get(rows, name, 64, 'train_sps_median'))} | "
            f"{_fmt(_get(rows, name, 256, 'train_sps_median'))} | "
            f"{_fmt(_latency(rows, name), '{:.2f}')} | "
            f"{_fmt(_get(rows, name, 256, memory_key))} |"
        )
    errors = [r for r in rows if "error" in r]
    for row in errors:
        lines.append(f"ERROR {row['model']} L={row['seq_len']}: {row['error'][-300:]}")

    def ratio(a: str, b: str, length: int, key: str = "train_sps_median") -> float:
        return _get(rows, a, length, key) / _get(rows, b, length, key)

    t = PREFIX
    pair = "pair_257"
    mamba_257 = _get(rows, t + "mamba", 256, "train_sps_median", pair) / _get(
        rows, t + "mamba", 257, "train_sps_median", pair)
    mambapy_257 = _get(rows, "mambapy_pscan", 256, "train_sps_median", pair) / _get(
        rows, "mambapy_pscan", 257, "train_sps_median", pair)
    ltc_mem = _get(rows, t + "ltc", 256, memory_key) / _get(rows, "ncps_ltc", 256, memory_key)
    latencies = {a: _latency(rows, t + a) for a in arch_names}
    slowest = max(latencies, key=lambda a: latencies[a] if math.isfinite(latencies[a]) else 1e9)
    checks = [
        ("Mamba >= 1.5x mambapy pscan, train L=256", ratio(t + "mamba", "mambapy_pscan", 256),
         lambda v: v >= 1.5, "{:.2f}x"),
        ("Mamba L=257 time <= 1.2x L=256", mamba_257, lambda v: v <= 1.2,
         "{:.2f}x" + f" (mambapy {mambapy_257:.2f}x)"),
        ("Mamba vs textbook loop, train L=256", ratio(t + "mamba", "mamba_loop", 256),
         None, "{:.0f}x"),
        ("CfC >= ncps CfC, train L=64", ratio(t + "cfc", "ncps_cfc", 64), lambda v: v >= 1.0,
         "{:.2f}x"),
        ("CfC >= ncps CfC, train L=256", ratio(t + "cfc", "ncps_cfc", 256), lambda v: v >= 1.0,
         "{:.2f}x"),
        ("LTC >= 3x ncps LTC, train L=256", ratio(t + "ltc", "ncps_ltc", 256),
         lambda v: v >= 3.0, "{:.2f}x"),
        ("LTC memory <= 1/4 of ncps LTC at L=256", ltc_mem, lambda v: v <= 0.25, "{:.3f}x"),
        ("  (LTC PyTorch reference backend vs ncps LTC, train L=256)",
         ratio(t + "ltc_torch", "ncps_ltc", 256), None, "{:.2f}x"),
        ("  (CfC NCP, the default, vs ncps CfC, train L=64)",
         ratio(t + "cfc_ncp", "ncps_cfc", 64), None, "{:.2f}x"),
        ("  (CfC NCP with per-sample dt vs ncps CfC, train L=64)",
         ratio(t + "cfc_ncp_dt", "ncps_cfc", 64), None, "{:.2f}x"),
        ("  (LTC NCP, the default, vs ncps LTC, train L=256)",
         ratio(t + "ltc_ncp", "ncps_ltc", 256), None, "{:.2f}x"),
        ("  (LTC NCP with per-sample dt vs ncps LTC, train L=256)",
         ratio(t + "ltc_ncp_dt", "ncps_ltc", 256), None, "{:.2f}x"),
        (f"batch-1 latency L=64 <= {LATENCY_TARGET_MS:g} ms, every arch (slowest: {slowest})",
         latencies[slowest], lambda v: v <= LATENCY_TARGET_MS, "{:.2f} ms"),
    ]
    lines += ["", "targets"]
    for label, value, ok, spec in checks:
        if not math.isfinite(value):
            verdict = "n/a"
        elif ok is None:
            verdict = "(for information)"
        else:
            verdict = "met" if ok(value) else "NOT MET"
        lines.append(f"  {label:<62} {_fmt(value, spec):>22}  {verdict}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds per repeat")
    parser.add_argument("--latency-repeats", type=int, default=9,
                        help="repeats (of 20 calls) of the dedicated batch-1 latency pass, "
                             "whose median is reported (0: no such pass; default 9)")
    parser.add_argument("--archs", nargs="*", default=None, help="subset of architectures")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: one short repeat per case, no textbook loops, "
                             "no dedicated latency pass")
    parser.add_argument("--peers", nargs="*", default=[*PEERS, *SLOW_PEERS],
                        choices=[*PEERS, *SLOW_PEERS],
                        help="peer models to measure beside ours (default all, the textbook "
                             "loops only without --quick; none: --peers alone)")
    parser.add_argument("--lengths", nargs="+", type=int, default=[64, 256],
                        help="window lengths L of the throughput cases (default 64 256)")
    parser.add_argument("--json", default=None, help="write every result row here")
    return parser.parse_args(argv)


def peer_groups(peers: Sequence[str], *, quick: bool) -> tuple[list[str], list[str]]:
    """The ``--peers`` asked for, split into those timed like ours and the textbook loops
    (one short repeat, no latency pass; none with ``--quick``)."""
    slow = [] if quick else [p for p in peers if p in SLOW_PEERS]
    return [p for p in peers if p not in SLOW_PEERS], slow


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from tradezoo.policies.registry import ARCHITECTURES

    archs = args.archs or list(ARCHITECTURES)
    unknown = [a for a in archs if a not in ARCHITECTURES]
    if unknown:
        print(f"unknown architectures {unknown}; valid: {list(ARCHITECTURES)}", file=sys.stderr)
        return 2
    repeats, min_time = (1, 0.3) if args.quick else (args.repeats, args.min_time)
    versions = harness.environment()
    print(
        f"every model under {sys.executable}: "
        + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "platform")
        + f"; loadavg {workers.loadavg()}",
        flush=True,
    )
    ours = [PREFIX + a for a in archs]
    ours += [PREFIX + row for row, (arch, _) in VARIANTS.items() if arch in archs]
    peers, slow_peers = peer_groups(args.peers, quick=args.quick)
    rows = run_cases([*ours, *peers], args.lengths, args, repeats=repeats,
                     min_time=min_time)
    if slow_peers:
        rows += run_cases(slow_peers, [64, 256], args, repeats=1, min_time=0.0,
                          latency=False)
    if args.latency_repeats > 0 and not args.quick:
        # Batch-1 latency again, for every model, with more repeats: on a shared machine one
        # load spike moves a median of 3 repeats of 20 calls (~30 ms each) by 50 %.
        lat = run_cases([*ours, *peers], [64], args, repeats=args.latency_repeats,
                        min_time=0.05)
        rows += [{**row, "group": "latency"} for row in lat]
    if "mamba" in archs and "mambapy_pscan" in args.peers:
        # L = 256 again beside L = 257, measured back to back, so the 257/256 ratio is not
        # skewed by load changing between this run's first group and its last.
        pair = run_cases([PREFIX + "mamba", "mambapy_pscan"], [256, 257], args,
                         repeats=repeats, min_time=min_time, latency=False)
        rows += [{**row, "group": "pair_257"} for row in pair]
    meta = {"device": args.device, "threads": args.threads,
            "flush_denormal": args.device == "cpu", "repeats": repeats, "min_time": min_time,
            "versions": versions, "argv": sys.argv}
    print(summarise(rows, archs, meta))
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
