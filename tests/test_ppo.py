"""PPO: config, training run directory and TensorBoard tags, same seed -> same first update,
resume, warm start from a supervised checkpoint (actions = classifier argmax), backbone
freezing, checkpoints, evaluation replayed through ``simulate``, bad input."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger

from tradezoo.agents.callbacks import (
    TRADING_TAGS,
    FreezeBackboneCallback,
    NonFiniteGuardCallback,
    TradingMetricsCallback,
    run_episodes,
)
from tradezoo.agents.checkpoint import CheckpointError
from tradezoo.agents.data import PreparedData, prepare_data
from tradezoo.agents.ppo import (
    PPOConfig,
    PPOResult,
    evaluate_ppo,
    load_ppo_policy,
    make_ppo,
    make_train_env,
    train_ppo,
)
from tradezoo.agents.supervised import (
    NonFiniteLossError,
    SupervisedConfig,
    TrainingInterrupted,
    model_from_checkpoint,
    train_supervised,
)
from tradezoo.data import load_dataset
from tradezoo.data.features import FeatureSpec

WINDOW = 16
D_MODEL = 16


def tiny(**overrides: Any) -> PPOConfig:
    """Two rollouts of 2 envs x 64 steps: tests check mechanics, not skill."""
    base: dict[str, Any] = dict(
        timesteps=256, n_envs=2, n_steps=64, batch_size=64, n_epochs=2, episode_length=96,
        arch_config={"d_model": D_MODEL}, features_dim=D_MODEL, eval_freq=0, checkpoint_freq=0,
        tensorboard=False,
    )
    base.update(overrides)
    return PPOConfig(**base)


# One intra-op thread for the whole module (the fixture is in conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bars():
    return load_dataset("bybit-btcusdt-1h").iloc[:1500]


@pytest.fixture(scope="module")
def data(bars) -> PreparedData:
    return prepare_data(bars, window=WINDOW)


@pytest.fixture(scope="module")
def run(data: PreparedData, tmp_path_factory: pytest.TempPathFactory) -> PPOResult:
    """One monitored run: evaluation, checkpoints and TensorBoard on."""
    out = tmp_path_factory.mktemp("ppo_run")
    config = tiny(eval_freq=128, checkpoint_freq=128, tensorboard=True)
    return train_ppo(data, "gru", config=config, out_dir=out, seed=0, device="cpu",
                     progress=False, verbose=False)


@pytest.fixture(scope="module")
def supervised_checkpoint(data: PreparedData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("supervised")
    config = SupervisedConfig(epochs=1, batch_size=32, max_train_batches=3, max_eval_batches=1,
                              features_dim=D_MODEL, progress=False, tensorboard=False)
    result = train_supervised(data, "gru", config=config, arch_config={"d_model": D_MODEL},
                              out_dir=out, device="cpu", verbose=False)
    return result.best_checkpoint


def env_decision_rows(data: PreparedData, split: str) -> np.ndarray:
    """Decision rows of ``TradingEnv(split=...)`` on ``data`` (its split uses horizon 1, so its
    validation part starts a few rows before the label split's; the test parts agree)."""
    from tradezoo.envs import TradingEnv

    env = TradingEnv(data.bars, window=data.window, split=split, scaler=data.scaler)
    dataset = env.market.datasets[0]
    rows = np.arange(dataset.first_decision, dataset.last_decision + 1) - dataset.offset
    if split == "test":
        np.testing.assert_array_equal(rows, data.decision_rows("test"))
    return rows


def env_observations(data: PreparedData, n: int = 48, seed: int = 3) -> np.ndarray:
    """Observations from random trading (non-zero account columns) ``[n * 2, window, F + 2]``."""
    venv = make_train_env(data, tiny(), seed)
    rng = np.random.default_rng(seed)
    obs = venv.reset()
    batch = [obs]
    for _ in range(n - 1):
        obs, _, _, _ = venv.step(rng.integers(0, 3, size=venv.num_envs))
        batch.append(obs)
    out = np.concatenate(batch)
    assert np.abs(out[:, :, data.n_features :]).max() > 0  # the account columns move
    return out


def parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Snapshots(BaseCallback):
    """Policy parameters before the first rollout and after every update."""

    def __init__(self) -> None:
        super().__init__()
        self.extractor: list[dict[str, torch.Tensor]] = []
        self.action_net: list[dict[str, torch.Tensor]] = []

    def _take(self) -> None:
        self.extractor.append(parameters(self.model.policy.features_extractor))
        self.action_net.append(parameters(self.model.policy.action_net))

    def _on_rollout_start(self) -> None:
        self._take()

    def _on_training_end(self) -> None:
        self._take()

    def _on_step(self) -> bool:
        return True


# ------------------------------------------------------------------------------ config


def test_config_round_trip_and_bad_values() -> None:
    config = tiny(pi_layers=[], vf_layers=[32, 32], target_kl=0.05)
    assert config.vf_layers == (32, 32)
    assert PPOConfig.from_dict(config.to_dict()) == config
    assert config.rollout_size == 128
    with pytest.raises(ValueError, match=r"unknown PPO training key\(s\) \['lerning_rate'\]; "
                                         r"valid keys: \['timesteps'"):
        PPOConfig.from_dict({"lerning_rate": 1e-3})
    bad: list[tuple[dict[str, Any], str]] = [
        ({"timesteps": 0}, "timesteps must be an integer >= 1"),
        ({"lr": -1.0}, "lr must be a number > 0"),
        ({"gamma": 1.5}, r"gamma must be a number >= 0.0 and <= 1.0"),
        ({"batch_size": 512}, r"batch_size \(512\) must be <= n_envs \* n_steps"),
        ({"pi_layers": [0]}, "pi_layers must be a list of layer widths >= 1"),
        ({"action_scheme": "long_only"}, "action_scheme must be one of"),
        ({"eval_episodes": 3}, "eval_episodes=3 needs eval_episode_length"),
        ({"allow_short": "yes"}, "allow_short must be true or false"),
        ({"freeze_backbone_updates": -1}, "freeze_backbone_updates must be an integer >= 0"),
    ]
    for overrides, message in bad:
        with pytest.raises(ValueError, match=message):
            tiny(**overrides)


# ------------------------------------------------------------------- training, logs, files


def test_run_writes_models_checkpoints_and_tensorboard(run: PPOResult) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = run.out_dir
    assert run.num_timesteps == 256 and run.model.num_timesteps == 256
    for stem in ("final_model", "best_model", "checkpoints/ppo_128_steps",
                 "checkpoints/ppo_256_steps"):
        assert (out / f"{stem}.zip").is_file() and (out / f"{stem}.pt").is_file(), stem
    assert run.best_model == out / "best_model.zip"
    assert [e["timesteps"] for e in run.evaluations] == [128, 256]
    assert run.best_mean_reward == max(e["mean_reward"] for e in run.evaluations)
    # The sidecar is a plain tradezoo checkpoint: weights_only, everything to rebuild the env.
    sidecar = torch.load(out / "final_model.pt", weights_only=True)
    assert sidecar["kind"] == "ppo" and sidecar["arch"] == "gru"
    assert sidecar["num_timesteps"] == 256 and sidecar["sb3_zip"] == "final_model.zip"
    assert sidecar["window"] == WINDOW and sidecar["action_scheme"] == "target"
    assert sidecar["arch_config"]["d_model"] == D_MODEL
    assert sidecar["net_arch"] == {"pi": [], "vf": [64]}
    assert set(sidecar["splits"]) >= {"train", "val", "test", "fractions"}
    assert sidecar["env"]["split_fractions"] == [0.7, 0.15, 0.15]
    assert PPOConfig.from_dict(sidecar["training"]) == run.config

    accumulator = EventAccumulator(str(run.log_dir))
    accumulator.Reload()
    scalars = set(accumulator.Tags()["scalars"])
    assert set(TRADING_TAGS) <= scalars
    assert {"rollout/ep_rew_mean", "train/loss", "train/value_loss", "eval/mean_reward",
            "eval/return", "eval/sharpe"} <= scalars
    assert "eval/equity_curve" in accumulator.Tags()["images"]
    assert accumulator.PluginTagToContent("hparams")  # the HParams tab has the run
    returns = [e.value for e in accumulator.Scalars("trading/return")]
    assert returns and all(math.isfinite(v) and v > -1 for v in returns)
    trades = [e.value for e in accumulator.Scalars("trading/n_trades")]
    assert all(v >= 0 for v in trades)


def test_same_seed_same_first_update(data: PreparedData, tmp_path: Path) -> None:
    config = tiny(timesteps=128)  # exactly one rollout and one update

    def first_update(seed: int, name: str) -> dict[str, torch.Tensor]:
        result = train_ppo(data, "gru", config=config, out_dir=tmp_path / name, seed=seed,
                           device="cpu", progress=False, verbose=False)
        assert result.model.num_timesteps == 128
        return parameters(result.model.policy)

    first = first_update(7, "a")
    again = first_update(7, "b")
    other = first_update(8, "c")
    assert same(first, again)
    assert not same(first, other)
    # The update moved the policy (the comparison is not between untouched initial weights).
    fresh = make_ppo(data, "gru", config=config, seed=7, device="cpu")
    assert not same(parameters(fresh.policy), first)


def test_resume_continues_the_timestep_count(run: PPOResult, data: PreparedData,
                                             tmp_path: Path) -> None:
    checkpoint = run.out_dir / "checkpoints" / "ppo_128_steps.zip"
    assert PPO.load(checkpoint, device="cpu").num_timesteps == 128

    class FirstCount(BaseCallback):
        def _on_training_start(self) -> None:
            self.start = self.model.num_timesteps

        def _on_step(self) -> bool:
            return True

    seen = FirstCount()
    resumed = train_ppo(data, "gru", config=tiny(timesteps=384), out_dir=tmp_path, seed=0,
                        device="cpu", resume_from=checkpoint, progress=False, verbose=False,
                        callbacks=[seen])
    assert seen.start == 128  # continues from the saved count, not from 0
    assert resumed.num_timesteps == 384
    assert torch.load(tmp_path / "final_model.pt", weights_only=True)["num_timesteps"] == 384
    # The sidecar next to the zip works as the resume path too; nothing left to do -> no update.
    again = train_ppo(data, "gru", config=None, out_dir=tmp_path / "again", seed=0,
                      device="cpu", resume_from=tmp_path / "final_model.pt", progress=False,
                      verbose=False)
    assert again.num_timesteps == 384

    with pytest.raises(ValueError, match=r"cannot resume .* \(lr: checkpoint 0.0003 vs config "
                                         r"0.001\)"):
        train_ppo(data, "gru", config=tiny(timesteps=384, lr=1e-3), out_dir=tmp_path / "x",
                  device="cpu", resume_from=checkpoint, progress=False, verbose=False)
    with pytest.raises(CheckpointError, match="architecture mismatch"):
        train_ppo(data, "lstm", config=tiny(timesteps=384), out_dir=tmp_path / "x",
                  device="cpu", resume_from=checkpoint, progress=False, verbose=False)
    with pytest.raises(FileNotFoundError, match="no such file"):
        train_ppo(data, "gru", config=tiny(), out_dir=tmp_path / "x", device="cpu",
                  resume_from=tmp_path / "missing.zip", progress=False, verbose=False)


def test_interrupt_saves_a_resumable_checkpoint(data: PreparedData, tmp_path: Path) -> None:
    class CtrlC(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps >= 130:  # during the second rollout
                raise KeyboardInterrupt
            return True

    with pytest.raises(TrainingInterrupted, match="interrupted at timestep") as caught:
        train_ppo(data, "gru", config=tiny(), out_dir=tmp_path, device="cpu", progress=False,
                  verbose=False, callbacks=[CtrlC()])
    assert caught.value.checkpoint == tmp_path / "interrupted.zip"
    assert caught.value.checkpoint.is_file() and (tmp_path / "interrupted.pt").is_file()
    saved = torch.load(tmp_path / "interrupted.pt", weights_only=True)
    assert saved["num_timesteps"] == 130  # the steps of the cut rollout count as done
    resumed = train_ppo(data, "gru", config=tiny(), out_dir=tmp_path, device="cpu",
                        resume_from=caught.value.checkpoint, progress=False, verbose=False)
    assert resumed.num_timesteps == 130 + 128  # one more whole rollout reaches >= 256


# ---------------------------------------------------------------------------- warm start


def test_warm_start_actions_equal_classifier_argmax(
    data: PreparedData, supervised_checkpoint: Path
) -> None:
    classifier = model_from_checkpoint(supervised_checkpoint)
    model = make_ppo(data, "gru", config=tiny(features_dim=None, arch_config={}), seed=0,
                     device="cpu", init_from=supervised_checkpoint)
    assert model.tradezoo["init_from"] == str(supervised_checkpoint)
    obs = env_observations(data)
    actions, _ = model.predict(obs, deterministic=True)
    with torch.no_grad():
        logits = classifier(torch.as_tensor(obs))  # [N, 3]
        policy_logits = model.policy.get_distribution(
            model.policy.obs_to_tensor(obs)[0]).distribution.logits
    np.testing.assert_array_equal(actions, logits.argmax(-1).numpy())
    # Not only the argmax: the action head's logits are the classifier's (up to softmax shift).
    torch.testing.assert_close(torch.log_softmax(logits, -1), policy_logits, rtol=0, atol=1e-5)
    assert len(np.unique(actions)) > 1  # the observations do not all map to one class


def test_warm_start_mismatches_are_named(data: PreparedData, supervised_checkpoint: Path,
                                         bars) -> None:
    with pytest.raises(CheckpointError, match="architecture mismatch: the checkpoint holds "
                                              "'gru', expected 'lstm'"):
        make_ppo(data, "lstm", config=tiny(), device="cpu", init_from=supervised_checkpoint)
    other_features = prepare_data(bars, window=WINDOW,
                                  feature_spec=FeatureSpec(include_range=False))
    with pytest.raises(CheckpointError, match=r"feature spec mismatch .*include_range"):
        make_ppo(other_features, "gru", config=tiny(), device="cpu",
                 init_from=supervised_checkpoint)
    other_window = prepare_data(bars, window=WINDOW + 8)
    with pytest.raises(CheckpointError, match="window mismatch: the checkpoint has 16"):
        make_ppo(other_window, "gru", config=tiny(), device="cpu",
                 init_from=supervised_checkpoint)
    other_scaler = prepare_data(bars, window=WINDOW, split_fractions=(0.6, 0.2, 0.2))
    with pytest.raises(CheckpointError, match="scaler mismatch"):
        make_ppo(other_scaler, "gru", config=tiny(), device="cpu",
                 init_from=supervised_checkpoint)
    with pytest.raises(CheckpointError, match=r"architecture config mismatch \(d_model: "
                                              r"checkpoint 16 vs config 32\)"):
        make_ppo(data, "gru", config=tiny(arch_config={"d_model": 32}), device="cpu",
                 init_from=supervised_checkpoint)
    with pytest.raises(CheckpointError, match="features_dim mismatch"):
        make_ppo(data, "gru", config=tiny(features_dim=32), device="cpu",
                 init_from=supervised_checkpoint)
    with pytest.raises(ValueError, match=r"warm start needs pi_layers=\(\)"):
        make_ppo(data, "gru", config=tiny(pi_layers=[16]), device="cpu",
                 init_from=supervised_checkpoint)
    with pytest.raises(ValueError, match="warm start needs a discrete action scheme"):
        make_ppo(data, "gru", config=tiny(action_scheme="continuous"), device="cpu",
                 init_from=supervised_checkpoint)
    with pytest.raises(FileNotFoundError):
        make_ppo(data, "gru", config=tiny(), device="cpu", init_from="/nonexistent/best.pt")
    ppo_sidecar_kind = Path(str(supervised_checkpoint))  # a supervised file is not a PPO one
    with pytest.raises(CheckpointError, match="kind 'supervised', expected 'ppo'"):
        load_ppo_policy(ppo_sidecar_kind)


def test_backbone_frozen_for_the_first_updates(data: PreparedData, supervised_checkpoint: Path,
                                               tmp_path: Path) -> None:
    snapshots = Snapshots()
    result = train_ppo(data, "gru", config=tiny(timesteps=384, features_dim=None, arch_config={},
                                                freeze_backbone_updates=1),
                       out_dir=tmp_path, device="cpu", init_from=supervised_checkpoint,
                       progress=False, verbose=False, callbacks=[snapshots])
    extractor, head = snapshots.extractor, snapshots.action_net
    assert len(extractor) == 4  # before update 1, after updates 1, 2, 3
    warm = torch.load(supervised_checkpoint, weights_only=True)["state_dict"]
    start = {k[len("extractor."):]: v for k, v in warm.items() if k.startswith("extractor.")}
    assert same(extractor[0], start)  # the warm start loaded the classifier's backbone
    assert same(extractor[1], extractor[0])  # frozen during update 1
    assert not same(head[1], head[0])  # ... while the action head trained
    assert not same(extractor[2], extractor[1])  # unfrozen for update 2
    assert not same(extractor[3], extractor[2])
    assert all(p.requires_grad for p in result.model.policy.parameters())


# ---------------------------------------------------------------------------- evaluation


def sharpened(model: PPO, scale: float = 50.0) -> PPO:
    """Scale the action head so the greedy action changes with the observation (trades)."""
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        weight = model.policy.action_net.weight
        weight.copy_(torch.randn(weight.shape, generator=generator) * scale)
    return model


@pytest.mark.parametrize("split", ["val", "test"])
def test_evaluate_replays_the_env_through_simulate(data: PreparedData, split: str) -> None:
    model = sharpened(make_ppo(data, "gru", config=tiny(), seed=1, device="cpu"))
    evaluation = evaluate_ppo(model, data, split)  # type: ignore[arg-type]
    rows = env_decision_rows(data, split)
    assert len(evaluation.actions) == len(rows)  # one full pass over every decision bar
    assert evaluation.targets.index[0] == data.features.index[rows[0]]
    backtest = evaluation.backtest
    assert len(backtest.fills) >= 5  # the policy trades: the replay is not a flat line
    np.testing.assert_allclose(backtest.equity.to_numpy(), evaluation.env_equity.to_numpy(),
                               rtol=0, atol=1e-9)
    assert evaluation.max_equity_difference <= 1e-9
    # The env's own episode metrics agree with the backtest's (both from compute_metrics).
    assert evaluation.episode_metrics["total_return"] == pytest.approx(
        backtest.metrics.total_return, abs=1e-9)
    assert evaluation.episode_metrics["n_trades"] == backtest.metrics.n_trades
    assert evaluation.metrics["backtest/total_return"] == pytest.approx(
        backtest.metrics.total_return)
    assert evaluation.metrics["buy_and_hold/total_return"] == pytest.approx(
        backtest.benchmark_metrics.total_return)


def test_evaluate_checkpoint_paths_and_bad_input(run: PPOResult, data: PreparedData,
                                                 bars, tmp_path: Path) -> None:
    by_model = evaluate_ppo(run, data, "test")
    by_zip = evaluate_ppo(run.final_model, data, "test")
    by_sidecar = evaluate_ppo(run.final_model.with_suffix(".pt"), data, "test")
    np.testing.assert_array_equal(by_model.actions, by_zip.actions)
    np.testing.assert_array_equal(by_model.actions, by_sidecar.actions)
    assert by_zip.backtest.metrics.to_dict() == by_model.backtest.metrics.to_dict()
    policy, checkpoint = load_ppo_policy(run.final_model)
    assert not policy.training and checkpoint["kind"] == "ppo"

    with pytest.raises(ValueError, match="split must be 'train', 'val' or 'test'"):
        evaluate_ppo(run, data, "holdout")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="no sidecar"):
        evaluate_ppo(tmp_path / "nothing.zip", data)
    with pytest.raises(CheckpointError, match="feature spec mismatch"):
        evaluate_ppo(run.final_model, prepare_data(
            bars, window=WINDOW, feature_spec=FeatureSpec(include_dt=False)))
    with pytest.raises(ValueError, match="window 16 differs from the data's 24"):
        evaluate_ppo(run.final_model, prepare_data(bars, window=WINDOW + 8))
    with pytest.raises(TypeError, match="model_or_path must be"):
        evaluate_ppo(42, data)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        evaluate_ppo(broken, data)


# ----------------------------------------------------------------------------- callbacks


def test_trading_metrics_callback_means_and_skips_nan() -> None:
    callback = TradingMetricsCallback()
    callback.model = SimpleNamespace(logger=Logger(folder=None, output_formats=[]))  # type: ignore[assignment]
    episode = {"total_return": 0.1, "sharpe": math.nan, "max_drawdown": -0.2, "turnover": 5.0,
               "fees_paid": 0.01, "funding_paid": -0.001, "n_trades": 3.0}
    callback.locals = {"dones": np.array([True, False, True]),
                       "infos": [{"metrics": episode}, {}, {"metrics": {**episode,
                                                                       "total_return": 0.3}}]}
    callback._on_step()
    values = callback.logger.name_to_value
    assert callback.episodes == 2
    assert values["trading/return"] == pytest.approx(0.2)
    assert values["trading/n_trades"] == 3.0 and values["trading/funding"] == -0.001
    assert "trading/sharpe" not in values  # NaN (undefined) is not logged


def test_non_finite_guard_names_update_and_architecture() -> None:
    guard = NonFiniteGuardCallback("gru")
    guard.model = SimpleNamespace(  # type: ignore[assignment]
        logger=Logger(folder=None, output_formats=[]), num_timesteps=256,
        policy=torch.nn.Linear(2, 2))
    guard.logger.record("train/loss", 0.5)
    guard._on_rollout_start()
    guard.logger.record("train/loss", float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"train/loss=nan\) at update 2, timestep "
                                                 r"\d+, for architecture 'gru'; last finite "
                                                 r"loss 0.5"):
        guard._on_rollout_start()


def test_freeze_callback_rejects_bad_k() -> None:
    with pytest.raises(ValueError, match="freeze_backbone_updates must be an integer >= 0"):
        FreezeBackboneCallback(-2)


def test_run_episodes_full_pass_records_equity(data: PreparedData) -> None:
    from tradezoo.agents.ppo import make_eval_env

    model = make_ppo(data, "gru", config=tiny(), seed=0, device="cpu")
    venv = make_eval_env(data, tiny(), "val")
    (record,) = run_episodes(model, venv)
    rows = env_decision_rows(data, "val")
    assert record["length"] == len(rows) and len(record["equity"]) == len(rows) + 1
    assert record["bars"][0] == rows[0] and record["metrics"] is not None
    assert record["equity"][-1] == pytest.approx(1.0 + record["metrics"]["total_return"])


# ----------------------------------------------------------------------------- bad input


def test_bad_arguments(data: PreparedData, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="data must be a PreparedData"):
        train_ppo("bybit-btcusdt-1h", "gru", out_dir=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown architecture 'grux'"):
        train_ppo(data, "grux", config=tiny(), out_dir=tmp_path, device="cpu")
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        make_ppo(data, "gru", config=tiny(), seed=-1, device="cpu")
    with pytest.raises(ValueError, match="not both"):
        train_ppo(data, "gru", config=tiny(), out_dir=tmp_path, init_from="a.pt",
                  resume_from="b.zip")
    with pytest.raises(ValueError, match=r"PPOConfig\.window=32 differs from the data's window 16"):
        make_ppo(data, "gru", config=tiny(window=32), device="cpu")
    with pytest.raises(ValueError, match="device must be"):
        make_ppo(data, "gru", config=tiny(), device="tpu")
    with pytest.raises(ValueError, match="unknown PPO training key"):
        train_ppo(data, "gru", config={"steps": 10}, out_dir=tmp_path)
    with pytest.raises(ValueError, match="d_modell"):
        make_ppo(data, "gru", config=tiny(arch_config={"d_modell": 8}), device="cpu")
