"""The backbone contract, checked for every registered architecture, plus the baselines' own
rules (``lstm``, ``gru``, ``transformer``, ``mlp``).

Every name in ``ARCHITECTURES`` gets small configs (``d_model=16``, one layer where the config
has ``n_layers``; ``window`` filled for ``mlp``): shapes for L in 1, 7, 64, 257 (or a window
error), gradients reach every parameter, finite outputs for huge and zero inputs, seeded
determinism, batch == one by one (per-sample ``dt`` for ``uses_dt``), state-dict round trip,
within-window causality, and the bad-input errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from mixed_precision import BF16_RELATIVE_TOLERANCE, relative_error
from torch import Tensor, nn

from tradezoo.policies import ARCHITECTURES, Backbone, make_backbone, make_config
from tradezoo.policies.baselines import (
    MLPBackbone,
    MLPConfig,
    TransformerBackbone,
    TransformerConfig,
    sinusoidal_positions,
)
from tradezoo.policies.registry import get_architecture

NAMES = list(ARCHITECTURES)
N_FEATURES = 5
D_MODEL = 16


@pytest.fixture(autouse=True)
def _cpu_settings() -> Iterator[None]:
    """Flush denormals (as the training entry points do) and use one thread (tiny models gain
    nothing from more on a shared machine); restore both afterwards."""
    threads = torch.get_num_threads()
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)


def small_cfg(name: str, window: int | None = None) -> dict[str, Any]:
    """Small config kwargs: d_model 16, one layer where possible, ``window`` where needed."""
    fields = get_architecture(name).config_cls.field_names()
    cfg: dict[str, Any] = {"d_model": D_MODEL}
    if "n_layers" in fields:
        cfg["n_layers"] = 1
    if "window" in fields and window is not None:
        cfg["window"] = window
    return cfg


def build(name: str, window: int, seed: int = 0, n_features: int = N_FEATURES) -> Backbone:
    torch.manual_seed(seed)
    return make_backbone(name, n_features, **small_cfg(name, window))


def min_window(name: str, window: int) -> int:
    arch = get_architecture(name)
    return arch.backbone_cls.min_window(make_config(name, **small_cfg(name, window)))


def usable_window(name: str, at_least: int) -> int:
    """A window the small config accepts, at least ``at_least`` bars."""
    return max(at_least, min_window(name, at_least))


def inputs(batch: int, window: int, seed: int = 1,
           n_features: int = N_FEATURES) -> tuple[Tensor, Tensor]:
    """``x [B, L, F]`` and a per-sample positive ``dt [B, L]`` (irregular spacing)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, window, n_features, generator=generator)
    dt = 0.5 + torch.rand(batch, window, generator=generator) * 2.0
    return x, dt


def run(net: Backbone, x: Tensor, dt: Tensor | None) -> Tensor:
    return net(x, dt if net.uses_dt else None)


# -- shapes and window rules ----------------------------------------------------------------


@pytest.mark.parametrize("window", [1, 7, 64, 257])
@pytest.mark.parametrize("name", NAMES)
def test_output_shape_or_window_error(name: str, window: int) -> None:
    net = build(name, window)
    x, dt = inputs(2, window)
    if window < min_window(name, window):
        with pytest.raises(ValueError, match="window"):
            run(net, x, dt)
        return
    with torch.no_grad():
        out = run(net, x, dt)
        assert out.shape == (2, D_MODEL) and out.dtype == torch.float32
        if net.emits_sequence:
            seq = net.forward_sequence(x, dt if net.uses_dt else None)
            assert seq.shape == (2, window, D_MODEL)


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_receives_a_finite_gradient(name: str) -> None:
    window = usable_window(name, 32)
    net = build(name, window).train()
    x, dt = inputs(3, window)
    run(net, x, dt).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: parameters without gradient: {missing}"
    bad = [n for n, p in net.named_parameters() if p.grad is not None
           and not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}: non-finite gradients in {bad}"


@pytest.mark.parametrize("scale", [1e3, 0.0])
@pytest.mark.parametrize("name", NAMES)
def test_outputs_and_gradients_finite_for_huge_and_zero_inputs(name: str, scale: float) -> None:
    window = usable_window(name, 24)
    net = build(name, window).train()
    x, dt = inputs(2, window)
    x = (x * scale).requires_grad_(True)
    out = run(net, x, dt)
    assert torch.isfinite(out).all(), f"{name}: non-finite output for inputs x {scale}"
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# -- mixed precision (bf16 autocast) ------------------------------------------------------------

def _amp_step(name: str, window: int, amp: bool) -> tuple[Tensor, Tensor, Tensor]:
    """A fresh ``name`` backbone (seed 0): no_grad eval output, then one training step (SGD)
    under CPU bf16 autocast when ``amp``. Returns ``(eval out, train out, flat gradient)``."""
    net = build(name, window)
    x, dt = inputs(4, window)
    weight = torch.randn(4, D_MODEL, generator=torch.Generator().manual_seed(3))
    net.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        evaluated = run(net, x, dt)
    net.train()
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        trained = run(net, x, dt)
    (trained.float() * weight).sum().backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    before = [p.detach().clone() for p in net.parameters()]
    optimiser.step()
    after = list(net.parameters())
    assert all(torch.isfinite(p).all() for p in after), f"{name}: non-finite parameters"
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    return evaluated, trained.detach(), torch.cat([g.flatten() for g in grads])


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_training_step_and_evaluation_match_float32(name: str) -> None:
    window = usable_window(name, 32)
    eval32, train32, grad32 = _amp_step(name, window, amp=False)
    eval16, train16, grad16 = _amp_step(name, window, amp=True)
    assert grad16.shape == grad32.shape, f"{name}: autocast changed which parameters get grads"
    for what, got, want in (("no_grad evaluation", eval16, eval32),
                            ("training output", train16, train32),
                            ("gradient", grad16, grad32)):
        error = relative_error(got, want)
        assert error <= BF16_RELATIVE_TOLERANCE, f"{name}: {what} off by {error:.4f} under bf16"


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_identical_outputs(name: str) -> None:
    window = usable_window(name, 16)
    x, dt = inputs(2, window)
    outs = []
    for _ in range(2):
        net = build(name, window, seed=123).eval()
        with torch.no_grad():
            outs.append(run(net, x, dt))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    other = build(name, window, seed=124).eval()
    with torch.no_grad():
        assert not torch.equal(run(other, x, dt), outs[0]), "the seed must matter"


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_samples_one_by_one(name: str) -> None:
    window = usable_window(name, 24)
    net = build(name, window).eval()
    x, dt = inputs(4, window)
    with torch.no_grad():
        batched = run(net, x, dt)
        single = torch.cat([run(net, x[i : i + 1], dt[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_dt_is_used_exactly_by_uses_dt_backbones(name: str) -> None:
    window = usable_window(name, 16)
    net = build(name, window).eval()
    x, dt = inputs(2, window)
    with torch.no_grad():
        if net.uses_dt:
            assert not torch.allclose(net(x, dt), net(x, dt * 3.0))
        else:
            torch.testing.assert_close(net(x, dt), net(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name: str) -> None:
    window = usable_window(name, 16)
    source = build(name, window, seed=0).eval()
    target = build(name, window, seed=99).eval()
    target.load_state_dict(source.state_dict())
    assert set(target.state_dict()) == set(source.state_dict())
    x, dt = inputs(2, window)
    with torch.no_grad():
        torch.testing.assert_close(run(target, x, dt), run(source, x, dt), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_sequence_output_is_causal_within_the_window(name: str) -> None:
    window = usable_window(name, 20)
    net = build(name, window).eval()
    if not net.emits_sequence:
        pytest.skip(f"{name} does not emit a sequence")
    x, dt = inputs(2, window)
    use_dt = dt if net.uses_dt else None
    with torch.no_grad():
        base = net.forward_sequence(x, use_dt)
        for i in sorted({0, window // 3, window // 2, window - 2}):
            x2 = x.clone()
            x2[:, i + 1 :] = torch.randn_like(x2[:, i + 1 :]) * 5.0
            dt2 = None
            if use_dt is not None:
                dt2 = use_dt.clone()
                dt2[:, i + 1 :] = 7.0
            perturbed = net.forward_sequence(x2, dt2)
            torch.testing.assert_close(perturbed[:, : i + 1], base[:, : i + 1],
                                       rtol=0, atol=1e-6)
            assert not torch.allclose(perturbed[:, i + 1 :], base[:, i + 1 :])


@pytest.mark.parametrize("name", NAMES)
def test_explain_returns_detached_finite_tensors(name: str) -> None:
    window = usable_window(name, 16)
    net = build(name, window).eval()
    x, dt = inputs(2, window)
    result = net.explain(x, dt if net.uses_dt else None)
    assert isinstance(result, dict)
    for key, value in result.items():
        assert isinstance(value, Tensor) and not value.requires_grad, key
        assert torch.isfinite(value).all(), key


@pytest.mark.parametrize("name", NAMES)
def test_no_weight_decay_names_exist(name: str) -> None:
    net = build(name, usable_window(name, 16))
    names = net.no_weight_decay()
    assert isinstance(names, set)
    parameters = dict(net.named_parameters())
    assert all(isinstance(n, str) and n in parameters for n in names), (
        f"{name}: unknown names {sorted(set(names) - set(parameters))}"
    )


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_feature_count_mismatch_names_both_numbers(name: str) -> None:
    window = usable_window(name, 16)
    net = build(name, window, n_features=5)
    x, dt = inputs(2, window, n_features=7)
    with pytest.raises(ValueError, match=r"(?s)(7.*5|5.*7)"):
        run(net, x, dt)


@pytest.mark.parametrize("name", NAMES)
def test_dt_of_the_wrong_shape_is_rejected(name: str) -> None:
    window = usable_window(name, 16)
    net = build(name, window)
    x, _ = inputs(2, window)
    with pytest.raises(ValueError, match="dt"):
        net(x, torch.ones(2, window + 1))


@pytest.mark.parametrize("name", NAMES)
def test_unknown_config_key_lists_valid_keys(name: str) -> None:
    with pytest.raises(ValueError, match="bogus_key") as info:
        make_backbone(name, N_FEATURES, bogus_key=1)
    for field in get_architecture(name).config_cls.field_names():
        assert field in str(info.value)


def test_unknown_architecture_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="nope") as info:
        make_backbone("nope", N_FEATURES)
    assert all(name in str(info.value) for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_non_positive_d_model_is_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="d_model"):
        make_config(name, d_model=0)


# -- baselines: their own rules ---------------------------------------------------------------


def test_registry_maps_baseline_names_to_their_classes() -> None:
    for name in ("lstm", "gru", "transformer", "mlp"):
        arch = ARCHITECTURES[name]
        assert arch.backbone_cls.name == name
        assert arch.backbone_cls.config_cls is arch.config_cls


@pytest.mark.parametrize(("name", "rnn"), [("lstm", nn.LSTM), ("gru", nn.GRU)])
def test_rnn_baselines_are_the_torch_rnn_last_hidden_state(name: str, rnn: type) -> None:
    torch.manual_seed(0)
    net = make_backbone(name, N_FEATURES, d_model=8, n_layers=2, dropout=0.1).eval()
    assert isinstance(net.rnn, rnn) and net.rnn.num_layers == 2 and net.rnn.dropout == 0.1
    x, _ = inputs(3, 10)
    with torch.no_grad():
        reference, _ = net.rnn(x)
        torch.testing.assert_close(net(x), reference[:, -1], rtol=0, atol=0)
        torch.testing.assert_close(net.explain(x)["hidden_norm"], reference.norm(dim=-1))


@pytest.mark.parametrize("name", ["lstm", "gru", "transformer", "mlp"])
def test_dropout_outside_unit_interval_is_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="dropout"):
        make_config(name, dropout=1.0)


def test_mlp_needs_a_window() -> None:
    with pytest.raises(ValueError, match="window"):
        make_backbone("mlp", N_FEATURES)
    with pytest.raises(ValueError, match="window"):
        MLPConfig(window=0)


def test_mlp_rejects_another_window_naming_both_numbers() -> None:
    net = make_backbone("mlp", N_FEATURES, window=12, d_model=8)
    with pytest.raises(ValueError, match=r"(?s)window=12.*window=11"):
        net(torch.zeros(2, 11, N_FEATURES))
    with pytest.raises(ValueError, match=r"(?s)12.*13"):
        MLPBackbone.check_window(net.config, 13)


def test_mlp_lag_contribution_reflects_which_bars_matter() -> None:
    torch.manual_seed(0)
    net = make_backbone("mlp", N_FEATURES, window=6, d_model=8).eval()
    x = torch.zeros(1, 6, N_FEATURES)
    x[0, 4] = 1.0  # only bar 4 carries a signal
    contribution = net.explain(x)["lag_contribution"]
    assert contribution.shape == (1, 6)
    assert contribution[0, 4] > 0 and torch.count_nonzero(contribution) == 1


def test_transformer_config_rules() -> None:
    with pytest.raises(ValueError, match="n_heads"):
        TransformerConfig(d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="positions"):
        TransformerConfig(positions="rotary")  # type: ignore[arg-type]


def test_transformer_sinusoidal_positions_are_prefix_consistent() -> None:
    torch.manual_seed(0)
    net = make_backbone("transformer", N_FEATURES, d_model=16, n_heads=2).eval()
    x, _ = inputs(2, 12)
    with torch.no_grad():
        full = net.forward_sequence(x)
        for i in (0, 5, 11):
            torch.testing.assert_close(net(x[:, : i + 1]), full[:, i], rtol=0, atol=1e-5)


def test_sinusoidal_table_matches_the_formula() -> None:
    table = sinusoidal_positions(9, 6, torch.device("cpu"), torch.float32)
    pos, i = 7, 1  # column pair (2i, 2i + 1)
    angle = pos / 10000 ** (2 * i / 6)
    assert table[pos, 2 * i].item() == pytest.approx(torch.sin(torch.tensor(angle)).item())
    assert table[pos, 2 * i + 1].item() == pytest.approx(torch.cos(torch.tensor(angle)).item())
    assert sinusoidal_positions(3, 5, torch.device("cpu"), torch.float32).shape == (3, 5)


def test_transformer_learned_positions_index_by_age_and_take_any_length() -> None:
    torch.manual_seed(0)
    net = make_backbone("transformer", N_FEATURES, d_model=16, n_heads=2,
                        positions="learned", max_len=8).eval()
    assert isinstance(net, TransformerBackbone) and net.pos_embedding is not None
    x, _ = inputs(1, 20)
    with torch.no_grad():
        embedded = net._embed(x) - net.input_proj(x)  # [1, 20, 16]: the position codes
        torch.testing.assert_close(embedded[0, -1], net.pos_embedding[0])  # newest = age 0
        torch.testing.assert_close(embedded[0, 0], net.pos_embedding[7])  # clamped age
        assert net(x).shape == (1, 16)


def test_transformer_attention_map_is_a_distribution_over_the_window() -> None:
    torch.manual_seed(0)
    net = make_backbone("transformer", N_FEATURES, d_model=16, n_heads=2, n_layers=3).eval()
    x, _ = inputs(2, 9)
    attention = net.explain(x)["attention"]
    assert attention.shape == (2, 3, 9)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 3))
    # Cross-check layer by layer replay against the encoder's own output.
    with torch.no_grad():
        h = net._embed(x)
        mask = net._causal_mask(9, h)
        for layer in net.encoder.layers:
            h = layer(h, src_mask=mask, is_causal=True)
        torch.testing.assert_close(net.encoder.norm(h)[:, -1], net(x))


@pytest.mark.parametrize("n_layers", [1, 3])
def test_transformer_last_token_path_equals_the_full_sequence(n_layers: int) -> None:
    torch.manual_seed(0)
    net = make_backbone("transformer", N_FEATURES, d_model=16, n_heads=2,
                        n_layers=n_layers).eval()
    x, _ = inputs(3, 11)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.forward_sequence(x)[:, -1], rtol=0, atol=1e-5)
        long = torch.randn(1, 600, N_FEATURES)  # beyond the cached position table (512)
        torch.testing.assert_close(net(long), net.forward_sequence(long)[:, -1],
                                   rtol=0, atol=1e-5)
