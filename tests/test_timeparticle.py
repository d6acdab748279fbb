"""TimeParticle-inspired backbone: the module's equations against slow references.

The recurrence is checked against a naive per-particle Python loop written with the module's
formulas (sigmoid/tanh, no reformulation), in values and gradients; the convolution bank
against ``F.conv1d``; messages, aggregation weights, causality and the backbone contract.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from tradezoo.policies import ARCHITECTURES, make_backbone
from tradezoo.policies.timeparticle import (
    ParticleLayer,
    TimeParticleBackbone,
    TimeParticleConfig,
    causal_conv_bank,
    particle_conv_spec,
)

N_FEATURES = 5
#: The form before the chapter's parts became the defaults (single head, no C m_t, no D^(k)).
PREVIOUS = {"attention_heads": 1, "message_feedback": False, "particle_outputs": False}

# The default recurrence (message_feedback) is a loop of small ops: one thread is much faster.
pytestmark = pytest.mark.usefixtures("one_thread")


def backbone(seed: int = 0, **cfg: object) -> TimeParticleBackbone:
    torch.manual_seed(seed)
    config = TimeParticleConfig(**{"d_model": 8, **cfg})  # type: ignore[arg-type]
    return TimeParticleBackbone(N_FEATURES, config)


def naive_recurrence(layer: ParticleLayer, x: Tensor) -> Tensor:
    """The module's recurrence, one particle and one step at a time.

    ``x [K, L, B, D]`` (conv features) -> ``h [K, L, B, D]``;
    ``g = sigmoid(W_g [x; h] + b_g)``, ``h~ = tanh(W_h x + U_h h + b_h)``,
    ``h = g h~ + (1 - g) h``, ``h_0 = 0``.
    """
    k_count, length, batch, d = x.shape
    per_particle = []
    for k in range(k_count):
        w_g = torch.cat([layer.w_in[k, :, :d], layer.u_rec[k, :, :d]], 0)  # [2D, D]: [x; h]
        w_h, u_h = layer.w_in[k, :, d:], layer.u_rec[k, :, d:]
        b_g, b_h = layer.b_in[k, :d], layer.b_in[k, d:]
        h = x.new_zeros(batch, d)
        states = []
        for t in range(length):
            x_t = x[k, t]
            g = torch.sigmoid(torch.cat([x_t, h], -1) @ w_g + b_g)
            h_tilde = torch.tanh(x_t @ w_h + h @ u_h + b_h)
            h = g * h_tilde + (1 - g) * h
            states.append(h)
        per_particle.append(torch.stack(states, 0))
    return torch.stack(per_particle, 0)  # [K, L, B, D]


# -- registry, config --------------------------------------------------------------------------


def test_registered_under_its_name() -> None:
    arch = ARCHITECTURES["timeparticle"]
    assert arch.backbone_cls is TimeParticleBackbone and arch.config_cls is TimeParticleConfig
    net = make_backbone("timeparticle", N_FEATURES, d_model=8, n_particles=4)
    assert net.emits_sequence and not net.uses_dt and len(net.layers[0].conv_weight) == 4


@pytest.mark.parametrize("n_particles", [0, 1, 7])
def test_particle_count_out_of_range_is_rejected(n_particles: int) -> None:
    with pytest.raises(ValueError, match="n_particles"):
        TimeParticleConfig(n_particles=n_particles)


def test_dropout_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="dropout"):
        TimeParticleConfig(dropout=1.0)


def test_conv_spec_follows_the_equations_and_rejects_k0() -> None:
    assert [particle_conv_spec(k) for k in (1, 2, 3, 4)] == [
        (2, 1, 1), (4, 2, 6), (8, 4, 28), (16, 8, 120)
    ]
    with pytest.raises(ValueError, match="k starts at 1"):
        particle_conv_spec(0)


# -- shapes, contract ----------------------------------------------------------------------------


@pytest.mark.parametrize("window", [1, 7, 64, 257])
def test_shapes_for_any_window(window: int) -> None:
    net = backbone().eval()
    x = torch.randn(2, window, N_FEATURES)
    with torch.no_grad():
        assert net(x).shape == (2, 8)
        assert net.forward_sequence(x).shape == (2, window, 8)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_forward_is_the_last_position_of_the_sequence(n_layers: int) -> None:
    net = backbone(n_layers=n_layers).eval()
    x = torch.randn(3, 19, N_FEATURES)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.forward_sequence(x)[:, -1], rtol=0, atol=1e-6)


def test_sequence_is_causal_and_prefix_consistent() -> None:
    net = backbone(n_layers=2, n_particles=4).eval()
    x = torch.randn(2, 40, N_FEATURES)
    with torch.no_grad():
        base = net.forward_sequence(x)
        for i in (0, 3, 17, 38):
            x2 = x.clone()
            x2[:, i + 1 :] = torch.randn_like(x2[:, i + 1 :]) * 5.0
            moved = net.forward_sequence(x2)
            torch.testing.assert_close(moved[:, : i + 1], base[:, : i + 1], rtol=0, atol=1e-6)
            assert not torch.allclose(moved[:, i + 1 :], base[:, i + 1 :])
            # The window's start is the state's start (h_0 = 0), so a prefix run agrees.
            torch.testing.assert_close(net(x[:, : i + 1]), base[:, i], rtol=0, atol=1e-5)


def test_batch_equals_samples_one_by_one() -> None:
    net = backbone(n_layers=2).eval()
    x = torch.randn(5, 23, N_FEATURES)
    with torch.no_grad():
        batched = net.forward_sequence(x)
        single = torch.cat([net.forward_sequence(x[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)


@pytest.mark.parametrize("scale", [1e3, 0.0])
def test_finite_outputs_and_gradients_for_huge_and_zero_inputs(scale: float) -> None:
    net = backbone(n_layers=2).train()
    x = (torch.randn(2, 33, N_FEATURES) * scale).requires_grad_(True)
    out = net.forward_sequence(x)
    assert torch.isfinite(out).all()
    out.pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_feature_count_mismatch_names_both_numbers() -> None:
    with pytest.raises(ValueError, match=r"(?s)7.*5"):
        backbone()(torch.zeros(1, 4, 7))


# -- the recurrence ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_recurrence_equals_the_naive_per_particle_loop(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    layer = ParticleLayer(6, 3, 0.0).to(dtype)
    x = torch.randn(3, 13, 2, 6, dtype=dtype, requires_grad=True)
    fast = layer.recurrence(x).transpose(0, 1)  # [K, L, B, D]
    slow = naive_recurrence(layer, x)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(fast, slow, rtol=0, atol=tol)
    weight = torch.randn_like(slow)
    params = [x, layer.w_in, layer.u_rec, layer.b_in]
    fast_grads = torch.autograd.grad((fast * weight).sum(), params)
    slow_grads = torch.autograd.grad((slow * weight).sum(), params)
    for name, a, b in zip(["x", "w_in", "u_rec", "b_in"], fast_grads, slow_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=10 * tol, msg=f"gradient of {name}")


def test_last_state_only_path_matches_values_and_gradients() -> None:
    torch.manual_seed(1)
    layer = ParticleLayer(5, 2, 0.0).double()
    x = torch.randn(2, 9, 3, 5, dtype=torch.float64, requires_grad=True)
    last = layer.recurrence(x, keep_all=False)  # [1, K, B, D]
    slow = naive_recurrence(layer, x)[:, -1]  # [K, B, D]
    torch.testing.assert_close(last[0], slow, rtol=0, atol=1e-12)
    weight = torch.randn_like(slow)
    a = torch.autograd.grad((last[0] * weight).sum(), [x, layer.u_rec])
    b = torch.autograd.grad((naive_recurrence(layer, x)[:, -1] * weight).sum(), [x, layer.u_rec])
    for ga, gb in zip(a, b, strict=True):
        torch.testing.assert_close(ga, gb, rtol=0, atol=1e-12)


def test_gate_bias_initialisation_slows_coarser_particles() -> None:
    layer = ParticleLayer(4, 4, 0.0)
    gates = torch.sigmoid(layer.b_in[:, :4])  # [K, D]
    torch.testing.assert_close(gates[:, 0], torch.tensor([1 / 2, 1 / 3, 1 / 5, 1 / 9]))


# -- the convolutions ---------------------------------------------------------------------------


def test_conv_bank_equals_conv1d_in_values_and_gradients() -> None:
    torch.manual_seed(2)
    u = torch.randn(21, 2, 4, dtype=torch.float64, requires_grad=True)
    specs = [particle_conv_spec(k) for k in (1, 2, 3)]
    weights = [torch.randn(kernel, 4, dtype=torch.float64, requires_grad=True)
               for kernel, _, _ in specs]
    bias = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    dilations = [dil for _, dil, _ in specs]
    ours = causal_conv_bank(u, weights, bias, dilations)  # [K, L, B, D]
    u_cf = u.permute(1, 2, 0)  # [B, D, L]
    reference = torch.stack([
        F.conv1d(F.pad(u_cf, (pad, 0)), w.t().unsqueeze(1), bias[k], dilation=dil, groups=4)
        .permute(2, 0, 1)
        for k, (w, (_, dil, pad)) in enumerate(zip(weights, specs, strict=True))
    ])
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda u, b, *w: causal_conv_bank(u, w, b, dilations), (u, bias, *weights)
    )


def test_conv_taps_reach_exactly_the_receptive_field() -> None:
    """An impulse at bar 30 reaches particle k's output at bars 30 .. 30 + RF_k - 1 only,
    on the taps 30 + i * dilation."""
    u = torch.zeros(200, 1, 1)
    u[30] = 1.0
    for k in (1, 2, 3, 4):
        kernel, dilation, pad = particle_conv_spec(k)
        out = causal_conv_bank(u, [torch.ones(kernel, 1)], torch.zeros(1, 1), [dilation])[0]
        hit = out[:, 0, 0].nonzero().flatten().tolist()
        assert hit == [30 + i * dilation for i in range(kernel)]
        assert hit[-1] - hit[0] == pad  # receptive field (pad + 1 bars), never ahead of t


# -- messages and aggregation -------------------------------------------------------------------


def test_messages_exclude_self_and_aggregate_with_beta() -> None:
    torch.manual_seed(3)
    layer = ParticleLayer(6, 3, 0.0)
    h = torch.randn(2, 4, 3, 6)  # [B, T, K, D]
    agg, alpha, beta = layer.mix(h)
    assert torch.all(alpha.diagonal(dim1=-2, dim2=-1) == 0)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(2, 4, 3))
    torch.testing.assert_close(beta.sum(-1), torch.ones(2, 4))
    w_q, w_k, w_v = layer.qkv.weight.detach().chunk(3, 0)  # [D, D] each
    expected = torch.zeros(2, 4, 6)
    for k in range(3):
        others = [j for j in range(3) if j != k]
        scores = torch.stack([(h[..., k, :] @ w_q.T * (h[..., j, :] @ w_k.T)).sum(-1)
                              for j in others], -1) / 6**0.5
        weights = scores.softmax(-1)  # over j != k only
        message = sum(weights[..., i : i + 1] * (h[..., j, :] @ w_v.T)
                      for i, j in enumerate(others))
        expected += beta[..., k : k + 1] * (h[..., k, :] + message)
    torch.testing.assert_close(agg, expected, rtol=0, atol=1e-5)
    # beta = softmax(W_beta [h_1; ...; h_K])
    torch.testing.assert_close(beta, layer.w_beta(h.reshape(2, 4, 18)).softmax(-1))


def test_with_two_particles_each_message_comes_wholly_from_the_other() -> None:
    """With K=2 the masked softmax leaves alpha_12 = alpha_21 = 1: m_1 = W_v h_2, m_2 = W_v h_1."""
    torch.manual_seed(4)
    layer = ParticleLayer(4, 2, 0.0)
    h = torch.randn(1, 1, 2, 4)
    _, alpha, _ = layer.mix(h)
    torch.testing.assert_close(alpha[0, 0], torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


# -- explain ---------------------------------------------------------------------------------


def test_explain_reports_beta_alpha_and_trends() -> None:
    net = backbone(n_layers=2, n_particles=4).eval()
    x = torch.randn(3, 15, N_FEATURES)
    info = net.explain(x)
    assert info["beta"].shape == (3, 15, 4) and info["beta_layers"].shape == (2, 3, 15, 4)
    torch.testing.assert_close(info["beta_layers"].sum(-1), torch.ones(2, 3, 15))
    torch.testing.assert_close(info["beta_layers"][-1], info["beta"])
    assert info["alpha"].shape == (3, 15, 4, 4)
    assert info["trend"].shape == (3, 15, 4) and info["trend"].abs().max() < 1
    assert info["particle_norm"].shape == (3, 15, 4)
    assert all(not v.requires_grad for v in info.values())


def test_runs_under_bf16_autocast_with_a_float32_scan() -> None:
    net = backbone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.randn(2, 12, N_FEATURES))
    out.float().pow(2).sum().backward()
    assert torch.isfinite(out.float()).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


# --------------------------------------- the chapter's parts as options (heads, C m_t, D^(k))

_OPTIONS = [
    PREVIOUS,
    {"attention_heads": 1},
    {"message_feedback": False},
    {"particle_outputs": False},
    {"attention_heads": 2, "n_layers": 2},
]


def test_defaults_are_the_chapter_heads_feedback_and_particle_outputs() -> None:
    config = TimeParticleConfig()
    assert (config.attention_heads, config.message_feedback, config.particle_outputs) == (
        4, True, True)
    x = torch.randn(2, 20, N_FEATURES)
    default = backbone(seed=5)
    explicit = backbone(seed=5, attention_heads=4, message_feedback=True,
                        particle_outputs=True)
    names = list(default.state_dict())
    assert names == list(explicit.state_dict())
    assert "layers.0.c_msg" in names and "layers.0.d_out" in names
    assert default.layers[0].attention_heads == 4
    torch.testing.assert_close(default.forward_sequence(x), explicit.forward_sequence(x),
                               atol=0, rtol=0)


def test_a_saved_config_without_the_fields_restores_the_previous_form() -> None:
    """A config saved before the three fields existed is the single-head form without C m_t
    or D^(k) (the model it was). ``attention_heads`` changes no weight shape, so building
    today's default from it would load its weights silently and compute something else."""
    previous = backbone(seed=5, **PREVIOUS)
    saved = {k: v for k, v in previous.config.to_dict().items() if k not in PREVIOUS}
    restored = TimeParticleConfig(**TimeParticleConfig.restore_saved(saved))
    assert restored == previous.config
    rebuilt = TimeParticleBackbone(N_FEATURES, restored)
    rebuilt.load_state_dict(previous.state_dict())
    x = torch.randn(2, 20, N_FEATURES)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.forward_sequence(x), previous.forward_sequence(x),
                                   atol=0, rtol=0)
        heads_only = TimeParticleBackbone(
            N_FEATURES, TimeParticleConfig(**{**saved, "message_feedback": False,
                                              "particle_outputs": False}))
        heads_only.load_state_dict(previous.state_dict())  # same shapes, other model
        assert (heads_only(x) - previous(x)).abs().max() > 1e-4


@pytest.mark.parametrize("options", _OPTIONS)
def test_options_shapes_causality_gradients_and_round_trip(options: dict) -> None:
    model = backbone(**options)
    x = torch.randn(3, 21, N_FEATURES)
    sequence = model.forward_sequence(x)
    assert sequence.shape == (3, 21, 8) and model(x).shape == (3, 8)
    torch.testing.assert_close(model(x), sequence[:, -1], atol=1e-6, rtol=1e-6)
    moved = x.clone()
    moved[:, 12:] += torch.randn(3, 9, N_FEATURES)  # the future of step 11
    after = model.forward_sequence(moved)
    torch.testing.assert_close(after[:, :12], sequence[:, :12], atol=0, rtol=0)
    assert (after[:, 12:] - sequence[:, 12:]).abs().max() > 1e-4
    model.zero_grad()
    sequence.square().sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    config = TimeParticleConfig(**model.config.to_dict())
    assert config == model.config
    rebuilt = TimeParticleBackbone(N_FEATURES, config)
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():  # the inference path equals the autograd path
        torch.testing.assert_close(rebuilt(x), model(x), atol=0, rtol=0)
        torch.testing.assert_close(model(x), sequence[:, -1].detach(), atol=1e-5, rtol=1e-5)
        alone = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(alone, sequence[:, -1].detach(), atol=1e-5, rtol=1e-5)
    info = model.explain(x)
    heads = options.get("attention_heads", 4)
    assert info["alpha_heads"].shape == (3, 21, heads, 3, 3)
    torch.testing.assert_close(info["alpha_heads"].mean(2), info["alpha"])


def test_message_feedback_is_the_scan_when_c_is_zero_and_changes_it_otherwise() -> None:
    """The feedback loop (h form, autograd) with C = 0 is the default recurrence; with C the
    states differ from the second step on (m_1 is computed from h_0 = 0, so it is 0)."""
    fed, plain = backbone(), backbone(message_feedback=False)
    plain.load_state_dict(fed.state_dict(), strict=False)
    layer = fed.layers[0]
    x = torch.randn(3, 1 + 15, 8)  # conv features need [K, L, B, D]: build them from u
    features = layer.conv_features(x.transpose(0, 1))  # [K, L, B, D]
    with_messages = layer.recurrence(features)
    reference = plain.layers[0].recurrence(features)
    torch.testing.assert_close(with_messages[0], reference[0], atol=1e-6, rtol=1e-6)
    assert (with_messages[1:] - reference[1:]).abs().max() > 1e-3
    with torch.no_grad():
        layer.c_msg.zero_()
        torch.testing.assert_close(layer.recurrence(features), reference, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(layer.recurrence(features, keep_all=False)[0],
                                   reference[-1], atol=1e-5, rtol=1e-5)


def test_message_feedback_step_by_hand() -> None:
    """Two steps of the chapter's state equation with C m_t, written out for K = 2 (each
    particle's message is W_v of the other's previous state)."""
    torch.manual_seed(2)
    layer = ParticleLayer(4, 2, 0.0, message_feedback=True)
    x = torch.randn(2, 2, 3, 4)  # [K, L, B, D]
    w_v = layer.qkv.weight.detach()[8:]  # [D, D]
    h = torch.zeros(2, 3, 4)
    with torch.no_grad():
        for t in range(2):
            m = torch.stack([h[1] @ w_v.T, h[0] @ w_v.T])  # [K, B, D]
            z = (x[:, t] @ layer.w_in + layer.b_in[:, None] + h @ layer.u_rec
                 + m @ layer.c_msg)  # [K, B, 2D]
            g, cand = torch.sigmoid(z[..., :4]), torch.tanh(z[..., 4:])
            h = g * cand + (1 - g) * h
        torch.testing.assert_close(layer.recurrence(x, keep_all=False)[0], h, atol=1e-6,
                                   rtol=1e-6)


def test_multi_head_messages_by_hand() -> None:
    torch.manual_seed(6)
    layer = ParticleLayer(8, 3, 0.0, attention_heads=2)
    h = torch.randn(2, 4, 3, 8)  # [B, T, K, D]
    messages, alpha = layer.messages(h)
    assert alpha.shape == (2, 4, 2, 3, 3)
    assert torch.all(alpha.diagonal(dim1=-2, dim2=-1) == 0)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(2, 4, 2, 3))
    w_q, w_k, w_v = layer.qkv.weight.detach().chunk(3, 0)  # [D, D] each
    q, k, v = h @ w_q.T, h @ w_k.T, h @ w_v.T
    for head, cols in enumerate((slice(0, 4), slice(4, 8))):
        scores = q[..., cols] @ k[..., cols].transpose(-1, -2) / 2.0  # sqrt(D / H) = 2
        scores = scores.masked_fill(torch.eye(3, dtype=torch.bool), float("-inf"))
        weights = scores.softmax(-1)  # [B, T, K, K]
        torch.testing.assert_close(alpha[:, :, head], weights)
        torch.testing.assert_close(messages[..., cols], weights @ v[..., cols])
    _, mean_alpha, _ = layer.mix(h)
    torch.testing.assert_close(mean_alpha, alpha.mean(2))


def test_particle_outputs_project_each_particle_before_aggregation() -> None:
    torch.manual_seed(7)
    layer = ParticleLayer(6, 3, 0.0, particle_outputs=True)
    with torch.no_grad():
        layer.b_out.normal_()
    h = torch.randn(2, 4, 3, 6)
    agg, _, beta = layer.mix(h)
    messages, _ = layer.messages(h)
    expected = sum(beta[..., k : k + 1] * ((h[..., k, :] + messages[..., k, :])
                                           @ layer.d_out[k] + layer.b_out[k])
                   for k in range(3))
    torch.testing.assert_close(agg, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("cfg", "message"), [
    ({"attention_heads": 3}, "attention_heads must divide d_model=8"),
    ({"attention_heads": 0}, "attention_heads must be a positive integer"),
])
def test_bad_option_values_are_rejected(cfg: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TimeParticleConfig(d_model=8, **cfg)
