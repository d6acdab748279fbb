"""msa's multi-timeframe inputs in the trainers: closed 1h/4h/1d bars cut by the env's own rule.

The supervised batches, the evaluation and the PPO env all take a timeframe's window at
decision ``t`` as its last ``window`` bars closed by the close of bar ``t``
(:func:`tradezoo.data.prepare.closed_window_rows`). Checked here: nothing after ``t`` reaches
the windows at ``t`` (bit for bit, by perturbing every later bar), the last bar of a 4h and a
1d window is the last closed one, the supervised inputs equal the env's dict observation of a
flat account, a tiny msa training warm-starts PPO on the same inputs, and data whose interval
or length does not allow them behaves as docs/architectures.md says.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tradezoo.agents.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tradezoo.agents.data import PreparedData, model_timeframes, prepare_data
from tradezoo.agents.ppo import PPOConfig, evaluate_ppo, load_ppo_policy, make_ppo, train_ppo
from tradezoo.agents.supervised import (
    ModelInputs,
    SupervisedConfig,
    evaluate_supervised,
    model_from_checkpoint,
    train_supervised,
)
from tradezoo.data import load_dataset
from tradezoo.data.prepare import closed_window_rows
from tradezoo.envs import TradingEnv

pytestmark = pytest.mark.usefixtures("one_thread")

WINDOW = 8
N_BARS = 8000  # enough 1h bars for the 1d features' warm-up (99 days) and a window
TIMEFRAMES = {"1h": WINDOW, "4h": WINDOW, "1d": WINDOW}
HOUR = pd.Timedelta(hours=1)
FRACTIONS = (0.9, 0.05, 0.05)  # short validation and test walks


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_dataset("bybit-btcusdt-1h").iloc[:N_BARS]


@pytest.fixture(scope="module")
def data(bars: pd.DataFrame) -> PreparedData:
    return prepare_data(bars, window=WINDOW, split_fractions=FRACTIONS)


@pytest.fixture(scope="module")
def msa_data(data: PreparedData) -> PreparedData:
    return data.for_model("msa")


def _tiny_supervised() -> SupervisedConfig:
    return SupervisedConfig(epochs=1, batch_size=32, max_train_batches=2, max_eval_batches=1,
                            eval_batch_size=64, progress=False, tensorboard=False,
                            features_dim=16)


def _dict_env(bars: pd.DataFrame, data: PreparedData, split: str) -> TradingEnv:
    return TradingEnv(bars, window=WINDOW, split=split, scaler=data.scaler,
                      split_fractions=FRACTIONS, observation="dict", timeframes=list(TIMEFRAMES))


def _test_rows(data: PreparedData) -> list[int]:
    """Test decision rows at different places of the 4h and 1d bins: the first one, one whose
    close closes a 4h bin, one in the middle of a 4h bin, one whose close closes a day."""
    rows = data.decision_rows("test")
    hours = data.features.index[rows].hour
    return [int(rows[0]), int(rows[np.flatnonzero(hours % 4 == 3)[3]]),
            int(rows[np.flatnonzero(hours % 4 == 1)[5]]), int(rows[np.flatnonzero(hours == 23)[2]])]


def test_msa_gets_closed_1h_4h_1d_bars_on_hourly_data(msa_data: PreparedData) -> None:
    assert msa_data.timeframe_windows == TIMEFRAMES
    assert [tf.interval.name for tf in msa_data.timeframes] == list(TIMEFRAMES)
    assert msa_data.first_input_row > WINDOW - 1  # the 1d window needs the most history
    assert int(msa_data.train.decision_rows[0]) >= msa_data.first_input_row
    assert int(msa_data.decision_rows("train")[0]) == msa_data.first_input_row


def test_window_ends_at_the_last_closed_bar(msa_data: PreparedData) -> None:
    for t in _test_rows(msa_data):
        close_t = msa_data.features.index[t] + HOUR  # decision time: bar t's close
        for tf in msa_data.timeframes:
            length = pd.Timedelta(minutes=tf.interval.minutes or 0)
            window_rows = closed_window_rows(tf.last_closed, np.array([t]), WINDOW)[0]
            opens = tf.index[window_rows]
            assert (np.diff(window_rows) == 1).all()
            last_open = opens[-1]
            # closed by t's close, and the next bin is not
            assert last_open + length <= close_t < last_open + 2 * length, (tf.interval, t)
            np.testing.assert_array_equal(msa_data.timeframe_inputs(np.array([t]))[
                tf.interval.name][0], tf.features[window_rows])


def _perturbed_after(bars: pd.DataFrame, open_time: pd.Timestamp, seed: int) -> pd.DataFrame:
    """``bars`` with every bar opening after ``open_time`` rescaled by a random factor (prices
    stay a valid OHLC bar) and its volume and funding changed."""
    rng = np.random.default_rng(seed)
    out = bars.copy()
    later = out.index > open_time
    factor = rng.uniform(0.5, 2.0, int(later.sum()))
    for column in ("open", "high", "low", "close"):
        out.loc[later, column] = out.loc[later, column].to_numpy() * factor
    out.loc[later, "volume"] = out.loc[later, "volume"].to_numpy() * rng.uniform(
        0.1, 10.0, int(later.sum()))
    if "funding_rate" in out.columns:
        out.loc[later, "funding_rate"] = out.loc[later, "funding_rate"].to_numpy() + 0.01
    return out


def test_bars_after_the_decision_change_nothing_at_it(
        bars: pd.DataFrame, data: PreparedData, msa_data: PreparedData) -> None:
    for i, t in enumerate(_test_rows(msa_data)):
        open_t = msa_data.features.index[t]
        changed = _perturbed_after(bars, open_t, seed=i)
        assert not changed["close"].equals(bars["close"])
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the long data keeps every timeframe
            other = prepare_data(changed, window=WINDOW,
                                 split_fractions=FRACTIONS).for_model("msa")
        assert other.features.index[t] == open_t
        rows = np.array([t])
        before, after = msa_data.timeframe_inputs(rows), other.timeframe_inputs(rows)
        for name in TIMEFRAMES:
            np.testing.assert_array_equal(after[name], before[name], err_msg=f"{name} at {t}")
        obs_before, _ = _dict_env(bars, data, "test").reset(options={"start": t})
        obs_after, _ = _dict_env(changed, other, "test").reset(options={"start": t})
        for name in TIMEFRAMES:
            np.testing.assert_array_equal(obs_after[name], obs_before[name])
            np.testing.assert_array_equal(obs_after[name], after[name][0])
        # the bar after t does change the windows of t + 1: the perturbation is seen there
        if any(not np.array_equal(a, b) for a, b in zip(
                msa_data.timeframe_inputs(rows + 1).values(),
                other.timeframe_inputs(rows + 1).values(), strict=True)):
            continue
        pytest.fail(f"perturbing the bars after row {t} changed nothing at {t + 1}")


@pytest.mark.parametrize("split", ["train", "test"])
def test_supervised_inputs_equal_the_env_dict_observation(
        bars: pd.DataFrame, data: PreparedData, msa_data: PreparedData, split: str) -> None:
    env = _dict_env(bars, data, split)
    rows = msa_data.decision_rows(split)  # type: ignore[arg-type]
    dataset = env.market.datasets[0]
    assert dataset.first_decision == int(rows[0])  # the same first full window of every tf
    if split == "test":  # the label parts' train ends horizon - 1 rows before the env's
        assert dataset.last_decision == int(rows[-1])
    picked = rows[[0, len(rows) // 3, len(rows) - 1]]
    batch = ModelInputs(msa_data, picked, torch.device("cpu")).get(torch.arange(len(picked)))
    assert isinstance(batch, dict)
    for i, row in enumerate(picked):
        obs, _ = env.reset(options={"start": int(row)})
        assert set(obs) == set(batch)
        for key, value in obs.items():
            np.testing.assert_array_equal(batch[key][i].numpy(), value, err_msg=key)
    assert (batch["account"] == 0).all()  # the flat account of an episode's first decision


def test_tiny_msa_training_warm_starts_ppo_on_the_same_windows(
        bars: pd.DataFrame, data: PreparedData, tmp_path: Path) -> None:
    result = train_supervised(data, "msa", config=_tiny_supervised(),
                              arch_config={"d_model": 16}, out_dir=tmp_path / "sup", seed=0,
                              device="cpu", verbose=False)
    assert result.model.timeframes == TIMEFRAMES
    assert result.model.extractor.timeframes == list(TIMEFRAMES)
    ckpt = load_checkpoint(result.best_checkpoint)
    assert ckpt["timeframes"] == TIMEFRAMES
    assert set(ckpt["timeframe_scalers"]) == set(TIMEFRAMES)
    reloaded = model_from_checkpoint(ckpt)
    assert reloaded.timeframes == TIMEFRAMES
    # the checkpoint's evaluation sees what the trained model sees
    from_file = evaluate_supervised(result.best_checkpoint, data, "val")
    in_memory = evaluate_supervised(result.model, data, "val")
    np.testing.assert_array_equal(from_file.probabilities.to_numpy(),
                                  in_memory.probabilities.to_numpy())

    # warm start: before any update the policy acts as the classifier on env observations
    config = PPOConfig(timesteps=32, n_envs=2, n_steps=16, batch_size=16, n_epochs=1,
                       episode_length=16, eval_freq=0, checkpoint_freq=0, tensorboard=False)
    model = make_ppo(data, "msa", config=config, init_from=result.best_checkpoint,
                     device="cpu")
    assert model.policy.features_extractor.windows == TIMEFRAMES
    env = _dict_env(bars, data, "val")
    msa_data = data.for_model("msa")
    for row in msa_data.decision_rows("val")[:3]:
        obs, _ = env.reset(options={"start": int(row)})
        action, _ = model.policy.predict(obs, deterministic=True)
        windows = {k: torch.from_numpy(v[None]) for k, v in obs.items() if k != "account"}
        with torch.no_grad():
            expected = int(reloaded.forward_features(windows).argmax(-1))
        assert int(action) == expected

    trained = train_ppo(data, "msa", config=config, init_from=result.best_checkpoint,
                        out_dir=tmp_path / "ppo", seed=0, device="cpu", progress=False,
                        verbose=False)
    sidecar = load_checkpoint(trained.final_model.with_suffix(".pt"))
    assert sidecar["timeframes"] == TIMEFRAMES
    loaded = load_ppo_policy(trained.final_model)
    assert loaded.policy.features_extractor.windows == TIMEFRAMES
    walk = evaluate_ppo(loaded, data, "test")
    assert len(walk.actions) == len(msa_data.decision_rows("test"))
    assert walk.max_equity_difference < 1e-9


def test_checkpoint_without_timeframes_loads_as_box_and_is_refused_by_a_dict_run(
        data: PreparedData, tmp_path: Path) -> None:
    """A checkpoint written before timeframes were recorded is a Box model: it loads and
    scores on Box windows, and a warm start that would give it timeframes is a clear error."""
    short = prepare_data(data.bars.iloc[:1500], window=WINDOW, split_fractions=FRACTIONS)
    with pytest.warns(UserWarning, match="leaves out the 1d timeframe, the data is too short"):
        assert short.for_model("msa").timeframe_windows == {"1h": WINDOW, "4h": WINDOW}
    box = train_supervised(short.with_timeframes({}), "gru", config=_tiny_supervised(),
                           arch_config={"d_model": 16}, out_dir=tmp_path / "gru", seed=0,
                           device="cpu", verbose=False)
    assert box.model.timeframes == {}
    # an msa Box checkpoint as older versions wrote them: no timeframe keys
    from tradezoo.agents.supervised import SupervisedModel

    old_model = SupervisedModel("msa", data.n_features, WINDOW, features_dim=16, d_model=16,
                                scales=(1, 4))
    ckpt = dict(load_checkpoint(box.best_checkpoint))
    ckpt.pop("timeframes")
    ckpt.pop("timeframe_scalers")
    ckpt.update(arch="msa", arch_config=old_model.backbone_config(),
                state_dict=old_model.state_dict(), scaler=data.scaler.to_dict())
    old = save_checkpoint(ckpt, tmp_path / "old_msa.pt")
    reloaded = model_from_checkpoint(old)
    assert reloaded.timeframes == {} and reloaded.extractor.timeframes == []
    assert len(evaluate_supervised(old, data, "test").signals) == len(data.decision_rows("test"))
    with pytest.raises(CheckpointError, match=r"input mismatch.*Box windows"):
        make_ppo(data, "msa", config=PPOConfig(n_envs=1, n_steps=16, batch_size=16),
                 init_from=old, device="cpu")


def test_intervals_that_do_not_allow_timeframes() -> None:
    assert model_timeframes("msa", "1h", 64) == {"1h": 64, "4h": 64, "1d": 64}
    assert model_timeframes("msa", "15m", 32) == {"15m": 32, "4h": 32, "1d": 32}
    assert model_timeframes("msa", "4h", 16) == {"4h": 16, "1d": 16}
    # daily bars: no coarser chapter timeframe divides them; msa pools its Box window
    assert model_timeframes("msa", "1d", 64) == {}
    assert model_timeframes("msa", "1w", 64) == {}
    assert model_timeframes("msa", "90m", 8) == {"90m": 8, "1d": 8}  # 4h is no multiple
    assert model_timeframes("gru", "1h", 64) == {}  # one backbone per window: Box
    # the chapter's pyramid pools one window into its levels: Box windows
    assert model_timeframes("msa", "1h", 64, {"hierarchy": "pyramid"}) == {}
    daily = prepare_data("yahoo-spy-1d", window=WINDOW, split_fractions=FRACTIONS)
    assert daily.for_model("msa") is daily and daily.for_model("msa").timeframe_windows == {}
    assert daily.observation_space().shape == (WINDOW, daily.n_features + 2)
