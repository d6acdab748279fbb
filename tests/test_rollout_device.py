"""Rollouts and evaluations on their own device (:mod:`tradezoo.agents.rollout`).

Without a GPU the split is forced onto the CPU (a separate rollout copy on the update device):
it must train bit for bit as SB3's plain PPO does, keep the rollout copy equal to the update
copy (weights and requires_grad flags) after every update, run every rollout and evaluation
forward on the rollout copy and every update on the update copy, and save only the update
copy."""

from __future__ import annotations

import copy
import io
import warnings
import zipfile
from typing import Any

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.policies import ActorCriticPolicy

from tradezoo.agents.callbacks import FreezeBackboneCallback, TradingEvalCallback
from tradezoo.agents.data import PreparedData, prepare_data
from tradezoo.agents.ppo import (
    PPOConfig,
    evaluate_ppo,
    make_eval_env,
    make_ppo,
    make_train_env,
    train_ppo,
)
from tradezoo.agents.rollout import (
    CPU_ROLLOUT_MAX_ENVS,
    SplitDevicePPO,
    acting_policy,
    choose_rollout_device,
)
from tradezoo.data import load_dataset
from tradezoo.policies.registry import ARCHITECTURES, get_architecture
from tradezoo.policies.sb3 import POLICY_CLASSES

WINDOW = 16
pytestmark = pytest.mark.usefixtures("one_thread")
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(scope="module")
def data() -> PreparedData:
    return prepare_data(load_dataset("bybit-btcusdt-1h").iloc[:1200], window=WINDOW)


def tiny(**overrides: Any) -> PPOConfig:
    """Three rollouts of 2 envs x 32 steps."""
    base: dict[str, Any] = dict(
        timesteps=192, n_envs=2, n_steps=32, batch_size=32, n_epochs=2, episode_length=48,
        arch_config={"d_model": 8}, features_dim=8, eval_freq=0, checkpoint_freq=0,
        eval_episodes=2, eval_episode_length=24, tensorboard=False,
    )
    base.update(overrides)
    return PPOConfig(**base)


def test_rule_cpu_rollouts_for_small_batches_when_updates_run_on_a_gpu() -> None:
    assert choose_rollout_device(CPU, 8) == CPU
    assert choose_rollout_device(CPU, 10_000) == CPU
    assert choose_rollout_device(CUDA, 8) == CPU
    assert choose_rollout_device(CUDA, CPU_ROLLOUT_MAX_ENVS) == CPU
    assert choose_rollout_device(CUDA, CPU_ROLLOUT_MAX_ENVS + 1) == CUDA
    assert choose_rollout_device(CUDA, 8, "update") == CUDA
    assert choose_rollout_device(CUDA, 8, "cpu") == CPU
    with pytest.raises(ValueError, match="rollout_device"):
        choose_rollout_device(CPU, 8, "tpu")


class _Recorder(BaseCallback):
    """Checks at the first step of each rollout that the rollout copy holds the update
    copy's weights and ``requires_grad`` flags (they select kernels, so a copy with other flags
    may round differently on some machines), and that callbacks see the update copy."""

    def __init__(self, update_policy: Any) -> None:
        super().__init__()
        self.update_policy = update_policy
        self.synced_checks = 0
        self._first = False

    def _on_rollout_start(self) -> None:
        self._first = True

    def _on_step(self) -> bool:
        model = self.model
        assert model.policy is self.update_policy  # what callbacks (and checkpoints) see
        if self._first:
            self._first = False
            rollout_policy = getattr(model, "rollout_policy", model.policy)
            mine, theirs = rollout_policy.state_dict(), model.policy.state_dict()
            assert mine.keys() == theirs.keys()
            assert all(torch.equal(mine[k], theirs[k]) for k in mine)
            flags = [p.requires_grad for p in rollout_policy.parameters()]
            assert flags == [p.requires_grad for p in model.policy.parameters()]
            self.synced_checks += 1
        return True


def _batch_sizes(module: torch.nn.Module) -> list[int]:
    sizes: list[int] = []
    module.register_forward_hook(lambda _m, args, _out: sizes.append(int(args[0].shape[0])))
    return sizes


def _train(data: PreparedData, model_cls: type, *, split: bool) -> dict[str, Any]:
    """A tiny run with validation episodes and backbone freezing (callbacks that read and
    change the update copy), from seed 0."""
    cfg = tiny()
    venv = make_train_env(data, cfg, 0)
    reference = make_ppo(data, "gru", config=cfg, seed=0, device="cpu", env=venv)
    model = model_cls(POLICY_CLASSES["gru"], venv, learning_rate=cfg.lr, n_steps=cfg.n_steps,
                      batch_size=cfg.batch_size, n_epochs=cfg.n_epochs,
                      policy_kwargs=reference.policy_kwargs, seed=0, device="cpu", verbose=0)
    if split:
        model.set_rollout_device("cpu", separate=True)
        assert model.separate_rollout_policy
    model.set_logger(Logger(folder=None, output_formats=[]))
    update_sizes = _batch_sizes(model.policy.features_extractor)
    rollout_sizes = _batch_sizes(acting_policy(model).features_extractor)
    evaluation = TradingEvalCallback(make_eval_env(data, cfg, "val"), eval_freq=64,
                                     figure=False, eval_seed=11)
    recorder = _Recorder(model.policy)
    model.learn(cfg.timesteps, callback=CallbackList(
        [FreezeBackboneCallback(1), evaluation, recorder]))
    evaluation.evaluate()  # after the last update: the rollout copy must be synced first
    buffer = model.rollout_buffer
    return {"model": model, "state": copy.deepcopy(model.policy.state_dict()),
            "optimizer": copy.deepcopy(model.policy.optimizer.state_dict()),
            "evaluations": evaluation.evaluations, "synced_checks": recorder.synced_checks,
            "update_sizes": update_sizes, "rollout_sizes": rollout_sizes,
            "buffer": (buffer.observations.copy(), buffer.actions.copy(),
                       buffer.log_probs.copy(), buffer.values.copy())}


def _assert_same_training(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["state"].keys() == b["state"].keys()
    for key in a["state"]:
        assert torch.equal(a["state"][key], b["state"][key]), key
    states_a, states_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert states_a.keys() == states_b.keys()
    for index in states_a:
        for name in states_a[index]:
            assert torch.equal(states_a[index][name], states_b[index][name]), (index, name)
    for x, y in zip(a["buffer"], b["buffer"], strict=True):
        np.testing.assert_array_equal(x, y)
    assert a["evaluations"] == b["evaluations"]


def test_split_rollout_copy_trains_bit_for_bit_as_plain_sb3_ppo(data: PreparedData) -> None:
    plain = _train(data, PPO, split=False)
    unsplit = _train(data, SplitDevicePPO, split=False)
    split = _train(data, SplitDevicePPO, split=True)
    assert not unsplit["model"].separate_rollout_policy  # updates on the CPU: one policy
    _assert_same_training(plain, unsplit)
    _assert_same_training(plain, split)
    assert len(plain["evaluations"]) == 4  # at 64, 128, 192 steps and after training
    # the rollout copy was synced after each of the 2 updates (and before the first rollout)
    assert split["synced_checks"] == 3
    # every rollout and evaluation forward ran on the rollout copy, updates on the update copy
    assert set(split["update_sizes"]) == {32}
    assert split["rollout_sizes"] and 32 not in split["rollout_sizes"]
    assert set(split["rollout_sizes"]) <= {1, 2}
    assert set(plain["update_sizes"]) >= {2, 32}  # one policy does both


def test_split_model_saves_the_update_copy_only(data: PreparedData) -> None:
    cfg = tiny(timesteps=64)
    model = make_ppo(data, "gru", config=cfg, seed=0, device="cpu")
    model.set_rollout_device("cpu", separate=True)
    model.learn(cfg.timesteps)
    buffer = io.BytesIO()
    model.save(buffer)
    with zipfile.ZipFile(buffer) as archive:
        record = archive.read("data").decode()
        assert "policy.optimizer.pth" in archive.namelist()
    assert "rollout_policy" not in record and "_update_policy" not in record
    # the optimiser saved is the update copy's, with the Adam state of the update
    assert model.policy.optimizer.state and model.rollout_policy.optimizer is None


def test_evaluate_ppo_of_a_split_model_acts_with_the_synced_rollout_copy(
        data: PreparedData) -> None:
    model = make_ppo(data, "gru", config=tiny(), seed=0, device="cpu")
    model.set_rollout_device("cpu", separate=True)
    with torch.no_grad():  # an update the rollout copy has not seen yet
        for param in model.policy.parameters():
            param.add_(0.01)
    update_sizes = _batch_sizes(model.policy.features_extractor)
    rollout_sizes = _batch_sizes(model.rollout_policy.features_extractor)
    split = evaluate_ppo(model, data, "val", config=tiny())
    assert rollout_sizes and not update_sizes
    unsplit = evaluate_ppo(model.policy, data, "val", config=tiny())
    np.testing.assert_array_equal(split.actions, unsplit.actions)


def test_train_ppo_records_its_rollout_device_and_checks_it_first(
        data: PreparedData, tmp_path: Any) -> None:
    result = train_ppo(data, "gru", config=tiny(timesteps=64), out_dir=tmp_path / "run",
                       device="cpu", progress=False, verbose=False)
    assert result.rollout_device == "cpu" and result.device == "cpu"
    assert not result.model.separate_rollout_policy
    with pytest.raises(ValueError, match="rollout_device"):
        train_ppo(data, "gru", config=tiny(timesteps=64), out_dir=tmp_path / "bad",
                  device="cpu", rollout_device="gpu", progress=False, verbose=False)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_policy_copies_to_a_rollout_copy_that_acts_the_same(
        arch: str, data: PreparedData) -> None:
    fields = get_architecture(arch).config_cls.field_names()
    arch_config: dict[str, Any] = {"d_model": 8, **({"n_layers": 1} if "n_layers" in fields
                                                     else {})}
    cfg = tiny(arch_config=arch_config)
    model = make_ppo(data, arch, config=cfg, seed=0, device="cpu")
    model.set_rollout_device("cpu", separate=True)
    with torch.no_grad():
        for param in model.policy.parameters():
            param.mul_(1.01)
    obs = model.get_env().reset()  # the model's own inputs (timeframes, elapsed time)
    tensor, _ = model.policy.obs_to_tensor(obs)
    model.policy.set_training_mode(False)
    with torch.no_grad():
        want = model.policy.get_distribution(tensor).distribution.probs
        got = acting_policy(model).get_distribution(tensor).distribution.probs
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_no_wrong_cpu_recommendation_from_sb3(data: PreparedData) -> None:
    """SB3 warns that an ``ActorCriticPolicy`` on a GPU should run on the CPU; with rollouts
    placed by SplitDevicePPO that advice is wrong, and the zoo's classes never match it."""
    cfg = tiny(timesteps=64)
    venv = make_train_env(data, cfg, 0)
    for cls, expect_warning in ((PPO, True), (SplitDevicePPO, False)):
        model = cls(ActorCriticPolicy, venv, n_steps=32, batch_size=32, device="cpu")
        model.device = CUDA  # the check reads only the device and the policy class
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model._maybe_recommend_cpu()
        assert any("GPU" in str(w.message) for w in caught) is expect_warning, cls
    for policy_cls in POLICY_CLASSES.values():
        assert policy_cls.__name__ != "ActorCriticPolicy"
