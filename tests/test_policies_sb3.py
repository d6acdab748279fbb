"""Every architecture with Stable-Baselines3's PPO: ``policy_kwargs_for`` and the policy
classes learn on ``tradezoo/BTCUSDT-1h-v0``, write TensorBoard events, save and reload to the
same deterministic actions; dict observations (``tradezoo/BTCUSDT-MTF-v0``); kwargs merging;
the backbone keeps its own initialisation; ``explain`` on a trained model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")
from stable_baselines3 import PPO
from stable_baselines3.common.policies import ActorCriticPolicy
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import tradezoo  # noqa: F401  (registers the envs)
import tradezoo.policies as policies
from tradezoo.policies import (
    ARCHITECTURES,
    POLICY_CLASSES,
    CfCPolicy,
    GRUPolicy,
    SequenceExtractor,
    SequencePolicy,
    explain,
    policy_kwargs_for,
)
from tradezoo.policies.registry import get_architecture
from tradezoo.policies.sb3 import DEFAULT_NET_ARCH

NAMES = list(ARCHITECTURES)
WINDOW = 16
BOX_ENV_KWARGS: dict[str, Any] = {"window": WINDOW, "episode_length": 64}
MTF_ENV_KWARGS: dict[str, Any] = {"timeframes": {"1h": 16, "4h": 8, "1d": 4},
                                  "episode_length": 64}
PPO_KWARGS: dict[str, Any] = {"n_steps": 128, "batch_size": 64, "n_epochs": 1, "seed": 0,
                              "device": "cpu"}
pytestmark = pytest.mark.filterwarnings("ignore:Your observation")  # 2-D Box is fine


@pytest.fixture(autouse=True)
def _cpu_settings() -> Iterator[None]:
    """Flush denormals (as training entry points do) and use one thread; restore after."""
    threads = torch.get_num_threads()
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)


def small_cfg(arch: str) -> dict[str, Any]:
    """Small backbone config: d_model 16, one layer where the config has ``n_layers``."""
    fields = get_architecture(arch).config_cls.field_names()
    cfg: dict[str, Any] = {"d_model": 16}
    if "n_layers" in fields:
        cfg["n_layers"] = 1
    return cfg


def box_env() -> gym.Env:
    return gym.make("tradezoo/BTCUSDT-1h-v0", **BOX_ENV_KWARGS)


def mtf_env() -> gym.Env:
    return gym.make("tradezoo/BTCUSDT-MTF-v0", **MTF_ENV_KWARGS)


def observation_batch(env: gym.Env, n: int = 6) -> Any:
    """Observations from ``n`` seeded resets, stacked (Box) or stacked per key (Dict)."""
    obs = [env.reset(seed=seed)[0] for seed in range(n)]
    if isinstance(obs[0], dict):
        return {key: np.stack([o[key] for o in obs]) for key in obs[0]}
    return np.stack(obs)


def scalar_tags(log_dir: Path) -> list[str]:
    events = sorted(log_dir.rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file under {log_dir}"
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    return list(accumulator.Tags()["scalars"])


def learn_and_check(model: PPO, env: gym.Env, tmp_path: Path, arch: str) -> None:
    """512 steps; parameters move; events written; save + load gives the same actions."""
    extractor = model.policy.features_extractor
    assert isinstance(extractor, SequenceExtractor) and extractor.arch == arch
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(total_timesteps=512)
    assert model.num_timesteps >= 512
    after = model.policy.state_dict()
    moved = [k for k in before if k.startswith("features_extractor.")
             and not torch.equal(before[k], after[k])]
    assert moved, f"{arch}: PPO updates did not reach the backbone"
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())

    tags = scalar_tags(tmp_path / "tb")
    assert "train/value_loss" in tags and "train/policy_gradient_loss" in tags, tags

    obs = observation_batch(env)
    actions, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "model.zip")
    loaded = PPO.load(tmp_path / "model.zip", device="cpu")
    assert type(loaded.policy) is type(model.policy)
    assert loaded.policy.features_extractor.arch == arch
    reloaded_actions, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(reloaded_actions, actions)
    # Actions alone could agree by luck (three classes): the distributions must match too.
    with torch.no_grad():
        model.policy.set_training_mode(False)
        obs_tensor, _ = model.policy.obs_to_tensor(obs)
        probs = model.policy.get_distribution(obs_tensor).distribution.probs
        reloaded_probs = loaded.policy.get_distribution(obs_tensor).distribution.probs
    torch.testing.assert_close(reloaded_probs, probs, rtol=0, atol=0)


# -- every architecture, Box observations --------------------------------------------------


@pytest.mark.parametrize("arch", NAMES)
def test_ppo_learns_with_policy_kwargs_for(arch: str, tmp_path: Path) -> None:
    env = box_env()
    kwargs = policy_kwargs_for(arch, features_dim=16, **small_cfg(arch))
    model = PPO("MlpPolicy", env, policy_kwargs=kwargs, tensorboard_log=str(tmp_path / "tb"),
                **PPO_KWARGS)
    learn_and_check(model, env, tmp_path, arch)


@pytest.mark.parametrize("arch", NAMES)
def test_ppo_learns_with_the_policy_class(arch: str, tmp_path: Path) -> None:
    env = box_env()
    policy_cls = POLICY_CLASSES[arch]
    model = PPO(policy_cls, env, policy_kwargs={"features_extractor_kwargs": small_cfg(arch)},
                tensorboard_log=str(tmp_path / "tb"), **PPO_KWARGS)
    assert isinstance(model.policy, policy_cls)
    assert model.policy.features_extractor.features_dim == 64  # class default
    learn_and_check(model, env, tmp_path, arch)


# -- dict observations ----------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["msa", "gru"])
def test_policy_class_with_the_mtf_dict_env(arch: str, tmp_path: Path) -> None:
    env = mtf_env()
    model = PPO(POLICY_CLASSES[arch], env,
                policy_kwargs={"features_extractor_kwargs": small_cfg(arch)},
                tensorboard_log=str(tmp_path / "tb"), **PPO_KWARGS)
    assert model.policy.features_extractor.timeframes == ["1h", "4h", "1d"]
    learn_and_check(model, env, tmp_path, arch)


def test_multi_input_alias_with_policy_kwargs_for_on_dict_obs() -> None:
    env = mtf_env()
    model = PPO("MultiInputPolicy", env, policy_kwargs=policy_kwargs_for("lstm", d_model=16),
                **PPO_KWARGS)
    actions, _ = model.predict(observation_batch(env, 3), deterministic=True)
    assert actions.shape == (3,) and set(actions.tolist()) <= {0, 1, 2}


# -- kwargs and construction ----------------------------------------------------------------


def test_policy_kwargs_for_returns_ready_kwargs() -> None:
    kwargs = policy_kwargs_for("gru", features_dim=32, d_model=16)
    assert kwargs == {
        "features_extractor_class": SequenceExtractor,
        "features_extractor_kwargs": {"arch": "gru", "features_dim": 32, "d_model": 16},
        "share_features_extractor": True,
        "net_arch": DEFAULT_NET_ARCH,
    }
    kwargs["net_arch"]["pi"].append(5)  # a copy: the default is not shared
    assert DEFAULT_NET_ARCH == {"pi": [64], "vf": [64]}
    assert policy_kwargs_for("gru", net_arch=[8])["net_arch"] == [8]


def test_policy_kwargs_for_rejects_unknown_names_and_keys() -> None:
    with pytest.raises(ValueError, match="valid names"):
        policy_kwargs_for("grux")
    with pytest.raises(ValueError, match=r"(?s)units.*valid keys.*d_model"):
        policy_kwargs_for("gru", units=3)


def test_class_defaults_merge_with_user_extractor_kwargs() -> None:
    env = box_env()
    model = PPO(CfCPolicy, env, policy_kwargs={"features_extractor_kwargs": {"d_model": 32}},
                **PPO_KWARGS)
    extractor = model.policy.features_extractor
    assert extractor.arch == "cfc" and extractor.backbone.d_model == 32
    assert model.policy.features_extractor_kwargs == {"arch": "cfc", "features_dim": 64,
                                                      "d_model": 32}
    assert model.policy.net_arch == DEFAULT_NET_ARCH
    model = PPO(CfCPolicy, env, policy_kwargs={"net_arch": [8],
                                               "features_extractor_kwargs": {"features_dim": 8}},
                **PPO_KWARGS)
    assert model.policy.net_arch == [8] and model.policy.features_dim == 8


def test_policy_class_rejects_another_arch_or_extractor() -> None:
    env = box_env()
    with pytest.raises(ValueError, match=r"(?s)CfCPolicy.*'cfc'.*'gru'"):
        PPO(CfCPolicy, env, policy_kwargs={"features_extractor_kwargs": {"arch": "gru"}})
    from stable_baselines3.common.torch_layers import FlattenExtractor

    with pytest.raises(ValueError, match="SequenceExtractor"):
        PPO(GRUPolicy, env, policy_kwargs={"features_extractor_class": FlattenExtractor})


def test_sequence_policy_takes_the_arch_from_kwargs() -> None:
    model = PPO(SequencePolicy, box_env(), policy_kwargs=policy_kwargs_for("lstm", d_model=16),
                **PPO_KWARGS)
    assert model.policy.features_extractor.arch == "lstm"


def test_policy_classes_keep_the_backbone_init_and_ortho_init_the_heads() -> None:
    env = box_env()
    extractor_kwargs = {"arch": "transformer", "features_dim": 16, "d_model": 16}
    torch.manual_seed(0)
    policy = SequencePolicy(env.observation_space, env.action_space, lambda _: 3e-4,
                            features_extractor_kwargs=extractor_kwargs)
    torch.manual_seed(0)
    reference = SequenceExtractor(env.observation_space, **extractor_kwargs)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(policy.features_extractor.state_dict()[key], value,
                                   rtol=0, atol=0, msg=key)
    # SB3's orthogonal init still applies to the heads: action_net rows have norm 0.01.
    row_norms = policy.action_net.weight.norm(dim=1)
    torch.testing.assert_close(row_norms, torch.full_like(row_norms, 0.01))
    # Plain ActorCriticPolicy (string alias path) re-initialises the extractor: the contrast.
    torch.manual_seed(0)
    plain = ActorCriticPolicy(env.observation_space, env.action_space, lambda _: 3e-4,
                              **policy_kwargs_for("transformer", features_dim=16, d_model=16))
    assert not torch.equal(plain.features_extractor.backbone.input_proj.weight,
                           reference.backbone.input_proj.weight)


def test_policy_classes_cover_every_architecture_at_stable_import_paths() -> None:
    assert list(POLICY_CLASSES) == NAMES
    for arch, cls in POLICY_CLASSES.items():
        assert cls.arch == arch and issubclass(cls, ActorCriticPolicy)
        assert cls.__module__ == "tradezoo.policies.sb3"
        assert getattr(policies, cls.__name__) is cls
    expected = {"MambaPolicy", "MambaTSPolicy", "MSAPolicy", "TimeParticlePolicy", "CfCPolicy",
                "LTCPolicy", "LSTMPolicy", "GRUPolicy", "TransformerPolicy", "MLPPolicy"}
    assert {cls.__name__ for cls in POLICY_CLASSES.values()} == expected


# -- explain --------------------------------------------------------------------------------


def test_explain_on_algorithm_and_policy_box_and_dict() -> None:
    env = box_env()
    model = PPO(GRUPolicy, env, policy_kwargs={"features_extractor_kwargs": {"d_model": 16}},
                **PPO_KWARGS)
    obs, _ = env.reset(seed=0)
    from_algorithm = explain(model, obs)
    assert from_algorithm["hidden_norm"].shape == (1, WINDOW)
    torch.testing.assert_close(explain(model.policy, obs)["hidden_norm"],
                               from_algorithm["hidden_norm"])
    assert explain(model, observation_batch(env, 4))["hidden_norm"].shape == (4, WINDOW)

    env = mtf_env()
    model = PPO(GRUPolicy, env, policy_kwargs={"features_extractor_kwargs": {"d_model": 16}},
                **PPO_KWARGS)
    obs, _ = env.reset(seed=0)
    shapes = {k: tuple(v.shape) for k, v in explain(model, obs).items()}
    assert shapes == {"1h/hidden_norm": (1, 16), "4h/hidden_norm": (1, 8),
                      "1d/hidden_norm": (1, 4)}
