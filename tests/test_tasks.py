"""Supervised tasks (docs/tasks.md): volatility and multi-horizon labels on hand-made bars and
their no-look-ahead property, a task head for every architecture and task, the reports, the
trading rules, real tiny training and backtests of each task, and the direction-only PPO warm
start."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tradezoo.agents.checkpoint import load_checkpoint
from tradezoo.agents.data import TASKS, LabelSpec, PreparedData, prepare_data
from tradezoo.agents.supervised import (
    AuxHeads,
    MultiHorizonReport,
    SupervisedConfig,
    SupervisedModel,
    VolatilityReport,
    evaluate_supervised,
    mean_expected_position,
    model_from_checkpoint,
    multi_horizon_report,
    rebalance_within_band,
    train_supervised,
    volatility_report,
    volatility_target_positions,
)
from tradezoo.agents.supervised_objective import _aux_loss, _task_loss
from tradezoo.cli import main
from tradezoo.data import load_dataset
from tradezoo.data.labels import (
    make_labels,
    make_multi_horizon_labels,
    realised_volatility,
    trailing_volatility,
)
from tradezoo.errors import ConfigError
from tradezoo.policies.registry import ARCHITECTURES

WINDOW = 16
D_MODEL = 8

pytestmark = pytest.mark.usefixtures("one_thread")


def bars_from(opens: list[float], closes: list[float] | None = None) -> pd.DataFrame:
    """A minimal bars frame with the given opens (and closes, default the opens), hourly."""
    o = np.asarray(opens, dtype=np.float64)
    c = o if closes is None else np.asarray(closes, dtype=np.float64)
    index = pd.date_range("2024-01-01", periods=len(o), freq="h", tz="UTC", name="timestamp")
    return pd.DataFrame({"open": o, "high": np.maximum(o, c), "low": np.minimum(o, c),
                         "close": c, "volume": np.ones(len(o))}, index=index)


def tiny(**overrides: object) -> SupervisedConfig:
    base: dict[str, object] = dict(epochs=1, batch_size=32, max_train_batches=3,
                                   max_eval_batches=1, eval_batch_size=64, features_dim=16,
                                   progress=False, tensorboard=False)
    base.update(overrides)
    return SupervisedConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_dataset("bybit-btcusdt-1h").iloc[:1500]


@pytest.fixture(scope="module")
def task_data(bars: pd.DataFrame) -> dict[str, PreparedData]:
    return {task: prepare_data(bars, window=WINDOW, label_spec={"task": task, "horizons": [1, 6]})
            for task in TASKS}


# --------------------------------------------------------------------------------- labels


def test_volatility_label_by_hand() -> None:
    opens = [100.0, 100.0, 110.0, 99.0, 99.0, 108.9, 100.0]
    vol = realised_volatility(bars_from(opens), horizon=2)
    # t = 0: the returns into open[2] and open[3] (entry open[1], exit open[3]).
    r = [math.log(110 / 100), math.log(99 / 110), math.log(99 / 99), math.log(108.9 / 99),
         math.log(100 / 108.9)]
    expected = [math.sqrt((r[0] ** 2 + r[1] ** 2) / 2), math.sqrt((r[1] ** 2 + r[2] ** 2) / 2),
                math.sqrt((r[2] ** 2 + r[3] ** 2) / 2), math.sqrt((r[3] ** 2 + r[4] ** 2) / 2)]
    np.testing.assert_allclose(vol.to_numpy()[:4], expected, rtol=1e-12)
    assert vol.iloc[4:].isna().all()  # the last 1 + h rows have no complete horizon
    one = realised_volatility(bars_from(opens), horizon=1)
    np.testing.assert_allclose(one.to_numpy()[:5], np.abs(r), rtol=1e-12)


def test_naive_forecast_is_the_trailing_volatility_of_closes_by_hand() -> None:
    closes = [100.0, 102.0, 99.0, 101.0]
    naive = trailing_volatility(bars_from([100.0] * 4, closes), horizon=2)
    r1, r2, r3 = math.log(102 / 100), math.log(99 / 102), math.log(101 / 99)
    assert naive.iloc[:2].isna().all()
    np.testing.assert_allclose(naive.to_numpy()[2:], [math.sqrt((r1**2 + r2**2) / 2),
                                                      math.sqrt((r2**2 + r3**2) / 2)])


def test_multi_horizon_labels_equal_direction_labels_at_each_horizon(
        bars: pd.DataFrame, task_data: dict[str, PreparedData]) -> None:
    for threshold in (0.0, "vol"):
        multi = make_multi_horizon_labels(bars, horizons=(1, 6, 12, 24), threshold=threshold,
                                          cost_bps=7.0)
        assert list(multi.columns) == ["h1", "h6", "h12", "h24"]
        for h in (1, 6, 12, 24):
            single = make_labels(bars, horizon=h, threshold=threshold, cost_bps=7.0)
            pd.testing.assert_series_equal(multi[f"h{h}"], single, check_names=False)
    # Through prepare_data: each column is the direction data's labels at that horizon.
    multi_data = task_data["multi_horizon"]
    for h in (1, 6):
        direction = prepare_data(bars, window=WINDOW, label_spec={"horizon": h})
        pd.testing.assert_series_equal(multi_data.labels[f"h{h}"], direction.labels,
                                       check_names=False)
    assert multi_data.splits.embargo >= WINDOW + 6  # the largest horizon
    assert multi_data.train.labels.shape[1] == 2


@pytest.mark.parametrize("kind", ["volatility", "multi_horizon", "naive"])
def test_no_look_ahead_beyond_the_label_horizon(bars: pd.DataFrame, kind: str) -> None:
    """Changing every bar after the label's horizon leaves the value at t unchanged, bit for
    bit; changing the last bar inside it does change it (the test can see a change)."""
    frame = bars.iloc[:200]
    horizon = 24 if kind == "multi_horizon" else 5
    label = {
        "volatility": lambda b: realised_volatility(b, horizon).to_numpy(),
        "multi_horizon": lambda b: make_multi_horizon_labels(
            b, horizons=(1, 6, 12, 24), threshold="vol", cost_bps=7.0).to_numpy(),
        "naive": lambda b: trailing_volatility(b, horizon).to_numpy(),
    }[kind]
    t = 100
    last_seen = t if kind == "naive" else t + 1 + horizon  # the last bar the value reads
    base = label(frame)
    rng = np.random.default_rng(0)
    moved = frame.copy()
    moved.iloc[last_seen + 1 :, :4] *= rng.uniform(0.5, 1.5, (len(frame) - last_seen - 1, 1))
    np.testing.assert_array_equal(label(moved)[: t + 1], base[: t + 1])
    inside = frame.copy()
    column = "close" if kind == "naive" else "open"
    inside.iloc[last_seen, inside.columns.get_loc(column)] *= 0.8
    assert not np.array_equal(label(inside)[t], base[t])


def test_label_spec_checks_name_the_field_and_rule() -> None:
    with pytest.raises(ConfigError, match=r"LabelSpec\.task must be one of \['direction', "
                                          r"'volatility', 'multi_horizon'\], got 'vol'"):
        LabelSpec(task="vol")
    for horizons in ([], [6, 1], [1, 1], [0, 2]):
        with pytest.raises(ConfigError, match=r"LabelSpec\.horizons must be a non-empty list of "
                                              "distinct horizons"):
            LabelSpec(task="multi_horizon", horizons=horizons)  # type: ignore[arg-type]
    spec = LabelSpec.from_dict({"task": "multi_horizon", "horizons": [1, 6, 12, 24]})
    assert spec.horizons == (1, 6, 12, 24) and spec.label_horizon == 24
    assert LabelSpec.from_dict(spec.to_dict()) == spec
    assert LabelSpec(task="volatility", horizon=3).label_horizon == 3
    assert LabelSpec.from_dict({"horizon": 4}).task == "direction"  # older checkpoints


# ---------------------------------------------------------------------------------- heads


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_has_a_head_for_every_task(arch: str, task: str) -> None:
    """One forward and backward pass of the task loss plus the auxiliary loss (every
    architecture has auxiliary heads); the gradients reach the backbone and the head."""
    torch.manual_seed(0)
    n_features, horizons = 5, (1, 6, 12, 24)
    model = SupervisedModel(arch, n_features, WINDOW, features_dim=8, d_model=D_MODEL,
                            task=task, horizons=horizons if task == "multi_horizon" else (),
                            aux_horizons=(1, 4))
    assert model.aux is not None
    model.eval()  # no dropout: forward and forward_all see the same network
    obs = torch.randn(4, WINDOW, n_features + 2)
    output, aux = model.forward_all(obs)
    shape = {"direction": (4, 3), "volatility": (4,), "multi_horizon": (4, 4, 3)}[task]
    assert output.shape == shape
    torch.testing.assert_close(model(obs), output)
    target = {"direction": torch.tensor([0, 1, 2, 1]),
              "volatility": torch.tensor([0.01, 0.02, 0.005, 0.0]),
              "multi_horizon": torch.randint(0, 3, (4, 4))}[task]
    loss = _task_loss(output, target, None, tiny(), model)
    loss = loss + _aux_loss(aux, torch.randn(4, 2), model.aux_names)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
    backbone_grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert backbone_grads and any(g.abs().sum() > 0 for g in backbone_grads)


def test_multi_horizon_loss_is_the_mean_of_the_horizons_losses() -> None:
    model = SupervisedModel("gru", 3, WINDOW, features_dim=8, d_model=D_MODEL,
                            task="multi_horizon", horizons=(1, 6))
    logits = torch.randn(5, 2, 3)
    target = torch.randint(0, 3, (5, 2))
    weight = torch.tensor([[1.0, 2.0, 0.5], [0.5, 1.0, 3.0]])
    expected = (torch.nn.functional.cross_entropy(logits[:, 0], target[:, 0], weight=weight[0])
                + torch.nn.functional.cross_entropy(logits[:, 1], target[:, 1],
                                                    weight=weight[1])) / 2
    torch.testing.assert_close(_task_loss(logits, target, weight, tiny(), model), expected)


def test_auxiliary_heads_for_an_architecture_without_its_own() -> None:
    model = SupervisedModel("cfc", 3, WINDOW, d_model=D_MODEL, aux_horizons=(4, 24))
    assert type(model.aux) is AuxHeads and model.aux_names == ("h4", "h24")
    assert type(SupervisedModel("msa", 3, WINDOW, d_model=D_MODEL, aux_horizons=(4,)).aux
                ).__name__ == "MSAHeads"


# -------------------------------------------------------------------------------- reports


def test_volatility_report_by_hand() -> None:
    report = volatility_report([0.01, 0.02, np.nan], [0.02, 0.02, 0.03], [0.01, 0.04, 0.01])
    qlike = (0.25 - math.log(0.25) - 1.0) / 2  # one forecast twice too high, one exact
    assert report == VolatilityReport(n=2, mae=pytest.approx(0.005),
                                      rmse=pytest.approx(math.sqrt(1e-4 / 2)),
                                      qlike=pytest.approx(qlike),
                                      naive_mae=pytest.approx(0.01),
                                      naive_rmse=pytest.approx(math.sqrt(4e-4 / 2)),
                                      naive_qlike=pytest.approx(qlike))
    low = volatility_report([0.02], [0.01])  # too low costs more than too high
    assert low.qlike == pytest.approx(4.0 - math.log(4.0) - 1.0) and low.qlike > qlike * 2
    assert "naive" not in low.to_dict()
    with pytest.raises(ValueError, match="differ in length"):
        volatility_report([0.1], [0.1, 0.2])


def test_multi_horizon_report_by_hand() -> None:
    true = np.array([[0, 2], [1, 2], [2, 0], [2, 1]])
    pred = np.array([[0, 2], [1, 0], [0, 0], [2, 2]])
    report = multi_horizon_report(true, pred, ("h1", "h6"))
    assert isinstance(report, MultiHorizonReport)
    # h1: 3 of 4 right; F1 sell 2/3 (p 1/2, r 1), hold 1, buy 2/3 (p 1, r 1/2).
    assert report.reports["h1"].accuracy == pytest.approx(0.75)
    assert report.reports["h1"].macro_f1 == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    # h6: 2 of 4 right; F1 sell 2/3 (p 1/2, r 1), hold 0, buy 1/2 (p 1/2, r 1/2).
    assert report.reports["h6"].accuracy == pytest.approx(0.5)
    assert report.reports["h6"].macro_f1 == pytest.approx((2 / 3 + 0 + 1 / 2) / 3)
    assert report.accuracy == pytest.approx(0.625)
    flat = report.to_dict()
    assert flat["accuracy_h6"] == pytest.approx(0.5) and "confusion_h1" in flat


# ---------------------------------------------------------------------------- trading rules


def test_volatility_targeting_exposures() -> None:
    exposure = volatility_target_positions(np.array([0.01, 0.02, 0.001, 0.0]), 0.01,
                                           max_leverage=5.0)
    np.testing.assert_allclose(exposure, [1.0, 0.5, 5.0, 5.0])  # capped; long only
    assert (exposure > 0).all()


def test_rebalancing_band_trades_only_moves_of_at_least_the_band() -> None:
    exposures = np.array([1.0, 1.05, 1.12, 1.0, 0.99, 0.5])
    nan = np.nan
    # held 1.0 -> 1.12 (moved 0.12) -> 1.0 (0.12) -> 0.5; 1.05 and 0.99 stay put.
    np.testing.assert_array_equal(rebalance_within_band(exposures, 0.1),
                                  [1.0, nan, 1.12, 1.0, nan, 0.5])
    np.testing.assert_array_equal(rebalance_within_band(exposures, 0.0), exposures)
    with pytest.raises(ConfigError, match=r"rebalance_band must be a number >= 0\.0"):
        rebalance_within_band(exposures, -0.1)


def test_multi_horizon_rule_averages_expected_positions() -> None:
    probabilities = np.array([[[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]],    # +0.6, -0.5
                              [[0.8, 0.1, 0.1], [0.5, 0.5, 0.0]]])   # -0.7, -0.5
    np.testing.assert_allclose(mean_expected_position(probabilities), [0.05, -0.6])
    np.testing.assert_allclose(mean_expected_position(probabilities, allow_short=False),
                               [0.05, 0.0])


# ------------------------------------------------------------------ training and backtests


def test_volatility_model_trains_reports_and_backtests(
        task_data: dict[str, PreparedData], tmp_path: Path) -> None:
    data = task_data["volatility"]
    result = train_supervised(data, "gru", config=tiny(epochs=2), arch_config={"d_model": 8},
                              out_dir=tmp_path, device="cpu", verbose=False)
    assert {"val_mae", "val_rmse", "val_qlike"} <= set(result.history[-1])
    ckpt = load_checkpoint(result.best_checkpoint)
    assert ckpt["task"] == "volatility" and ckpt["label_spec"]["task"] == "volatility"
    reloaded = model_from_checkpoint(ckpt)
    assert reloaded.task == "volatility"
    torch.testing.assert_close(reloaded.target_loc, result.model.target_loc)
    evaluation = evaluate_supervised(result.best_checkpoint, data, "test")
    report = evaluation.report
    assert isinstance(report, VolatilityReport) and report.naive_qlike is not None
    rows = data.decision_rows("test")
    actual = data.labels.to_numpy()[rows]
    labelled = np.isfinite(actual)
    forecast = evaluation.probabilities["forecast"].to_numpy()
    naive = trailing_volatility(data.bars, data.label_spec.horizon).reindex(
        data.features.index).to_numpy()[rows]
    assert report == volatility_report(actual[labelled], forecast[labelled], naive[labelled])
    # The rule: the train split's median volatility over the forecast, capped, long only.
    target = float(np.median(data.train.labels.numpy()))
    expected = np.minimum(target / forecast, data.costs.max_leverage)
    np.testing.assert_allclose(evaluation.signals.to_numpy(), expected)
    np.testing.assert_allclose(evaluation.positions.to_numpy()[: len(rows)],
                               rebalance_within_band(expected, 0.1))
    assert evaluation.rule == "volatility_target" and (evaluation.positions.dropna() > 0).all()
    assert evaluation.backtest.metrics.n_trades >= 1
    every_bar = evaluate_supervised(result.model, data, "test", rebalance_band=0.0)
    np.testing.assert_allclose(every_bar.positions.to_numpy()[: len(rows)], expected)
    with pytest.raises(ConfigError, match="applies to direction models"):
        evaluate_supervised(result.model, data, rule="threshold")
    with pytest.raises(ConfigError, match="the model's task is 'volatility'"):
        evaluate_supervised(result.model, task_data["direction"])


def test_multi_horizon_model_reports_every_horizon_and_backtests(
        task_data: dict[str, PreparedData], tmp_path: Path) -> None:
    data = task_data["multi_horizon"]
    result = train_supervised(data, "gru", config=tiny(), arch_config={"d_model": 8},
                              out_dir=tmp_path, device="cpu", verbose=False)
    assert {"val_accuracy_h1", "val_macro_f1_h6"} <= set(result.history[-1])
    evaluation = evaluate_supervised(result.best_checkpoint, data, "test")
    assert isinstance(evaluation.report, MultiHorizonReport)
    assert list(evaluation.report.reports) == ["h1", "h6"]
    probabilities = evaluation.probabilities.to_numpy().reshape(-1, 2, 3)
    rows = data.decision_rows("test")
    np.testing.assert_allclose(evaluation.signals.to_numpy(),
                               mean_expected_position(probabilities))
    np.testing.assert_allclose(evaluation.positions.to_numpy()[: len(rows)],
                               rebalance_within_band(mean_expected_position(probabilities), 0.1))
    assert evaluation.rule == "mean_expected_position"


# ------------------------------------------------------------------------------ warm start


def test_ppo_warm_start_is_refused_for_other_tasks(
        task_data: dict[str, PreparedData], tmp_path: Path, bars_csv: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from tradezoo.agents.ppo import PPOConfig, train_ppo

    data = task_data["volatility"]
    result = train_supervised(data, "gru", config=tiny(max_train_batches=1),
                              arch_config={"d_model": 8}, out_dir=tmp_path / "sup",
                              device="cpu", verbose=False)
    config = PPOConfig(timesteps=128, n_envs=2, n_steps=64, batch_size=64, n_epochs=1,
                       episode_length=96, eval_freq=0, checkpoint_freq=0, tensorboard=False)
    with pytest.raises(ConfigError, match="PPO warm start is defined for task 'direction' only, "
                                          "got task 'volatility'"):
        train_ppo(data, "gru", config=config, out_dir=tmp_path / "ppo", device="cpu",
                  init_from=result.best_checkpoint, progress=False, verbose=False)
    out = tmp_path / "run"
    assert main(["run", "--data", str(bars_csv), "--costs", "bybit-linear", "--quiet",
                 "--set", "labels.task=multi_horizon", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "PPO warm start is defined for task 'direction' only, got task 'multi_horizon'" in error
    assert not out.exists()  # refused before anything was written
