"""Liquid networks get each bar's real elapsed time on every path that feeds them a window.

On SPY daily bars (weekends and holidays are gaps of 3, 4 ... days; the UTC open time moves by
an hour at DST changes) a spy on the backbone's
``forward`` records the ``dt`` it receives in supervised training and evaluation, in PPO
rollouts, updates and evaluation; every recorded window must equal the true gaps computed from
the bars' open times. Outputs with ``dt`` equal the no-``dt`` outputs on windows of regular bars
and differ exactly on windows that hold a gap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from gymnasium import spaces

from tradezoo.agents.data import PreparedData, prepare_data, with_dt_space
from tradezoo.agents.ppo import PPOConfig, evaluate_ppo, train_ppo
from tradezoo.agents.supervised import (
    ModelInputs,
    SupervisedConfig,
    SupervisedModel,
    evaluate_supervised,
    train_supervised,
)
from tradezoo.data import load_dataset
from tradezoo.data.elapsed import DT_KEY, WINDOW_KEY
from tradezoo.envs import TradingEnv, TradingVectorEnv
from tradezoo.policies.cfc import CfCBackbone, CfCConfig
from tradezoo.policies.extractor import SequenceExtractor
from tradezoo.policies.ltc import LTCBackbone, LTCConfig
from tradezoo.policies.registry import ARCHITECTURES, make_backbone
from tradezoo.policies.wiring import AutoNCP

DAY = 86400.0
WINDOW = 8
BACKBONES = {"cfc": CfCBackbone, "ltc": LTCBackbone}


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_dataset("yahoo-spy-1d").iloc[:600]


@pytest.fixture(scope="module")
def data(bars: pd.DataFrame) -> PreparedData:
    return prepare_data(bars, window=WINDOW)


def true_gaps(data: PreparedData, rows: np.ndarray) -> np.ndarray:
    """``[N, window]`` seconds between the bars' opens, from the raw index (independently of
    the code under test)."""
    opens = data.bars.index.as_unit("s").asi8  # the bars' open times, seconds
    position = data.bar_offset + np.asarray(rows)[:, None] + np.arange(-data.window + 1, 1)
    return (opens[position] - opens[position - 1]).astype(np.float64)


def all_windows(data: PreparedData) -> set[tuple[float, ...]]:
    rows = np.arange(WINDOW - 1, len(data.features))
    return {tuple(w) for w in true_gaps(data, rows)}


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool, torch.Tensor | None]]:
    """Every liquid backbone forward: ``(arch, grad enabled, dt or None)``."""
    calls: list[tuple[str, bool, torch.Tensor | None]] = []
    for name, cls in BACKBONES.items():
        original = cls.forward

        def forward(self, x, dt=None, _original=original, _name=name):  # type: ignore[no-untyped-def]
            calls.append((_name, torch.is_grad_enabled(),
                          None if dt is None else dt.detach().cpu().double().clone()))
            return _original(self, x, dt)

        monkeypatch.setattr(cls, "forward", forward)
    return calls


def _rows_of(calls: list[tuple[str, bool, torch.Tensor | None]]) -> list[tuple[float, ...]]:
    out = []
    for _, _, dt in calls:
        assert dt is not None, "a liquid backbone was called without dt"
        out += [tuple(row) for row in dt.numpy()]
    return out


def tiny_supervised() -> SupervisedConfig:
    return SupervisedConfig(epochs=1, batch_size=32, max_train_batches=2, max_eval_batches=1,
                            eval_batch_size=64, progress=False, tensorboard=False)


def test_the_data_has_gaps(data: PreparedData) -> None:
    gaps = true_gaps(data, np.arange(WINDOW - 1, len(data.features)))
    assert (gaps == DAY).mean() > 0.6 and (gaps >= 3 * DAY).any()
    np.testing.assert_array_equal(data.dt_seconds[WINDOW - 1 :], gaps[:, -1])


@pytest.mark.parametrize("arch", ["cfc", "ltc"])
def test_supervised_training_and_evaluation_feed_true_gaps(
        arch: str, data: PreparedData, spy: list, tmp_path: Path) -> None:
    result = train_supervised(data, arch, config=tiny_supervised(), out_dir=tmp_path,
                              arch_config={"d_model": 8}, device="cpu", seed=0)
    assert result.model.backbone.config.time_unit == DAY  # the data's bar interval
    windows = all_windows(data)
    trained = _rows_of(spy)
    assert trained and all(w in windows for w in trained)
    assert any(max(w) > DAY for w in trained)  # gaps reached the backbone
    assert any(grad for _, grad, _ in spy)

    spy.clear()
    evaluate_supervised(result.best_checkpoint, data, "test")
    rows = data.decision_rows("test")
    np.testing.assert_array_equal(np.array(_rows_of(spy)), true_gaps(data, rows))


def test_ppo_rollouts_updates_and_evaluation_feed_true_gaps(
        data: PreparedData, spy: list, tmp_path: Path) -> None:
    config = PPOConfig(timesteps=64, n_envs=2, n_steps=32, batch_size=32, n_epochs=1,
                       episode_length=48, arch_config={"d_model": 8}, features_dim=8,
                       eval_freq=0, checkpoint_freq=0, tensorboard=False)
    result = train_ppo(data, "cfc", config=config, out_dir=tmp_path, seed=0, device="cpu",
                       progress=False)
    assert isinstance(result.model.observation_space, spaces.Dict)
    windows = all_windows(data)
    rollout = [c for c in spy if not c[1]]
    update = [c for c in spy if c[1]]
    assert rollout and update
    for calls in (rollout, update):
        rows = _rows_of(calls)
        assert all(w in windows for w in rows)
        assert any(max(w) > DAY for w in rows)

    spy.clear()
    evaluation = evaluate_ppo(result.final_model, data, "test")
    rows = data.decision_rows("test")[: len(evaluation.targets)]
    np.testing.assert_array_equal(np.array(_rows_of(spy)), true_gaps(data, rows))


def test_env_observations_carry_true_gaps_and_default_is_unchanged(
        data: PreparedData) -> None:
    plain = TradingEnv(data.bars, window=WINDOW, split="test", episode_length=None)
    assert isinstance(plain.observation_space, spaces.Box)
    env = TradingEnv(data.bars, window=WINDOW, split="test", episode_length=None,
                     include_dt=True)
    obs, _ = env.reset(seed=0)
    first, _ = plain.reset(seed=0)
    np.testing.assert_array_equal(obs[WINDOW_KEY], first)
    rows = data.decision_rows("test")
    seen = [obs[DT_KEY]]
    for _ in range(20):
        obs, *_ = env.step(1)
        seen.append(obs[DT_KEY])
    np.testing.assert_array_equal(np.array(seen), true_gaps(data, rows[:21]))
    vector = TradingVectorEnv(3, data=data.bars, window=WINDOW, split="test",
                              episode_length=None, random_start=False, include_dt=True)
    batch, _ = vector.reset(seed=0)
    np.testing.assert_array_equal(batch[DT_KEY], true_gaps(data, rows[:1]).repeat(3, axis=0))
    assert env.observation_space[DT_KEY].contains(obs[DT_KEY])


def test_dict_observation_timeframes_have_their_own_elapsed_times() -> None:
    env = TradingEnv("yahoo-spy-1d", window=WINDOW, observation="dict",
                     timeframes={"1d": 8, "1w": 4}, include_dt=True)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"1d", "dt_1d", "1w", "dt_1w", "account"}
    assert set(np.unique(obs["dt_1w"])) <= {7 * DAY}  # weekly bins are one week apart
    extractor = SequenceExtractor(env.observation_space, arch="cfc", d_model=8)
    assert extractor.dt_keys == {"1d": "dt_1d", "1w": "dt_1w"}
    batch = {k: torch.as_tensor(v)[None] for k, v in obs.items()}
    with torch.no_grad():
        with_dt = extractor(batch)
        without = extractor({k: v for k, v in batch.items() if not k.startswith("dt_")})
    assert not torch.allclose(with_dt, without)


@pytest.mark.parametrize("arch", ["cfc", "ltc"])
def test_outputs_differ_from_no_dt_exactly_where_gaps_are(arch: str, bars: pd.DataFrame) -> None:
    data = prepare_data(bars, window=4)  # Tuesday..Friday windows have no gap
    torch.manual_seed(0)
    model = SupervisedModel(arch, data.n_features, data.window, features_dim=8,
                            arch_config={"d_model": 8, "time_unit": DAY}).eval()
    rows = data.decision_rows("test")
    assert model.observation_space == with_dt_space(data.observation_space())
    obs = ModelInputs(data, rows, torch.device("cpu"), include_dt=True).get(torch.arange(len(rows)))
    assert model.observation_space.contains({k: v[0].numpy() for k, v in obs.items()})
    with torch.no_grad():
        with_dt = model(obs)
        without = model({WINDOW_KEY: obs[WINDOW_KEY]})
    # A gap: any bar whose spacing is not one day (weekends, holidays, DST changes of the
    # exchange's UTC open time).
    gap = (true_gaps(data, rows) != DAY).any(axis=1)
    assert gap.any() and (~gap).any()
    difference = (with_dt - without).abs().amax(dim=1).numpy()
    assert (difference[~gap] < 1e-5).all()
    assert (difference[gap] > 1e-5).all()

    # Inside one window: the sequence agrees up to the first gap and departs at it.
    backbone = model.backbone
    window_rows = np.flatnonzero(gap)
    row = rows[window_rows[0]]
    dt_window = torch.as_tensor(true_gaps(data, [row]), dtype=torch.float32)
    first = int(np.flatnonzero(dt_window[0].numpy() != DAY)[0])
    x = obs[WINDOW_KEY][window_rows[0] : window_rows[0] + 1]
    with torch.no_grad():
        seq_dt = backbone.forward_sequence(x, dt_window)
        seq_none = backbone.forward_sequence(x)
    step = (seq_dt - seq_none).abs().amax(dim=-1)[0]
    assert (step[:first] < 1e-5).all() and (step[first:] > 1e-6).all()


@pytest.mark.parametrize("arch", ["cfc", "ltc"])
def test_use_dt_false_ignores_dt_and_ncp_is_the_default(arch: str) -> None:
    cls = {"cfc": CfCConfig, "ltc": LTCConfig}[arch]
    assert cls().wiring == "ncp" and cls().sparsity_level == 0.5
    torch.manual_seed(0)
    net = make_backbone(arch, 5, d_model=12, time_unit=DAY)
    wiring = net.wiring
    assert isinstance(wiring, AutoNCP)
    assert wiring.num_layers == 3  # inter -> command -> motor after the sensory inputs
    off = make_backbone(arch, 5, d_model=12, time_unit=DAY, use_dt=False)
    off.load_state_dict(net.state_dict())
    x = torch.randn(2, 6, 5)
    dt = torch.full((2, 6), DAY)
    dt[:, 3] = 3 * DAY
    with torch.no_grad():
        torch.testing.assert_close(off(x, dt), net(x))
        assert not torch.allclose(net(x, dt), net(x))
    dense = make_backbone(arch, 5, d_model=12, wiring=None)
    assert dense.wiring is None or type(dense.wiring).__name__ == "FullyConnected"


@pytest.mark.parametrize("arch", ["cfc", "ltc"])
def test_explain_takes_the_observations_elapsed_times(arch: str, data: PreparedData) -> None:
    from tradezoo.policies.explain import explain

    torch.manual_seed(0)
    model = SupervisedModel(arch, data.n_features, WINDOW, features_dim=8,
                            arch_config={"d_model": 8, "time_unit": DAY})
    rows = data.decision_rows("test")[:5]
    obs = ModelInputs(data, rows, torch.device("cpu"), include_dt=True).get(torch.arange(5))
    from_obs = explain(model.extractor, obs)
    explicit = explain(model.extractor, obs[WINDOW_KEY], obs[DT_KEY])
    regular = explain(model.extractor, obs[WINDOW_KEY])
    torch.testing.assert_close(from_obs["time_constant"], explicit["time_constant"])
    assert not torch.allclose(from_obs["time_constant"], regular["time_constant"])


@pytest.mark.parametrize("arch", ["cfc", "ltc"])
def test_a_config_saved_before_use_dt_existed_restores_a_time_blind_model(arch: str) -> None:
    config_cls = ARCHITECTURES[arch].config_cls
    saved = config_cls().to_dict()
    del saved["use_dt"]
    assert config_cls(**config_cls.restore_saved(saved)).use_dt is False
    assert config_cls(**config_cls.restore_saved({**saved, "use_dt": True})).use_dt is True
    assert config_cls().use_dt is True  # a config written today takes the default
