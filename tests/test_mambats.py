"""MambaTS backbone and heads (tradezoo.policies.mambats)."""

from __future__ import annotations

import pytest
import torch

from tradezoo.policies.mambats import (
    MambaTSBackbone,
    MambaTSConfig,
    MambaTSHeads,
    patch_geometry,
)
from tradezoo.policies.registry import make_backbone

N_FEATURES = 6


def _model(**kwargs) -> MambaTSBackbone:
    config = {"d_model": 16, "d_state": 4, "patch_len": 8, "stride": 4, "seed": 3}
    config.update(kwargs)
    torch.manual_seed(0)
    return MambaTSBackbone(N_FEATURES, MambaTSConfig(**config))


@pytest.mark.parametrize("length", [8, 9, 64, 257])
def test_output_shapes(length: int) -> None:
    model = _model(n_layers=2)
    assert model(torch.randn(3, length, N_FEATURES)).shape == (3, 16)


def test_default_config_shapes() -> None:
    model = make_backbone("mambats", 5)
    assert model(torch.randn(2, 64, 5)).shape == (2, 64)
    assert MambaTSBackbone.min_window(model.config) == 16


def test_window_shorter_than_a_patch_is_rejected() -> None:
    config = MambaTSConfig(patch_len=12, stride=6)
    assert MambaTSBackbone.min_window(config) == 12
    with pytest.raises(ValueError, match="at least 12 bars"):
        MambaTSBackbone.check_window(config, 11)
    model = MambaTSBackbone(3, config)
    with pytest.raises(ValueError, match="at least 12 bars"):
        model(torch.randn(1, 11, 3))


def test_window_with_too_many_patches_is_rejected() -> None:
    config = MambaTSConfig(patch_len=4, stride=2, max_patches=5)
    MambaTSBackbone.check_window(config, 12)  # (12 - 4) / 2 + 1 = 5 patches
    with pytest.raises(ValueError, match="more than max_patches=5"):
        MambaTSBackbone.check_window(config, 13)


def test_patch_geometry_ends_at_last_bar_and_pads_the_start() -> None:
    assert patch_geometry(16, 16, 8) == (1, 0)
    assert patch_geometry(64, 16, 8) == (7, 0)
    assert patch_geometry(20, 16, 8) == (2, 4)
    assert patch_geometry(257, 16, 8) == (32, 7)
    with pytest.raises(ValueError, match="shorter than patch_len"):
        patch_geometry(5, 8, 4)


def test_patches_replicate_first_bar_and_end_at_last_bar() -> None:
    model = _model(revin_affine=False)
    x = torch.randn(2, 11, N_FEATURES)  # (11 - 8) % 4 = 3 -> 1 bar of padding at the start
    patches = model.patches(x)  # [B, F, n, P]
    series = model.normalise(x).transpose(1, 2)  # [B, F, L]
    assert patches.shape == (2, N_FEATURES, 2, 8)
    torch.testing.assert_close(patches[:, :, -1], series[:, :, -8:])
    torch.testing.assert_close(patches[:, :, 0, 0], series[:, :, 0])  # the repeated bar
    torch.testing.assert_close(patches[:, :, 0, 1:], series[:, :, :7])


def test_permutation_only_in_training_and_seeded() -> None:
    x = torch.randn(2, 32, N_FEATURES)
    first, second = _model(seed=11), _model(seed=11)
    first.train()
    second.train()
    orders_first, orders_second = [], []
    for _ in range(3):
        y1, y2 = first(x), second(x)
        torch.testing.assert_close(y1, y2, rtol=0, atol=0)
        orders_first.append(first.last_permutation.clone())
        orders_second.append(second.last_permutation.clone())
    for a, b in zip(orders_first, orders_second, strict=True):
        assert torch.equal(a, b)
        assert sorted(a.tolist()) == list(range(N_FEATURES))
    assert not all(torch.equal(a, orders_first[0]) for a in orders_first[1:])
    other = _model(seed=12).train()
    other_orders = []
    for _ in range(3):
        other(x)
        other_orders.append(other.last_permutation.clone())
    assert any(not torch.equal(a, b) for a, b in zip(orders_first, other_orders, strict=True))

    first.eval()
    state = first.permutation_generator.get_state()
    y_eval = first(x)
    assert first.last_permutation is None
    assert torch.equal(first.permutation_generator.get_state(), state)  # nothing drawn
    torch.testing.assert_close(first(x), y_eval, rtol=0, atol=0)


def test_training_permutation_changes_the_variable_scan() -> None:
    model = _model().train()
    x = torch.randn(2, 32, N_FEATURES)
    outputs = [model(x) for _ in range(3)]
    assert any((outputs[0] - y).abs().max() > 1e-6 for y in outputs[1:])
    no_perm = _model(permute_variables=False).train()
    torch.testing.assert_close(no_perm(x), no_perm(x), rtol=0, atol=0)
    assert no_perm.last_permutation is None


def test_instance_norm_makes_output_invariant_to_scale_and_shift_of_a_variable() -> None:
    model = _model(n_layers=2).eval()
    x = torch.randn(3, 40, N_FEATURES)
    moved = x.clone()
    moved[:, :, 2] = moved[:, :, 2] * 250.0 + 1e4
    moved[:, :, 4] = moved[:, :, 4] * 3.0 - 3.0  # exact up to eps / var: keep var >> eps
    with torch.no_grad():
        torch.testing.assert_close(model(moved), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("scale", [1e3, 0.0])
def test_large_and_zero_inputs_stay_finite(scale: float) -> None:
    model = _model().train()
    y = model(torch.randn(2, 33, N_FEATURES) * scale)
    y.sum().backward()
    assert torch.isfinite(y).all()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_batch_equals_samples_in_eval_mode() -> None:
    model = _model(n_layers=2).eval()
    x = torch.randn(4, 37, N_FEATURES)
    with torch.no_grad():
        batch = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-5)


def test_explain_is_per_variable() -> None:
    model = _model(n_layers=2)
    info = model.explain(torch.randn(3, 24, N_FEATURES))
    assert info["variable_weights"].shape == (3, N_FEATURES)
    torch.testing.assert_close(info["variable_weights"].sum(-1), torch.ones(3))
    assert info["temporal_gate"].shape == (2, 3, N_FEATURES)
    assert ((info["temporal_gate"] > 0) & (info["temporal_gate"] < 1)).all()
    assert info["window_std"].shape == (3, N_FEATURES)


def test_no_weight_decay_names_exist() -> None:
    model = _model(n_layers=2)
    params = set(dict(model.named_parameters()))
    names = model.no_weight_decay()
    assert names <= params
    assert "layers.1.var_mamba.A_log" in names and "layers.0.time_mamba.D" in names


def test_without_affine_revin() -> None:
    model = _model(revin_affine=False)
    assert "revin_weight" not in dict(model.named_parameters())
    assert model(torch.randn(2, 16, N_FEATURES)).shape == (2, 16)


def test_heads_shapes() -> None:
    heads = MambaTSHeads(16, n_classes=3, n_horizons=4)
    out = heads(_model()(torch.randn(5, 20, N_FEATURES)))
    assert out["logits"].shape == (5, 3)
    assert out["regression"].shape == (5, 1)
    assert out["multi_horizon"].shape == (5, 4)


def test_heads_reject_bad_input() -> None:
    heads = MambaTSHeads(16)
    with pytest.raises(ValueError, match=r"features of shape \[batch, 16\]"):
        heads(torch.randn(5, 8))
    with pytest.raises(ValueError, match="n_horizons must be a positive integer"):
        MambaTSHeads(16, n_horizons=0)
    with pytest.raises(ValueError, match="dropout must be in"):
        MambaTSHeads(16, dropout=1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patch_len": 4, "stride": 8}, "stride must be <= patch_len"),
        ({"patch_len": 0}, "patch_len must be a positive integer"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"scan": "fast"}, "scan must be one of"),
        ({"mlp_ratio": 0.0}, "mlp_ratio must be > 0"),
        ({"revin_eps": 0.0}, "revin_eps must be > 0"),
    ],
)
def test_bad_config_values_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MambaTSConfig(**kwargs)


# ------------------------------ the chapter's fusion and variable mixing (defaults) and options

_OPTIONS = [
    {"fusion": "gate"},
    {"channel_mixing": "hidden"},
    {"fusion": "gate", "channel_mixing": "hidden"},
    {"channel_mixing": "both"},
]
PREVIOUS = {"fusion": "gate", "channel_mixing": "hidden"}


def test_defaults_are_the_chapter_linear_fusion_and_variable_mixing() -> None:
    config = MambaTSConfig()
    assert (config.fusion, config.channel_mixing) == ("linear", "variables")
    x = torch.randn(2, 24, N_FEATURES)
    default, explicit = _model().eval(), _model(fusion="linear",
                                                channel_mixing="variables").eval()
    names = list(default.state_dict())
    assert names == list(explicit.state_dict())
    assert "layers.0.fuse.weight" in names and "layers.0.var_mlp_in.weight" in names
    assert "layers.0.gate.weight" not in names and "layers.0.mlp_in.weight" not in names
    with torch.no_grad():
        torch.testing.assert_close(default(x), explicit(x), atol=0, rtol=0)


def test_a_saved_config_without_the_fields_restores_the_previous_form() -> None:
    """A config saved before ``fusion`` and ``channel_mixing`` existed is the gate and the
    hidden mixing (the model it was), not today's defaults."""
    saved = {k: v for k, v in _model(**PREVIOUS).config.to_dict().items() if k not in PREVIOUS}
    restored = MambaTSConfig(**MambaTSConfig.restore_saved(saved))
    assert (restored.fusion, restored.channel_mixing) == ("gate", "hidden")
    assert MambaTSConfig.restore_saved({**saved, "fusion": "linear"})["fusion"] == "linear"
    previous = _model(**PREVIOUS).eval()
    torch.manual_seed(0)
    rebuilt = MambaTSBackbone(N_FEATURES, restored).eval()
    rebuilt.load_state_dict(previous.state_dict())
    x = torch.randn(2, 24, N_FEATURES)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), previous(x), atol=0, rtol=0)


@pytest.mark.parametrize("options", _OPTIONS)
def test_options_shapes_gradients_and_round_trip(options: dict) -> None:
    model = _model(n_layers=2, dropout=0.1, **options).train()
    x = torch.randn(3, 29, N_FEATURES)
    y = model(x)
    assert y.shape == (3, 16)
    y.square().sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    names = set(model.state_dict())
    linear = options.get("fusion", "linear") == "linear"
    assert ("layers.0.fuse.weight" in names) == linear
    assert ("layers.0.gate.weight" in names) != linear
    mixing = options.get("channel_mixing", "variables")
    assert ("layers.0.var_mlp_in.weight" in names) == (mixing != "hidden")
    assert ("layers.0.mlp_in.weight" in names) == (mixing != "variables")
    if mixing != "hidden":  # the variable MLP is Linear(F -> r F), Linear(r F -> F)
        assert model.state_dict()["layers.0.var_mlp_in.weight"].shape == (2 * N_FEATURES,
                                                                          N_FEATURES)
    config = MambaTSConfig(**model.config.to_dict())
    assert config == model.config
    rebuilt = MambaTSBackbone(N_FEATURES, config).eval()
    rebuilt.load_state_dict(model.state_dict())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), atol=0, rtol=0)
        batch = model(x)  # eval mode: a batch equals its samples (identity variable order)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-5)
    info = model.explain(x)
    assert info["temporal_gate"].shape == (2, 3, N_FEATURES)
    assert ((info["temporal_gate"] >= 0) & (info["temporal_gate"] <= 1)).all()


@pytest.mark.parametrize(("mixing", "crosses"), [("hidden", False), ("variables", True),
                                                 ("both", True)])
def test_channel_mixing_reaches_across_variables_only_in_the_variable_forms(
    mixing: str, crosses: bool
) -> None:
    """With both scans silenced (out_proj = 0), a layer's update of variable 0 depends on
    variable 1's tokens exactly when the mixing MLP runs across variables."""
    model = _model(channel_mixing=mixing).eval()
    layer = model.layers[0]
    with torch.no_grad():
        layer.time_mamba.out_proj.weight.zero_()
        layer.var_mamba.out_proj.weight.zero_()
        h = torch.randn(2, N_FEATURES, 5, 16)
        moved = h.clone()
        moved[:, 1] += torch.randn(2, 5, 16)
        base, after = layer(h, None)[0], layer(moved, None)[0]
    changed = (after[:, 0] - base[:, 0]).abs().max()
    assert (changed > 1e-4) if crosses else (changed == 0)


def test_linear_fusion_is_the_chapter_linear_of_both_scans() -> None:
    model = _model(fusion="linear").eval()
    layer = model.layers[0]
    temporal, variable = torch.randn(2, N_FEATURES, 4, 16), torch.randn(2, N_FEATURES, 4, 16)
    with torch.no_grad():
        fused, share = layer._fuse(temporal, variable)
        expected = layer.fuse(torch.cat([temporal, variable], dim=-1))  # Linear(2d -> d)
    torch.testing.assert_close(fused, expected, atol=1e-6, rtol=1e-6)
    assert ((share >= 0) & (share <= 1)).all()
    assert layer.fuse.weight.shape == (16, 32)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fusion": "sum"}, "fusion must be one of"),
    ({"channel_mixing": "time"}, "channel_mixing must be one of"),
])
def test_bad_option_values_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MambaTSConfig(**kwargs)


def test_heads_in_the_trainers_form() -> None:
    """The supervised trainer builds ``Heads(d_model, horizons=(...), regression=True)`` and
    reads ``"regression"`` and ``"direction"`` ``[B, H]``."""
    heads = MambaTSHeads(16, horizons=("h4", "h24", "h96"), regression=True)
    features = _model()(torch.randn(5, 20, N_FEATURES))
    out = heads(features)
    assert set(out) == {"logits", "regression", "direction"}
    assert out["logits"].shape == (5, 3)
    assert out["regression"].shape == (5, 3) and out["direction"].shape == (5, 3)
    sum(v.sum() for v in out.values()).backward()
    assert all(p.grad is not None for p in heads.parameters())
    assert set(MambaTSHeads(16, horizons=("h4",), regression=False)(features)) == {
        "logits", "direction"}
    with pytest.raises(ValueError, match="horizons must be non-empty, unique"):
        MambaTSHeads(16, horizons=("h4", "h4"))
    with pytest.raises(ValueError, match="does not match the 2 horizons"):
        MambaTSHeads(16, n_horizons=3, horizons=("h4", "h24"))
