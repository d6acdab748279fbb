"""CfC backbone: agreement with ncps, per-sample dt, wiring masks, causality, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tradezoo.policies.cfc import CfCBackbone, CfCConfig, WiredCfCCell
from tradezoo.policies.registry import make_backbone

F_IN = 5


def _net(seed: int = 0, **cfg: object) -> CfCBackbone:
    torch.manual_seed(seed)
    cfg.setdefault("d_model", 8)
    cfg.setdefault("wiring", None)  # the dense cell (ncps parity); NCP cases say so
    cfg.setdefault("backbone_units", 12)
    return CfCBackbone(F_IN, CfCConfig(**cfg)).eval()  # type: ignore[arg-type]


def _data(batch: int = 3, length: int = 9, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, F_IN, generator=g)
    dt = torch.rand(batch, length, generator=g) * 2 + 0.1
    return x, dt


def _copy_dense_to_ncps(ours: CfCBackbone, ref: torch.nn.Module) -> None:
    """ncps's backbone is Sequential(Linear, act, Linear, act, ...): index 2i = our layer i."""
    theirs = ref.rnn_cell.state_dict()
    new = {}
    for key in ours.cell.state_dict():
        if key.startswith("backbone."):
            _, index, leaf = key.split(".")
            new[key] = theirs[f"backbone.{2 * int(index)}.{leaf}"]
        elif key in ("w_tau", "A"):
            new[key] = theirs[key].reshape(-1)
        else:
            new[key] = theirs[key]
    ours.cell.load_state_dict(new)


@pytest.mark.parametrize("mode", ["default", "no_gate", "pure"])
@pytest.mark.parametrize("layers", [0, 1, 2])
def test_dense_agrees_with_ncps_batch1_uniform_dt(mode: str, layers: int) -> None:
    ncps_torch = pytest.importorskip("ncps.torch")
    ours = _net(mode=mode, backbone_layers=layers)
    ref = ncps_torch.CfC(F_IN, 8, mode=mode, backbone_units=12, backbone_layers=layers)
    _copy_dense_to_ncps(ours, ref)
    x, _ = _data(batch=1)
    with torch.no_grad():
        for ts in (None, 0.4):  # dt=None (1.0) and a uniform span
            dt = None if ts is None else torch.full((1, x.shape[1]), ts)
            expected, _ = ref(x, timespans=dt)
            torch.testing.assert_close(ours.forward_sequence(x, dt), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["default", "pure"])
def test_wired_agrees_with_ncps_given_our_masks(mode: str) -> None:
    """ncps's WiredCfCCell has the same layer structure but masks only ff1/ff2 and keeps the
    intra-layer block dense. Copying our MASKED weights into it (zeros where we mask, time
    gates included) must then give the same motor states."""
    ncps_torch = pytest.importorskip("ncps.torch")
    ncps_wirings = pytest.importorskip("ncps.wirings")
    ours = _net(d_model=12, wiring="ncp", ncp_output_size=3, mode=mode)
    mine = ours.wiring
    assert mine is not None
    wiring = ncps_wirings.NCP(
        mine.inter_neurons, mine.command_neurons, mine.motor_neurons, 1, 1, 1, 1
    )
    wiring.build(F_IN)
    wiring.adjacency_matrix = mine.adjacency_matrix.copy()
    wiring.sensory_adjacency_matrix = mine.sensory_adjacency_matrix.copy()
    ref = ncps_torch.CfC(F_IN, wiring, mode=mode)
    assert isinstance(ours.cell, WiredCfCCell)
    with torch.no_grad():
        for index, layer in enumerate(ours.cell.layers):
            theirs = getattr(ref.rnn_cell, f"layer_{index}")
            heads = ["ff1"] if mode == "pure" else ["ff1", "ff2", "time_a", "time_b"]
            for head in heads:
                masked = getattr(layer, head).weight * layer.sparsity_mask
                getattr(theirs, head).weight.copy_(masked)
                getattr(theirs, head).bias.copy_(getattr(layer, head).bias)
            if mode == "pure":
                theirs.w_tau.copy_(layer.w_tau[None])
                theirs.A.copy_(layer.A[None])
        x, _ = _data(batch=1)
        expected, _ = ref(x)
        motor = ours.explain(x)["hidden"][..., : mine.motor_neurons]
        torch.testing.assert_close(motor, expected, atol=1e-5, rtol=0)


def test_ncps_per_sample_time_spans_are_wrong_and_ours_are_not() -> None:
    """Documents ncps 1.0.1: ``timespans[:, t].squeeze()`` is [B] and broadcasts along the
    hidden axis, so with B == H unit j of every sample uses sample j's span."""
    ncps_torch = pytest.importorskip("ncps.torch")
    torch.manual_seed(0)
    ref = ncps_torch.CfC(F_IN, 4, backbone_units=6).eval()
    x, dt = _data(batch=4)
    with torch.no_grad():
        batch, _ = ref(x, timespans=dt)
        alone, _ = ref(x[1:2], timespans=dt[1:2])
    assert (batch[1:2] - alone).abs().max() > 1e-3  # ncps: batch != sample alone
    ours = _net(d_model=4, backbone_units=6, mode="default")  # ncps' (published) CfC
    _copy_dense_to_ncps(ours, ref)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_sequence(x[1:2], dt[1:2]), alone, atol=1e-5,
                                   rtol=0)


@pytest.mark.parametrize(
    "cfg",
    [{"mode": "default"}, {"mode": "no_gate"}, {"mode": "pure"},
     {"wiring": "ncp", "d_model": 12}, {"wiring": "ncp", "d_model": 12, "mode": "pure"}],
)
def test_per_sample_dt_batch_equals_samples_alone(cfg: dict) -> None:
    net = _net(**cfg)
    x, dt = _data(batch=4)
    with torch.no_grad():
        batch = net.forward_sequence(x, dt)
        for i in range(4):
            alone = net.forward_sequence(x[i : i + 1], dt[i : i + 1])
            torch.testing.assert_close(batch[i : i + 1], alone, atol=1e-5, rtol=0)
        torch.testing.assert_close(net(x, dt), batch[:, -1], atol=1e-6, rtol=0)


@pytest.mark.parametrize("cfg", [{"mode": "default"}, {"mode": "no_gate"}, {"mode": "pure"},
                                 {"wiring": "ncp", "d_model": 12}])
def test_dt_is_used(cfg: dict) -> None:
    net = _net(**cfg)
    x, dt = _data()
    with torch.no_grad():
        base = net(x, dt)
        assert (net(x, 3 * dt) - base).abs().max() > 1e-4
        changed = dt.clone()
        changed[:, 4] *= 5  # one mid-window span changes the end of the window
        assert (net(x, changed) - base).abs().max() > 1e-6
        # dt=None counts each bar as 1.0; time_unit rescales seconds.
        ones = torch.ones_like(dt)
        torch.testing.assert_close(net(x), net(x, ones))
    hourly = _net(**cfg, time_unit=3600.0)
    with torch.no_grad():
        torch.testing.assert_close(hourly(x, ones * 3600.0), net(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("mode", "heads"), [("chapter", ("ff1", "f_tau", "f_A")),
                                             ("default", ("ff1", "ff2", "time_a", "time_b"))])
def test_masks_reach_every_head_including_time_gates(mode: str, heads: tuple[str, ...]) -> None:
    net = _net(d_model=12, wiring="ncp", ncp_output_size=3, mode=mode)
    x, dt = _data()
    assert isinstance(net.cell, WiredCfCCell)
    layer = net.cell.layers[1]  # command layer: inputs from inter + own recurrent block
    mask = layer.sparsity_mask
    assert (mask == 0).any() and (mask == 1).any()
    masked = (mask == 0).nonzero()[0].tolist()
    kept = (mask == 1).nonzero()[0].tolist()
    with torch.no_grad():
        base = net(x, dt)
        for head in heads:
            weight = getattr(layer, head).weight
            original = weight.clone()
            weight[masked[0], masked[1]] += 5.0
            torch.testing.assert_close(net(x, dt), base, atol=0, rtol=0)
            weight[kept[0], kept[1]] += 5.0
            assert (net(x, dt) - base).abs().max() > 1e-6
            weight.copy_(original)
    net.train()
    net(x, dt).sum().backward()
    for head in heads:
        grad = getattr(layer, head).weight.grad
        assert grad is not None and (grad[mask == 0] == 0).all()
    # The buffer travels with state_dict (and .to(device)).
    assert any(k.endswith("sparsity_mask") for k in net.state_dict())


def test_causality_of_forward_sequence() -> None:
    for cfg in ({}, {"wiring": "ncp", "d_model": 12}):
        net = _net(**cfg)
        x, dt = _data(length=10)
        with torch.no_grad():
            base = net.forward_sequence(x, dt)
            x2, dt2 = x.clone(), dt.clone()
            x2[:, 6:] += 3.0
            dt2[:, 6:] *= 4.0
            after = net.forward_sequence(x2, dt2)
        torch.testing.assert_close(after[:, :6], base[:, :6], atol=0, rtol=0)
        assert (after[:, 6:] - base[:, 6:]).abs().max() > 1e-4


@pytest.mark.parametrize("cfg", [{}, {"mode": "pure"}, {"wiring": "ncp", "d_model": 12}])
def test_finite_for_large_and_zero_inputs_and_all_params_get_grads(cfg: dict) -> None:
    net = _net(**cfg).train()
    x, dt = _data()
    for inputs in (x * 1e3, torch.zeros_like(x)):
        assert torch.isfinite(net(inputs, dt)).all()
    net.zero_grad()
    net(x, dt).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_explain_time_constants() -> None:
    x, dt = _data()
    net = _net()
    out = net.explain(x, dt)
    assert set(out) == {"time_constant", "gate", "hidden"}
    assert out["time_constant"].shape == (3, 9, 8) and (out["time_constant"] > 0).all()
    assert ((out["gate"] > 0) & (out["gate"] < 1)).all()
    torch.testing.assert_close(out["hidden"][:, -1], net(x, dt))
    pure = _net(mode="pure", backbone_layers=0)
    out = pure.explain(x, dt)
    assert "gate" not in out
    # tau = 1 / (|w_tau| + |ff1|) at step 0 (h_0 = 0): ff1 = W_x x_0 + b.
    with torch.no_grad():
        ff1 = x[:, 0] @ pure.cell.ff1.weight[:, :F_IN].t() + pure.cell.ff1.bias
        torch.testing.assert_close(out["time_constant"][:, 0], 1 / (pure.cell.w_tau.abs()
                                                                     + ff1.abs()))
    wired = _net(d_model=12, wiring="ncp")
    assert wired.explain(x, dt)["time_constant"].shape == (3, 9, 12)


def test_seeded_and_registry() -> None:
    x, dt = _data()
    a, b = _net(seed=3), _net(seed=3)
    torch.testing.assert_close(a(x, dt), b(x, dt), atol=0, rtol=0)
    net = make_backbone("cfc", n_features=F_IN, d_model=16, wiring="ncp", sparsity_level=0.3)
    assert net(x, dt).shape == (3, 16) and net.forward_sequence(x).shape == (3, 9, 16)
    assert net.emits_sequence and net.uses_dt
    for length in (1, 7):
        assert net(torch.randn(2, length, F_IN)).shape == (2, 16)


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"mode": "fast"}, "mode must be one of"),
        ({"backbone_activation": "swish"}, "backbone_activation"),
        ({"wiring": "random"}, "wiring must be None or 'ncp'"),
        ({"wiring": "ncp", "backbone_layers": 1}, "backbone_layers must be 0 or None"),
        ({"backbone_layers": -1}, "backbone_layers must be >= 0"),
        ({"backbone_dropout": 1.0}, "backbone_dropout"),
        ({"sparsity_level": 1.5}, "sparsity_level"),
        ({"ncp_output_size": 62}, "ncp_output_size"),
        ({"time_unit": 0.0}, "time_unit"),
        ({"d_model": 0}, "d_model must be a positive integer"),
        ({"d_model": 3, "wiring": "ncp"}, "d_model must be >= 4"),
    ],
)
def test_bad_config(cfg: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CfCConfig(**cfg)


def test_bad_input() -> None:
    net = _net()
    x, dt = _data()
    with pytest.raises(ValueError, match="unknown config key"):
        make_backbone("cfc", n_features=F_IN, units=8)
    with pytest.raises(ValueError, match="input has 4 features"):
        net(x[..., :4])
    with pytest.raises(ValueError, match="dt must have shape"):
        net(x, dt[:, :3])
    for bad in (-dt, dt * np.nan, dt * 0):
        with pytest.raises(ValueError, match="dt must be finite and > 0"):
            net(x, bad)


@pytest.mark.parametrize(
    "cfg",
    [
        {},  # dense, one backbone layer
        {"backbone_layers": 0},
        {"backbone_layers": 2, "backbone_activation": "gelu"},
        {"mode": "no_gate", "backbone_activation": "silu"},
        {"mode": "pure"},
        {"wiring": "ncp", "d_model": 12},
        {"wiring": "ncp", "d_model": 12, "mode": "no_gate"},
        {"wiring": "ncp", "d_model": 12, "mode": "pure"},
    ],
)
def test_inference_fast_path_equals_autograd_path(cfg: dict) -> None:
    """Under ``torch.no_grad`` the scan runs ``_scan_inference`` (buffers, folded gate,
    wavefront over wired layers); it must give the autograd path's values to 1e-6, for
    dt=None, a uniform dt tensor and per-sample dt, in ``forward`` and ``forward_sequence``."""
    net = _net(**cfg, time_unit=2.0)
    x, dt = _data(batch=3, length=11)
    for span in (None, torch.full_like(dt, 0.7), dt):
        for method in (net.forward, net.forward_sequence):
            expected = method(x, span).detach()  # autograd path (grad enabled)
            with torch.no_grad():
                fast = method(x, span)
            assert fast.shape == expected.shape
            torch.testing.assert_close(fast, expected, atol=1e-6, rtol=1e-6)
    # Batch 1 (the latency case) and L = 1 (shorter than the wavefront's skew).
    for length in (1, 11):
        expected = net(x[:1, :length], dt[:1, :length]).detach()
        with torch.no_grad():
            torch.testing.assert_close(net(x[:1, :length], dt[:1, :length]), expected,
                                       atol=1e-6, rtol=1e-6)


def test_inference_fast_path_is_taken_only_without_autograd_or_dropout() -> None:
    net = _net(backbone_dropout=0.5)
    x, _ = _data()
    calls: list[int] = []
    original = net._scan_inference

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    net._scan_inference = spy  # type: ignore[method-assign]
    with torch.no_grad():
        net(x)  # eval mode: dropout off -> fast path
        assert calls == [1]
        net.train()  # dropout active: the fast path has none, so it must not run
        first, second = net(x), net(x)
    assert calls == [1]
    assert (first - second).abs().max() > 0  # dropout did act
    net(x)  # autograd enabled -> training path
    assert calls == [1]


@pytest.mark.parametrize(
    "cfg",
    [
        {},  # dense, one backbone layer
        {"backbone_layers": 0},
        {"backbone_layers": 2, "backbone_activation": "gelu"},
        {"mode": "no_gate"},
        {"mode": "pure"},
        {"wiring": "ncp", "d_model": 12},
        {"wiring": "ncp", "d_model": 12, "mode": "pure"},
    ],
)
def test_bf16_autocast_runs_the_scan_in_float32(cfg: dict) -> None:
    """Under CPU bf16 autocast, with and without autograd (the inference path writes into
    float32 buffers), for dt=None, uniform and per-sample dt: the scan runs in float32, so it
    returns float32 and the float32 values; a bf16 input (from an autocast layer before the
    backbone) is widened first."""
    net = _net(**cfg, time_unit=2.0)
    x, dt = _data(batch=3, length=11)
    for span in (None, torch.full_like(dt, 0.7), dt):
        for method in (net.forward, net.forward_sequence):
            expected = method(x, span).detach()
            for grad in (True, False):
                with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16):
                    got = method(x, span)
                    from_bf16 = method(x.bfloat16(), span)
                assert got.dtype == torch.float32 and from_bf16.dtype == torch.float32
                torch.testing.assert_close(got.detach(), expected, atol=1e-6, rtol=1e-6)
                torch.testing.assert_close(from_bf16.detach(), method(x.bfloat16().float(), span)
                                           .detach(), atol=1e-6, rtol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        explained = net.explain(x, dt)
    for key, value in net.explain(x, dt).items():
        torch.testing.assert_close(explained[key], value, atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------- mode="chapter" (the chapter's CfC)


def test_the_default_is_the_published_cfc_and_the_chapter_cfc_an_option() -> None:
    assert CfCConfig().mode == "default"
    x, dt = _data()
    default, explicit = _net(seed=4), _net(seed=4, mode="default")
    with torch.no_grad():
        torch.testing.assert_close(default(x, dt), explicit(x, dt), atol=0, rtol=0)
    assert hasattr(default.cell, "time_a") and not hasattr(default.cell, "log_tau")
    chapter = _net(seed=4, mode="chapter")
    assert {"f_tau.weight", "f_A.weight", "log_tau", "A"} <= set(chapter.cell.state_dict())
    assert not hasattr(chapter.cell, "time_a")


@pytest.mark.parametrize(
    "cfg", [{}, {"backbone_layers": 0}, {"backbone_layers": 2}, {"wiring": "ncp", "d_model": 12}]
)
def test_chapter_mode_shapes_round_trip_and_inference_path(cfg: dict) -> None:
    net = _net(mode="chapter", time_unit=2.0, **cfg)
    d_model = cfg.get("d_model", 8)
    x, dt = _data(batch=3, length=11)
    assert net(x, dt).shape == (3, d_model)
    assert net.forward_sequence(x, dt).shape == (3, 11, d_model)
    for span in (None, torch.full_like(dt, 0.7), dt):  # the no-grad path equals autograd's
        for method in (net.forward, net.forward_sequence):
            expected = method(x, span).detach()
            with torch.no_grad():
                torch.testing.assert_close(method(x, span), expected, atol=1e-6, rtol=1e-6)
    # The config round-trips through its dict (checkpoints) and rebuilds the same model.
    config = CfCConfig(**net.config.to_dict())
    assert config == net.config and config.mode == "chapter"
    rebuilt = CfCBackbone(F_IN, config).eval()
    rebuilt.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, dt), net(x, dt), atol=0, rtol=0)


def test_chapter_mode_single_step_by_hand() -> None:
    """One step from h_0 = 0 without backbone, against the gate written in its other closed
    form ``1 / (1 + (ts / tau)^f_tau exp(f_tau f_A))`` with f_tau = softplus(.)."""
    net = _net(mode="chapter", backbone_layers=0, time_unit=2.0)
    cell = net.cell
    with torch.no_grad():
        cell.log_tau.copy_(torch.linspace(-1.0, 1.0, 8))
        cell.A.copy_(torch.linspace(-0.5, 0.7, 8))
    x, dt = _data(batch=2, length=1)
    ts = (dt / 2.0).double()  # [B, 1]
    xd = x[:, 0].double()
    weights = {name: getattr(cell, name).weight.detach().double()[:, :F_IN]
               for name in ("ff1", "f_tau", "f_A")}
    biases = {name: getattr(cell, name).bias.detach().double() for name in weights}
    ff1, raw_tau, f_a = (xd @ weights[n].t() + biases[n] for n in ("ff1", "f_tau", "f_A"))
    f_tau = torch.log1p(torch.exp(raw_tau))
    tau = torch.exp(cell.log_tau.detach().double())
    gate = 1.0 / (1.0 + (ts / tau) ** f_tau * torch.exp(f_tau * f_a))
    A = cell.A.detach().double()
    expected = gate * torch.tanh(ff1) + (1 - gate) * A
    with torch.no_grad():
        torch.testing.assert_close(net(x, dt).double(), expected, atol=1e-6, rtol=0)
    explained = net.explain(x, dt)
    torch.testing.assert_close(explained["gate"][:, 0].double(), gate, atol=1e-6, rtol=0)
    torch.testing.assert_close(explained["time_constant"][:, 0].double(),
                               tau * torch.exp(-f_a), atol=1e-5, rtol=1e-5)


def test_chapter_mode_relaxes_to_the_steady_state_with_elapsed_time() -> None:
    """Short spans keep the instantaneous response tanh(ff1); long spans reach A; the output
    moves monotonically between the two as the last span grows; time_unit rescales dt."""
    net = _net(mode="chapter", backbone_layers=0)
    with torch.no_grad():
        net.cell.A.copy_(torch.linspace(-0.9, 0.9, 8))
    x, dt = _data(batch=2, length=1)
    with torch.no_grad():
        ff1 = x[:, 0] @ net.cell.ff1.weight[:, :F_IN].t() + net.cell.ff1.bias
        near = net(x, torch.full_like(dt, 1e-12))
        far = net(x, torch.full_like(dt, 1e12))
        torch.testing.assert_close(near, torch.tanh(ff1), atol=1e-3, rtol=0)
        torch.testing.assert_close(far, net.cell.A.expand_as(far), atol=1e-3, rtol=0)
        spans = torch.logspace(-3, 3, 13)
        outs = torch.stack([net(x, torch.full_like(dt, float(s))) for s in spans])  # [13, B, H]
        distance = (outs - net.cell.A).abs()  # shrinks as the span grows
        assert (distance[1:] <= distance[:-1] + 1e-7).all()
    x9, dt9 = _data()
    seq = _net(mode="chapter")
    with torch.no_grad():
        base = seq(x9, dt9)
        assert (seq(x9, 3 * dt9) - base).abs().max() > 1e-4
        torch.testing.assert_close(seq(x9), seq(x9, torch.ones_like(dt9)))
    hourly = _net(mode="chapter", time_unit=3600.0)
    with torch.no_grad():
        torch.testing.assert_close(hourly(x9, torch.ones_like(dt9) * 3600.0), seq(x9),
                                   atol=1e-6, rtol=0)


@pytest.mark.parametrize("cfg", [{}, {"wiring": "ncp", "d_model": 12}])
def test_chapter_mode_gradients_and_causality(cfg: dict) -> None:
    net = _net(mode="chapter", **cfg).train()
    x, dt = _data(length=10)
    net(x, dt).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    with torch.no_grad():
        base = net.forward_sequence(x, dt)
        x2, dt2 = x.clone(), dt.clone()
        x2[:, 6:] += 3.0
        dt2[:, 6:] *= 4.0
        after = net.forward_sequence(x2, dt2)
    torch.testing.assert_close(after[:, :6], base[:, :6], atol=0, rtol=0)
    assert (after[:, 6:] - base[:, 6:]).abs().max() > 1e-4
