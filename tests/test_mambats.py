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
