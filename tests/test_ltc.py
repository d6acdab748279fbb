"""LTC backbone: ncps agreement (values and gradients), hand-written backward, per-sample dt,
positivity, masks, causality, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tradezoo.policies.ltc import LTCBackbone, LTCConfig, _LTCRecurrence
from tradezoo.policies.registry import make_backbone

F_IN = 5


def _net(seed: int = 0, **cfg: object) -> LTCBackbone:
    torch.manual_seed(seed)
    cfg.setdefault("d_model", 8)
    return LTCBackbone(F_IN, LTCConfig(**cfg)).eval()  # type: ignore[arg-type]


def _data(batch: int = 3, length: int = 7, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, F_IN, generator=g)
    dt = torch.rand(batch, length, generator=g) * 2 + 0.1
    return x, dt


def _ncps_twin(ours: LTCBackbone) -> torch.nn.Module:
    """ncps LTC (implicit softplus constraints) with our wiring matrices and our raw weights."""
    ncps_torch = pytest.importorskip("ncps.torch")
    ncps_wirings = pytest.importorskip("ncps.wirings")
    wiring = ncps_wirings.Wiring(ours.wiring.units)
    wiring.adjacency_matrix = ours.wiring.adjacency_matrix.copy()
    wiring.build(F_IN)
    wiring.sensory_adjacency_matrix = ours.wiring.sensory_adjacency_matrix.copy()
    wiring.set_output_dim(ours.wiring.output_dim)
    ref = ncps_torch.LTC(F_IN, wiring, return_sequences=True)
    renamed = {"gleak_raw": "gleak", "cm_raw": "cm", "w_raw": "w", "sensory_w_raw": "sensory_w"}
    with torch.no_grad():
        for name, tensor in ours.cell.state_dict().items():
            ref.rnn_cell._params[renamed.get(name, name)].copy_(tensor)
    return ref


@pytest.mark.parametrize("backend", ["torch", "native"])
@pytest.mark.parametrize("wiring", [None, "ncp"])
def test_agrees_with_ncps_batch1_uniform_dt_values_and_gradients(
    wiring: str | None, backend: str, native_kernel: None
) -> None:
    """Both backends (the PyTorch reference and the compiled kernel) agree with ncps."""
    ours = _net(d_model=10, wiring=wiring, ncp_output_size=3 if wiring else None,
                backend=backend)
    ref = _ncps_twin(ours)
    x, _ = _data(batch=1)
    for span in (None, 0.6):
        dt = None if span is None else torch.full((1, x.shape[1]), span)
        ours.zero_grad()
        ref.zero_grad()
        mine = ours.cell(x, 1.0 if dt is None else dt)  # motor outputs [1, L, motor]
        theirs, _ = ref(x, timespans=dt)
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)
        weight = torch.randn_like(mine)
        (mine * weight).sum().backward()
        (theirs * weight).sum().backward()
        renamed = {"gleak_raw": "gleak", "cm_raw": "cm", "w_raw": "w",
                   "sensory_w_raw": "sensory_w"}
        for name, p in ours.cell.named_parameters():
            other = ref.rnn_cell._params[renamed.get(name, name)].grad
            torch.testing.assert_close(p.grad, other, atol=1e-4, rtol=1e-4, msg=name)


def test_hand_written_backward_passes_gradcheck() -> None:
    torch.manual_seed(0)
    B, L, H = 2, 3, 4
    f64 = torch.float64
    args = (
        torch.randn(B, L, H, dtype=f64),  # c1
        torch.rand(B, L, H, dtype=f64) + 2,  # c2
        torch.rand(B, L, H, dtype=f64) + 1,  # cm_t
        torch.rand(H, H, dtype=f64) * 5,  # sigma
        torch.randn(H, H, dtype=f64),  # -sigma mu
        torch.randn(H, H, dtype=f64),  # W erev
        torch.rand(H, H, dtype=f64),  # W
    )
    args = tuple(a.requires_grad_() for a in args)
    assert torch.autograd.gradcheck(lambda *a: _LTCRecurrence.apply(*a, 3), args)


@pytest.mark.parametrize("cfg", [{}, {"wiring": "ncp", "d_model": 10}, {"ode_unfolds": 2}])
def test_per_sample_dt_batch_equals_samples_alone(cfg: dict) -> None:
    net = _net(**cfg)
    x, dt = _data(batch=4)
    with torch.no_grad():
        batch = net.forward_sequence(x, dt)
        for i in range(4):
            alone = net.forward_sequence(x[i : i + 1], dt[i : i + 1])
            torch.testing.assert_close(batch[i : i + 1], alone, atol=1e-5, rtol=0)
        torch.testing.assert_close(net(x, dt), batch[:, -1], atol=1e-6, rtol=0)
    # The training path (custom autograd Function) gives the same values.
    torch.testing.assert_close(net(x, dt).detach(), batch[:, -1], atol=1e-6, rtol=0)


def test_dt_and_unfolds_are_used() -> None:
    net = _net()
    x, dt = _data()
    with torch.no_grad():
        base = net(x, dt)
        assert (net(x, 3 * dt) - base).abs().max() > 1e-4
        changed = dt.clone()
        changed[:, 3] *= 5
        assert (net(x, changed) - base).abs().max() > 1e-6
        ones = torch.ones_like(dt)
        torch.testing.assert_close(net(x), net(x, ones))
        hourly = _net(time_unit=3600.0)
        torch.testing.assert_close(hourly(x, ones * 3600.0), net(x), atol=1e-6, rtol=0)
        assert (_net(ode_unfolds=2)(x, dt) - base).abs().max() > 1e-5


def test_positivity_by_construction_after_large_optimizer_steps() -> None:
    net = _net(wiring="ncp", d_model=10).train()
    cell = net.cell
    optimizer = torch.optim.Adam(net.parameters(), lr=2.0)
    x, dt = _data()
    for _ in range(6):
        optimizer.zero_grad()
        # Push every positive quantity towards (and past) zero as hard as possible.
        loss = net(x, dt).sum() + 100 * (cell.w.sum() + cell.sensory_w.sum() + cell.cm.sum()
                                         + cell.gleak.sum())
        loss.backward()
        optimizer.step()
    assert cell.w_raw.min() < -5  # the raw parameters did go far negative ...
    for name in ("w", "sensory_w", "cm", "gleak"):
        value = getattr(cell, name)
        assert (value >= 0).all(), name  # ... the effective ones cannot
    assert (cell.cm > 0).all() and (cell.gleak > 0).all()
    assert (cell.w[cell.sparsity_mask > 0] > 0).all()
    assert torch.isfinite(net(x, dt)).all()


def test_masks_are_applied() -> None:
    net = _net(wiring="ncp", d_model=10)
    cell = net.cell
    x, dt = _data()
    mask, sensory_mask = cell.sparsity_mask, cell.sensory_sparsity_mask
    assert (mask == 0).any() and (sensory_mask == 0).any()
    i, j = (mask == 0).nonzero()[0].tolist()
    si, sj = (sensory_mask == 0).nonzero()[0].tolist()
    ki, kj = (mask == 1).nonzero()[0].tolist()
    with torch.no_grad():
        base = net.forward_sequence(x, dt)
        originals = {n: p.clone() for n, p in cell.named_parameters()}
        for name in ("w_raw", "sigma", "mu", "erev"):
            getattr(cell, name)[i, j] += 3.0
        for name in ("sensory_w_raw", "sensory_sigma", "sensory_mu", "sensory_erev"):
            getattr(cell, name)[si, sj] += 3.0
        torch.testing.assert_close(net.forward_sequence(x, dt), base, atol=0, rtol=0)
        cell.w_raw[ki, kj] += 3.0
        assert (net.forward_sequence(x, dt) - base).abs().max() > 1e-6
        for n, p in cell.named_parameters():
            p.copy_(originals[n])
    net.train()
    net(x, dt).sum().backward()
    assert cell.w_raw.grad is not None and (cell.w_raw.grad[mask == 0] == 0).all()
    assert cell.sigma.grad is not None and (cell.sigma.grad[mask == 0] == 0).all()


def test_causality_of_forward_sequence() -> None:
    net = _net()
    x, dt = _data(length=9)
    with torch.no_grad():
        base = net.forward_sequence(x, dt)
        x2, dt2 = x.clone(), dt.clone()
        x2[:, 5:] += 3.0
        dt2[:, 5:] *= 4.0
        after = net.forward_sequence(x2, dt2)
    torch.testing.assert_close(after[:, :5], base[:, :5], atol=0, rtol=0)
    assert (after[:, 5:] - base[:, 5:]).abs().max() > 1e-4


@pytest.mark.parametrize("cfg", [{}, {"wiring": "ncp", "d_model": 10}])
def test_finite_for_large_and_zero_inputs_and_all_params_get_grads(cfg: dict) -> None:
    net = _net(**cfg).train()
    x, dt = _data()
    for inputs in (x * 1e3, torch.zeros_like(x)):
        out = net(inputs, dt)
        assert torch.isfinite(out).all()
        out.sum().backward()
    net.zero_grad()
    net(x, dt).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_effective_time_constants() -> None:
    net = _net()
    x, dt = _data()
    tau = net.effective_time_constants(x, dt)
    assert tau.shape == (3, 7, 8) and (tau > 0).all()
    out = net.explain(x, dt)
    torch.testing.assert_close(out["time_constant"], tau)
    cell = net.cell
    # Recompute neuron 0 at the last bar by hand: cm / (gleak + sum W s(v) + den_s).
    v = out["hidden"][:, -1]  # [B, H]
    with torch.no_grad():
        xs = x[:, -1] * cell.input_w + cell.input_b  # [B, F]
        gates = torch.sigmoid(cell.sensory_sigma[:, 0] * (xs - cell.sensory_mu[:, 0]))
        den_s = (gates * cell.sensory_w[:, 0]).sum(-1)
        syn = torch.sigmoid(cell.sigma[:, 0] * (v - cell.mu[:, 0]))  # [B, H_i]
        den = (syn * cell.w[:, 0]).sum(-1)
        expected = cell.cm[0] / (cell.gleak[0] + den + den_s)
    torch.testing.assert_close(tau[:, -1, 0], expected)
    # Longer bars leave the potentials elsewhere, so tau changes with dt as well.
    assert (net.effective_time_constants(x, dt * 4) - tau).abs().max() > 1e-6


def test_seeded_registry_and_shapes() -> None:
    x, dt = _data()
    a, b = _net(seed=2), _net(seed=2)
    torch.testing.assert_close(a(x, dt), b(x, dt), atol=0, rtol=0)
    net = make_backbone("ltc", n_features=F_IN, d_model=12, wiring="ncp", ncp_output_size=4)
    assert isinstance(net.project, torch.nn.Linear)
    assert net(x, dt).shape == (3, 12) and net.forward_sequence(x).shape == (3, 7, 12)
    for length in (1, 2):
        assert net(torch.randn(2, length, F_IN)).shape == (2, 12)


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"ode_unfolds": 0}, "ode_unfolds must be a positive integer"),
        ({"wiring": "dense"}, "wiring must be None or 'ncp'"),
        ({"sparsity_level": -0.1}, "sparsity_level"),
        ({"ncp_output_size": 70}, "ncp_output_size"),
        ({"epsilon": -1.0}, "epsilon"),
        ({"time_unit": float("inf")}, "time_unit"),
        ({"d_model": 2, "wiring": "ncp"}, "d_model must be >= 4"),
    ],
)
def test_bad_config(cfg: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LTCConfig(**cfg)


def test_bad_input() -> None:
    net = _net()
    x, dt = _data()
    with pytest.raises(ValueError, match="unknown config key"):
        make_backbone("ltc", n_features=F_IN, unfolds=3)
    with pytest.raises(ValueError, match="input has 6 features"):
        net(torch.randn(2, 3, 6))
    for bad in (-dt, dt * np.nan, dt * 0, dt * np.inf):
        with pytest.raises(ValueError, match="dt must be finite and > 0"):
            net(x, bad)


@pytest.mark.parametrize("backend", ["torch", "native"])
@pytest.mark.parametrize(
    "cfg", [{}, {"ode_unfolds": 1}, {"wiring": "ncp", "d_model": 10, "ode_unfolds": 3}]
)
def test_inference_fast_path_equals_autograd_path(
    cfg: dict, backend: str, native_kernel: None
) -> None:
    """Under ``torch.no_grad`` the potentials come from ``_run_inference`` (stacked synaptic
    sums, preallocated buffers) or the kernel's forward without saving; they must equal the
    same backend's autograd path to 1e-6 for dt=None and per-sample dt, in ``forward`` and
    ``forward_sequence``, batch 3 and batch 1."""
    net = _net(**cfg, time_unit=2.0, backend=backend)
    x, dt = _data(batch=3, length=9)
    for span in (None, dt):
        for method in (net.forward, net.forward_sequence):
            for batch in (3, 1):
                xb, db = x[:batch], None if span is None else span[:batch]
                expected = method(xb, db).detach()  # autograd path (custom Function)
                with torch.no_grad():
                    fast = method(xb, db)
                assert fast.shape == expected.shape
                torch.testing.assert_close(fast, expected, atol=1e-6, rtol=1e-6)
