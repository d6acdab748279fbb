"""Sequence-model throughput harness: the peer models and the timed loops.

Every model maps a window ``x [B, L, F]`` to ``[B, H]`` (the last step's representation) and
is measured the same way (:func:`run_case`): parameter count, forward+backward samples/s
(median over repeats; also per CPU-second, steadier on a shared machine), batch-1 forward
latency under ``torch.no_grad`` and, in a fresh worker (:func:`run_isolated`), the peak RSS
of the process (CUDA: the allocator's peak).

Peers (:data:`PEERS`):

- ``ncps_cfc``, ``ncps_ltc``: ncps's CfC and LTC, fully connected with ``hidden`` units;
- ``mambapy_pscan``: one mambapy Mamba layer (``d_state=16, expand=2, d_conv=4``) with its
  parallel scan, which pads the length to a power of two;
- ``mamba_loop``: a textbook Mamba layer whose selective scan is a Python loop indexing
  ``dA[:, t]`` (autograd then materialises a full-size zero tensor per step in backward: the
  backward is quadratic in L);
- ``mamba_loop_unbind``: the same loop over ``unbind(1)`` slices (a linear backward);
- ``lstm``: ``nn.LSTM``; ``transformer``: a 2-layer ``nn.TransformerEncoder`` (4 heads,
  feed-forward ``2 * hidden``, no dropout).

A model factory is ``factory(n_features, hidden, seq_len) -> nn.Module``; more models come
from ``--extra module:callable``, where the callable returns ``{name: factory}``.

On CPU, denormal floats slow recurrent backward passes by up to 9x: the benchmarks measure
with ``torch.set_flush_denormal(True)`` (:attr:`ModelCase.flush_denormal`) and one thread.
"""

from __future__ import annotations

import argparse
import importlib
import math
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness import workers

ModelFactory = Callable[[int, int, int], nn.Module]


# ------------------------------------------------------------------------------- models --


class LastStep(nn.Module):
    """Runs a sequence module (after an optional input projection) and returns its last step."""

    def __init__(self, body: nn.Module, proj_in: nn.Module | None = None) -> None:
        super().__init__()
        self.proj_in = proj_in if proj_in is not None else nn.Identity()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(self.proj_in(x))
        if isinstance(out, tuple):
            out = out[0]
        return out[:, -1] if out.dim() == 3 else out


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def loop_selective_scan(x, delta, A, B, C, D) -> torch.Tensor:
    """The textbook sequential selective scan, indexing ``dA[:, t]`` inside the loop.

    Shapes: ``x, delta [B, L, E]``, ``A [E, N]``, ``B, C [B, L, N]``, ``D [E]`` -> ``[B, L, E]``.
    """
    dA = torch.exp(delta.unsqueeze(-1) * A)  # [B, L, E, N]
    dB = delta.unsqueeze(-1) * B.unsqueeze(2)  # [B, L, E, N]
    h = x.new_zeros(x.size(0), x.size(2), A.size(1))
    ys = []
    for t in range(x.size(1)):
        h = dA[:, t] * h + dB[:, t] * x[:, t].unsqueeze(-1)
        ys.append((h * C[:, t].unsqueeze(1)).sum(-1))
    return torch.stack(ys, dim=1) + D * x


def unbind_selective_scan(x, delta, A, B, C, D) -> torch.Tensor:
    """:func:`loop_selective_scan`'s recurrence over ``unbind(1)`` slices (linear backward)."""
    dA = torch.exp(delta.unsqueeze(-1) * A).unbind(1)
    dBx = (delta * x).unsqueeze(-1) * B.unsqueeze(2)  # [B, L, E, N]
    h = x.new_zeros(x.size(0), x.size(2), A.size(1))
    ys = []
    for a_t, b_t, c_t in zip(dA, dBx.unbind(1), C.unbind(1), strict=True):
        h = a_t * h + b_t
        ys.append((h * c_t.unsqueeze(1)).sum(-1))
    return torch.stack(ys, dim=1) + D * x


class TextbookMambaBlock(nn.Module):
    """A Mamba block (Gu and Dao 2023) with a Python-loop scan and the official initialisation.

    Parameter names match ``mambapy.mamba.MambaBlock``, so state dicts are interchangeable.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        scan: Callable[..., torch.Tensor] = loop_selective_scan,
    ) -> None:
        super().__init__()
        self.scan = scan
        d_inner = expand * d_model
        self.d_inner, self.d_state = d_inner, d_state
        self.dt_rank = math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True)
        dt_std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -dt_std, dt_std)
        log_dt = torch.rand(d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
        dt = torch.exp(log_dt).clamp(min=1e-4)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.size(1)
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = F.silu(self.conv1d(x.transpose(1, 2))[:, :, :length].transpose(1, 2))
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))
        y = self.scan(x, delta, -torch.exp(self.A_log), B, C, self.D)
        return self.out_proj(y * F.silu(z))


class TextbookMamba(nn.Module):
    """One pre-norm residual Mamba layer, like ``mambapy.mamba.Mamba(n_layers=1)``."""

    def __init__(
        self, d_model: int, scan: Callable[..., torch.Tensor] = loop_selective_scan
    ) -> None:
        super().__init__()
        self.mixer = TextbookMambaBlock(d_model, scan=scan)
        self.norm = RMSNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixer(self.norm(x)) + x


def ncps_cfc(n_features: int, hidden: int, seq_len: int) -> nn.Module:
    from ncps.torch import CfC

    return LastStep(CfC(n_features, hidden, return_sequences=False))


def ncps_ltc(n_features: int, hidden: int, seq_len: int) -> nn.Module:
    from ncps.torch import LTC

    return LastStep(LTC(n_features, hidden, return_sequences=False))


def mambapy_pscan(n_features: int, hidden: int, seq_len: int) -> nn.Module:
    from mambapy.mamba import Mamba, MambaConfig

    config = MambaConfig(
        d_model=hidden, n_layers=1, d_state=16, expand_factor=2, d_conv=4, pscan=True
    )
    return LastStep(Mamba(config), proj_in=nn.Linear(n_features, hidden))


def mamba_loop(n_features: int, hidden: int, seq_len: int) -> nn.Module:
    return LastStep(TextbookMamba(hidden), proj_in=nn.Linear(n_features, hidden))


def mamba_loop_unbind(n_features: int, hidden: int, seq_len: int) -> nn.Module:
    body = TextbookMamba(hidden, scan=unbind_selective_scan)
    return LastStep(body, proj_in=nn.Linear(n_features, hidden))


def lstm(n_features: int, hidden: int, seq_len: int) -> nn.Module:
    return LastStep(nn.LSTM(n_features, hidden, batch_first=True))


def transformer(n_features: int, hidden: int, seq_len: int) -> nn.Module:
    layer = nn.TransformerEncoderLayer(
        hidden, nhead=4, dim_feedforward=2 * hidden, dropout=0.0, batch_first=True
    )
    encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    return LastStep(encoder, proj_in=nn.Linear(n_features, hidden))


PEERS: dict[str, ModelFactory] = {
    "ncps_cfc": ncps_cfc,
    "ncps_ltc": ncps_ltc,
    "mambapy_pscan": mambapy_pscan,
    "mamba_loop": mamba_loop,
    "mamba_loop_unbind": mamba_loop_unbind,
    "lstm": lstm,
    "transformer": transformer,
}


def load_extra(specs: Sequence[str]) -> dict[str, ModelFactory]:
    """``{name: factory}`` from each ``module:callable`` in ``specs``."""
    extra: dict[str, ModelFactory] = {}
    for spec in specs:
        module, _, attr = spec.partition(":")
        extra.update(getattr(importlib.import_module(module), attr or "models")())
    return extra


# ------------------------------------------------------------------------------ timing --


@dataclass(frozen=True)
class ModelCase:
    """The measurement settings shared by every (model, length) case of a run."""

    batch: int = 64
    features: int = 16
    hidden: int = 64
    repeats: int = 3
    min_time: float = 1.0
    """Seconds per timed repeat of the training step (at least one iteration)."""
    threads: int = 1
    device: str = "cpu"
    flush_denormal: bool = True
    latency: bool = True
    """Measure the batch-1 forward latency too."""

    def to_argv(self) -> list[str]:
        return [f"--{k.replace('_', '-')}={v}" for k, v in asdict(self).items()]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model: nn.Module, x: torch.Tensor) -> None:
    """One forward+backward pass of a squared-output loss."""
    model.zero_grad(set_to_none=True)
    model(x).float().pow(2).mean().backward()


def bench_train(
    model: nn.Module, x: torch.Tensor, repeats: int, min_time: float
) -> tuple[list[float], list[float]]:
    """Forward+backward samples/s per repeat, by wall clock and per process CPU-second.

    One untimed warm-up step (allocator, lazy initialisation), one timed step to size the
    repeats, then ``repeats`` runs of as many steps as fill ``min_time`` seconds.
    """
    device = x.device
    model.train()
    train_step(model, x)
    _sync(device)
    started = time.perf_counter()
    train_step(model, x)
    _sync(device)
    iters = max(1, math.ceil(min_time / max(time.perf_counter() - started, 1e-6)))
    rates, cpu_rates = [], []
    for _ in range(repeats):
        _sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(iters):
            train_step(model, x)
        _sync(device)
        rates.append(x.size(0) * iters / (time.perf_counter() - wall))
        cpu_rates.append(x.size(0) * iters / max(time.process_time() - cpu, 1e-9))
    return rates, cpu_rates


@torch.no_grad()
def bench_latency(model: nn.Module, x1: torch.Tensor, repeats: int, calls: int = 20) -> list[float]:
    """Batch-1 forward latency (ms per call) in eval mode: ``repeats`` runs of ``calls``."""
    device = x1.device
    model.eval()
    model(x1)
    out = []
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        for _ in range(calls):
            model(x1)
        _sync(device)
        out.append((time.perf_counter() - started) / calls * 1e3)
    return out


def run_case(
    registry: dict[str, ModelFactory], name: str, seq_len: int, case: ModelCase
) -> dict[str, Any]:
    """Measure ``registry[name]`` at ``seq_len`` in this process (seed 0 for the weights
    and inputs). A failure is recorded under ``"error"``, not raised."""
    device = torch.device(case.device)
    torch.manual_seed(0)
    model = registry[name](case.features, case.hidden, seq_len).to(device)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    x = torch.randn(case.batch, seq_len, case.features, device=device)
    row: dict[str, Any] = {"model": name, "seq_len": seq_len, "params": params}
    try:
        rates, cpu_rates = bench_train(model, x, case.repeats, case.min_time)
        row.update(
            train_sps_median=statistics.median(rates),
            train_sps_all=rates,
            train_sps_per_cpu_s_median=statistics.median(cpu_rates),
        )
        if case.latency:
            row["fwd_b1_ms_median"] = statistics.median(bench_latency(model, x[:1], case.repeats))
    except Exception as exc:  # one model's failure is a row of the table, not a crash
        row["error"] = f"{type(exc).__name__}: {exc}"
    if device.type == "cuda":
        row["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def run_isolated(
    name: str,
    seq_len: int,
    case: ModelCase,
    *,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """:func:`run_case` in a fresh interpreter, adding the process's peak RSS (MB)."""
    argv = ["--worker", name, "--seq-len", str(seq_len), *case.to_argv()]
    for spec in extra:
        argv += ["--extra", spec]
    result = workers.run_worker(
        "harness.models", argv, env=env or workers.child_env(threads=case.threads)
    )
    if "model" not in result:
        return {"model": name, "seq_len": seq_len, **result}
    return result


PACKAGES = ("torch", "ncps", "mambapy", "numpy")
"""Packages whose versions :func:`environment` records."""


def environment() -> dict[str, Any]:
    """Versions and machine of this interpreter (the workers run the same one)."""
    return workers.versions(PACKAGES)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", required=True, help=f"a peer {list(PEERS)} or an --extra model")
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--extra", action="append", default=[], help="module:callable")
    for field, default in asdict(ModelCase()).items():
        kind = (lambda v: v == "True") if isinstance(default, bool) else type(default)
        p.add_argument(f"--{field.replace('_', '-')}", type=kind, default=default)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    case = ModelCase(**{k: getattr(args, k) for k in asdict(ModelCase())})
    torch.set_num_threads(case.threads)
    if case.flush_denormal:
        torch.set_flush_denormal(True)
    registry = {**PEERS, **load_extra(args.extra)}
    row = run_case(registry, args.worker, args.seq_len, case)
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers.emit(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
