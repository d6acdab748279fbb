"""``SequenceExtractor``: Box and Dict observation spaces (by hand and from the registered
envs), ``features_dim``, the ``msa`` dict path, the account vector, construction-time
validation, and ``explain`` through the extractor."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import Tensor, nn

import tradezoo  # noqa: F401  (registers the envs)
from tradezoo.policies import (
    ARCHITECTURES,
    Backbone,
    BackboneConfig,
    SequenceExtractor,
    SequencePolicy,
    explain,
    make_config,
    registry,
)
from tradezoo.policies.registry import get_architecture

F = 6
NAMES = list(ARCHITECTURES)


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


def box(window: int, n_features: int = F) -> spaces.Box:
    return spaces.Box(-5.0, 5.0, (window, n_features), np.float32)


def mtf_space(windows: dict[str, int] | None = None, n_features: int = F) -> spaces.Dict:
    """A dict space like the env's (gymnasium sorts keys: '1d' before '1h')."""
    windows = windows or {"1h": 16, "4h": 8, "1d": 4}
    parts: dict[str, spaces.Space] = {tf: box(w, n_features) for tf, w in windows.items()}
    parts["account"] = spaces.Box(-np.inf, np.inf, (4,), np.float32)
    return spaces.Dict(parts)


def sample(space: spaces.Space, batch: int = 3, seed: int = 0) -> Tensor | dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    if isinstance(space, spaces.Dict):
        return {k: torch.randn(batch, *s.shape, generator=generator)
                for k, s in space.spaces.items()}
    return torch.randn(batch, *space.shape, generator=generator)


# -- Box ------------------------------------------------------------------------------------


def test_box_window_goes_through_backbone_and_head() -> None:
    torch.manual_seed(0)
    extractor = SequenceExtractor(box(12), arch="gru", features_dim=24, d_model=16)
    assert extractor.features_dim == 24 and extractor.backbones is None
    assert extractor.backbone is not None and extractor.backbone.n_features == F
    x = sample(box(12))
    assert isinstance(x, Tensor)
    out = extractor(x)
    assert out.shape == (3, 24)
    assert isinstance(extractor.head, nn.Sequential)
    with torch.no_grad():
        torch.testing.assert_close(out, extractor.head(extractor.backbone(x)))


def test_head_is_identity_when_d_model_equals_features_dim() -> None:
    extractor = SequenceExtractor(box(8), arch="lstm", features_dim=16, d_model=16)
    assert isinstance(extractor.head, nn.Identity)
    x = sample(box(8))
    assert extractor.backbone is not None
    torch.testing.assert_close(extractor(x), extractor.backbone(x))


def test_box_space_of_the_registered_env() -> None:
    env = gym.make("tradezoo/BTCUSDT-1h-v0")
    space = env.observation_space
    extractor = SequenceExtractor(space, arch="transformer", features_dim=32, d_model=16,
                                  n_heads=2, n_layers=1)
    obs, _ = env.reset(seed=0)
    out = extractor(torch.as_tensor(obs)[None])
    assert out.shape == (1, 32) and torch.isfinite(out).all()
    assert extractor.backbone is not None
    assert extractor.backbone.n_features == space.shape[1]


def test_mlp_window_is_filled_from_the_space() -> None:
    extractor = SequenceExtractor(box(10), arch="mlp", features_dim=8, d_model=8)
    assert extractor.backbone is not None
    assert extractor.backbone.config.window == 10  # type: ignore[attr-defined]
    assert extractor(sample(box(10))).shape == (3, 8)


# -- Dict -----------------------------------------------------------------------------------


def test_dict_gets_one_backbone_per_timeframe_finest_first() -> None:
    torch.manual_seed(0)
    space = mtf_space()
    assert list(space.spaces) == ["1d", "1h", "4h", "account"]  # gymnasium's order
    extractor = SequenceExtractor(space, arch="gru", features_dim=20, d_model=16)
    assert extractor.timeframes == ["1h", "4h", "1d"]
    assert extractor.windows == {"1h": 16, "4h": 8, "1d": 4}
    assert extractor.vector_keys == ["account"] and extractor.backbone is None
    assert extractor.backbones is not None and list(extractor.backbones) == ["1h", "4h", "1d"]
    # Own weights per timeframe.
    assert extractor.backbones["1h"].rnn.weight_hh_l0.data_ptr() != (
        extractor.backbones["4h"].rnn.weight_hh_l0.data_ptr()
    )
    obs = sample(space)
    assert isinstance(obs, dict)
    encoded = extractor.encode(obs)
    assert encoded.shape == (3, 3 * 16 + 4)
    with torch.no_grad():
        for i, tf in enumerate(["1h", "4h", "1d"]):
            torch.testing.assert_close(encoded[:, 16 * i : 16 * (i + 1)],
                                       extractor.backbones[tf](obs[tf]))
    assert extractor(obs).shape == (3, 20)


def test_account_vector_is_appended_after_the_backbones() -> None:
    torch.manual_seed(0)
    extractor = SequenceExtractor(mtf_space(), arch="lstm", features_dim=8, d_model=16)
    obs = sample(mtf_space())
    assert isinstance(obs, dict)
    encoded = extractor.encode(obs)
    torch.testing.assert_close(encoded[:, -4:], obs["account"])
    changed = dict(obs, account=obs["account"] + 1.0)
    torch.testing.assert_close(extractor.encode(changed)[:, :-4], encoded[:, :-4])
    assert not torch.allclose(extractor(changed), extractor(obs))


def test_mlp_per_timeframe_windows_in_dict_mode() -> None:
    extractor = SequenceExtractor(mtf_space(), arch="mlp", features_dim=8, d_model=8)
    assert extractor.backbones is not None
    windows = {tf: b.config.window for tf, b in extractor.backbones.items()}  # type: ignore
    assert windows == {"1h": 16, "4h": 8, "1d": 4}
    assert extractor(sample(mtf_space())).shape == (3, 8)


def test_msa_uses_the_timeframes_as_its_scales() -> None:
    torch.manual_seed(0)
    space = mtf_space()
    extractor = SequenceExtractor(space, arch="msa", features_dim=12, d_model=16)
    assert extractor.backbones is None and extractor.backbone is not None
    assert type(extractor.backbone) is ARCHITECTURES["msa"].backbone_cls
    obs = sample(space)
    assert isinstance(obs, dict)
    encoded = extractor.encode(obs)
    assert encoded.shape == (3, 16 + 4)
    torch.testing.assert_close(encoded[:, -4:], obs["account"])
    with torch.no_grad():
        scales = extractor.backbone.forward_scales(  # type: ignore[operator]
            [obs["1h"], obs["4h"], obs["1d"]]
        )
    torch.testing.assert_close(encoded[:, :16], scales)
    assert extractor(obs).shape == (3, 12)
    diagnostics = explain(extractor, obs)
    assert diagnostics, "msa explains its scales"
    expected = extractor.backbone.explain_scales(  # type: ignore[operator]
        [obs["1h"], obs["4h"], obs["1d"]]
    )
    assert set(diagnostics) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(diagnostics[key], value)


def test_msa_dict_needs_one_feature_count() -> None:
    parts = {"1h": box(16, 6), "4h": box(8, 7), "account": spaces.Box(-1, 1, (4,))}
    with pytest.raises(ValueError, match="feature count"):
        SequenceExtractor(spaces.Dict(parts), arch="msa", d_model=16)


@pytest.mark.parametrize("arch", ["msa", "cfc"])
def test_dict_space_of_the_registered_mtf_env(arch: str) -> None:
    env = gym.make("tradezoo/BTCUSDT-MTF-v0")
    extractor = SequenceExtractor(env.observation_space, arch=arch, features_dim=16, d_model=16)
    assert extractor.timeframes == ["1h", "4h", "1d"]
    obs, _ = env.reset(seed=0)
    batch = {k: torch.as_tensor(v)[None] for k, v in obs.items()}
    out = extractor(batch)
    assert out.shape == (1, 16) and torch.isfinite(out).all()


# -- validation at construction -----------------------------------------------------------


def _need(arch: str, window: int) -> int:
    backbone_cls = get_architecture(arch).backbone_cls
    return backbone_cls.min_window(make_config(arch, d_model=16))


@pytest.mark.parametrize("arch", [n for n in NAMES if n != "mlp"])
def test_window_too_short_is_rejected_at_construction(arch: str) -> None:
    need = _need(arch, 64)
    if need <= 1:
        pytest.skip(f"{arch} accepts any window with this config")
    with pytest.raises(ValueError, match=rf"(?s){arch}.*{need}.*window={need - 1}"):
        SequenceExtractor(box(need - 1), arch=arch, d_model=16)
    if arch != "msa":  # msa takes dict timeframes as its scales (its own rules)
        with pytest.raises(ValueError, match=rf"(?s)timeframe '1d'.*{arch}.*window={need - 1}"):
            SequenceExtractor(mtf_space({"1h": 64, "1d": need - 1}), arch=arch, d_model=16)


class _NeedsEightBars(Backbone):
    """A registered stand-in whose config needs 8 bars (so the rule is tested even while
    every real architecture accepts short windows)."""

    name = "stub8"
    config_cls = BackboneConfig

    def __init__(self, n_features: int, config: BackboneConfig) -> None:
        super().__init__(n_features, config)
        self.proj = nn.Linear(n_features, self.d_model)

    @classmethod
    def min_window(cls, config: BackboneConfig) -> int:
        return 8

    def forward(self, x: Tensor, dt: Tensor | None = None) -> Tensor:
        self.check_input(x, dt)
        return self.proj(x[:, -1])


class _Stub8Policy(SequencePolicy):
    """The stand-in's policy class (its registry entry names one)."""

    arch = "stub8"


def test_window_too_short_for_a_registered_stub_is_rejected_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(registry._ENTRIES, "stub8", registry.Architecture(
        "stub8", __name__, "_NeedsEightBars", "BackboneConfig", "_Stub8Policy"))
    assert SequenceExtractor(box(8), arch="stub8", d_model=4)(sample(box(8))).shape == (3, 64)
    with pytest.raises(ValueError, match=r"(?s)'stub8'.*at least 8.*window=7"):
        SequenceExtractor(box(7), arch="stub8", d_model=4)
    with pytest.raises(ValueError, match=r"(?s)timeframe '4h'.*'stub8'.*at least 8.*window=5"):
        SequenceExtractor(mtf_space({"1h": 16, "4h": 5}), arch="stub8", d_model=4)


def test_mlp_window_mismatch_is_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match=r"(?s)'mlp'.*window=32.*window=16"):
        SequenceExtractor(box(16), arch="mlp", window=32)


def test_unknown_architecture_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="valid names") as info:
        SequenceExtractor(box(8), arch="lstmm")
    assert all(name in str(info.value) for name in NAMES)


def test_unknown_config_key_lists_valid_keys() -> None:
    with pytest.raises(ValueError, match=r"(?s)hidden_size.*n_layers"):
        SequenceExtractor(box(8), arch="lstm", hidden_size=3)


@pytest.mark.parametrize("features_dim", [0, -3, 2.5, True])
def test_bad_features_dim(features_dim: Any) -> None:
    with pytest.raises(ValueError, match="features_dim"):
        SequenceExtractor(box(8), arch="gru", features_dim=features_dim)


@pytest.mark.parametrize(
    ("space", "match"),
    [
        (spaces.Box(-1, 1, (8,)), r"\(window, n_features\)"),
        (spaces.Box(-1, 1, (2, 8, 3)), r"\(window, n_features\)"),
        (spaces.Discrete(3), "Box"),
        (spaces.Dict({"foo": box(8), "account": spaces.Box(-1, 1, (4,))}), "'foo'"),
        (spaces.Dict({"account": spaces.Box(-1, 1, (4,))}), "no timeframe"),
        (spaces.Dict({"1h": spaces.Discrete(3)}), "'1h'"),
    ],
)
def test_unsupported_spaces_are_rejected(space: spaces.Space, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SequenceExtractor(space, arch="gru")


# -- explain --------------------------------------------------------------------------------


def test_explain_through_the_extractor_box_and_dict() -> None:
    torch.manual_seed(0)
    extractor = SequenceExtractor(box(12), arch="gru", d_model=16).train()
    single = np.random.default_rng(0).standard_normal((12, F)).astype(np.float32)
    result = explain(extractor, single)
    assert result["hidden_norm"].shape == (1, 12) and extractor.training  # mode restored

    extractor = SequenceExtractor(mtf_space(), arch="gru", d_model=16)
    obs = sample(mtf_space(), batch=2)
    result = explain(extractor, obs)
    assert {k: tuple(v.shape) for k, v in result.items()} == {
        "1h/hidden_norm": (2, 16), "4h/hidden_norm": (2, 8), "1d/hidden_norm": (2, 4)
    }
    assert isinstance(obs, dict)
    torch.testing.assert_close(result["4h/hidden_norm"],
                               explain(extractor.backbones["4h"], obs["4h"])["hidden_norm"])


def test_explain_rejects_wrong_inputs() -> None:
    extractor = SequenceExtractor(box(12), arch="gru", d_model=16)
    with pytest.raises(ValueError, match="dims"):
        explain(extractor, np.zeros((1, 1, 12, F), np.float32))
    with pytest.raises(ValueError, match="dict"):
        explain(extractor, {"1h": np.zeros((12, F), np.float32)})
    with pytest.raises(TypeError, match="Backbone"):
        explain(nn.Linear(2, 2), np.zeros((12, F), np.float32))
    dict_extractor = SequenceExtractor(mtf_space(), arch="gru", d_model=16)
    with pytest.raises(ValueError, match="lacks"):
        explain(dict_extractor, {"1h": np.zeros((16, F), np.float32)})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_explain_of_a_cuda_model_returns_cpu_tensors() -> None:
    torch.manual_seed(0)
    extractor = SequenceExtractor(mtf_space(), arch="gru", d_model=16)
    obs = sample(mtf_space(), batch=2)
    expected = explain(extractor, obs)
    result = explain(extractor.cuda(), obs)
    assert result.keys() == expected.keys()
    for key, value in result.items():
        assert value.device.type == "cpu", key
        torch.testing.assert_close(value, expected[key], rtol=1e-4, atol=1e-5)
