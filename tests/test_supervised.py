"""Supervised training: data preparation, every architecture learns and round-trips through a
checkpoint, determinism, TensorBoard tags, failures (non-finite loss, Ctrl-C), evaluation."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tradezoo.agents.checkpoint import load_checkpoint
from tradezoo.agents.data import LabelSpec, PreparedData, prepare_data
from tradezoo.agents.supervised import (
    NonFiniteLossError,
    SupervisedConfig,
    SupervisedModel,
    TrainingInterrupted,
    TrainState,
    _param_groups,
    classification_report,
    evaluate_supervised,
    model_from_checkpoint,
    resolve_device,
    signals_to_positions,
    train_supervised,
)
from tradezoo.agents.supervised_evaluation import _apply_rule
from tradezoo.agents.supervised_objective import _classification_loss
from tradezoo.backtest.costs import CostModel
from tradezoo.data import load_dataset
from tradezoo.policies.registry import ARCHITECTURES

WINDOW = 16
D_MODEL = 16


def tiny(**overrides: object) -> SupervisedConfig:
    """A budget of a few steps: tests check mechanics, not skill."""
    base: dict[str, object] = dict(
        epochs=1, batch_size=32, max_train_batches=2, max_eval_batches=1, eval_batch_size=64,
        progress=False, tensorboard=False,
    )
    base.update(overrides)
    return SupervisedConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def bars():
    return load_dataset("bybit-btcusdt-1h").iloc[:1500]


@pytest.fixture(scope="module")
def data(bars) -> PreparedData:
    return prepare_data(bars, window=WINDOW)


def _importable(name: str) -> bool:
    try:
        ARCHITECTURES[name]
    except ImportError:
        return False
    return True


ARCH_NAMES = [
    pytest.param(name, marks=pytest.mark.skipif(not _importable(name),
                                                reason=f"{name} not importable yet"))
    for name in ARCHITECTURES
]


# ------------------------------------------------------------------------------ data


def test_prepare_data_splits_labels_and_scaler(data: PreparedData) -> None:
    spec = data.label_spec
    assert spec.cost_bps == pytest.approx(CostModel.bybit_linear().one_way_cost_bps)
    assert data.splits.embargo >= WINDOW + spec.horizon
    # Parts are chronological with the embargo between them.
    train, val, test = data.splits.train, data.splits.val, data.splits.test
    assert val[0] - train[-1] - 1 >= WINDOW + spec.horizon
    assert test[0] - val[-1] - 1 >= WINDOW + spec.horizon
    assert data.boundaries["test"][0] == data.features.index[test[0]]
    # Items: full windows, labelled, inside their part.
    for part, rows in (("train", train), ("val", val), ("test", test)):
        ds = data.dataset(part)
        assert set(ds.decision_rows.tolist()) <= set(rows.tolist())
        assert ds.decision_rows.min() >= WINDOW - 1
        x, _dt, y = ds[0]
        assert x.shape == (WINDOW, data.n_features)
        assert int(y) == int(data.labels.iloc[int(ds.decision_rows[0])])
    # The scaler never saw validation or test rows: refitting on the train rows + the env's
    # extra embargo rows (horizon - 1 of them) reproduces it; refitting on more does not.
    n_fit = int(train[-1]) + 1 + spec.horizon - 1
    refit = type(data.scaler)().fit(data.features.iloc[:n_fit])
    np.testing.assert_array_equal(refit.mean, data.scaler.mean)
    assert n_fit < int(val[0])


@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("give_scaler", [True, False])
def test_scaled_features_equal_env_observations(
    bars, data: PreparedData, split: str, give_scaler: bool
) -> None:
    from tradezoo.envs import TradingEnv

    env = TradingEnv(bars, window=WINDOW, split=split,
                     scaler=data.scaler if give_scaler else None)
    rows = data.decision_rows(split)  # type: ignore[arg-type]
    for row in (int(rows[0]), int(rows[len(rows) // 2])):
        obs, _ = env.reset(options={"start": row})
        np.testing.assert_array_equal(obs[:, : data.n_features], data.windows(np.array([row]))[0])
        assert (obs[:, data.n_features :] == 0).all()  # flat account, as in training
    if split == "test":
        dataset = env.market.datasets[0]
        assert (dataset.first_decision, dataset.last_decision) == (int(rows[0]), int(rows[-1]))


def test_prepare_data_bad_input(bars) -> None:
    with pytest.raises(ValueError, match="window must be an integer >= 1"):
        prepare_data(bars, window=0)
    with pytest.raises(ValueError, match="embargo must be >= lookback \\+ horizon"):
        prepare_data(bars, window=WINDOW, embargo=3)
    with pytest.raises(ValueError, match="unknown key"):
        prepare_data(bars, window=WINDOW, label_spec={"horizon": 2, "bogus": 1})
    with pytest.raises(ValueError, match=r"LabelSpec\.threshold"):
        LabelSpec(threshold=-0.1)
    with pytest.raises(ValueError, match="split_fractions"):
        prepare_data(bars, window=WINDOW, split_fractions=(0.7, 0.3))
    with pytest.raises(ValueError, match="cannot split"):
        prepare_data(bars.iloc[:200], window=64)
    with pytest.raises(TypeError, match="data must be"):
        prepare_data(42, window=WINDOW)  # type: ignore[arg-type]


# ---------------------------------------------------------------- every architecture


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_architecture_learns_and_checkpoint_reloads(
    arch: str, data: PreparedData, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = SupervisedModel(arch, data.n_features, WINDOW, features_dim=16, d_model=D_MODEL)
    model.train()
    ds = data.train
    index = torch.arange(32)
    rows = torch.from_numpy(np.array(ds.decision_rows))[index]
    x = ds.features[rows[:, None] + torch.arange(-WINDOW + 1, 1)]  # [32, L, F]
    y = ds.labels[index]
    optimizer = torch.optim.AdamW(_param_groups(model, 0.01), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = _classification_loss(model.forward_features(x), y, None, tiny())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0], f"{arch}: loss did not decrease on a fixed batch: {losses}"

    result = train_supervised(data, arch, config=tiny(features_dim=16),
                              arch_config={"d_model": D_MODEL}, out_dir=tmp_path, seed=0,
                              device="cpu", verbose=False)
    assert result.best_checkpoint.exists() and result.last_checkpoint.exists()
    assert math.isfinite(result.history[0]["train_loss"])
    reloaded = model_from_checkpoint(result.best_checkpoint)
    assert reloaded.timeframes == result.model.timeframes
    inputs = data.with_timeframes(reloaded.timeframes)
    rows = inputs.decision_rows("test")[:3]
    probe: torch.Tensor | dict[str, torch.Tensor] = (
        {k: torch.from_numpy(v) for k, v in inputs.timeframe_inputs(rows).items()}
        if reloaded.timeframes else torch.from_numpy(inputs.windows(rows)))  # [3, L, F]
    result.model.eval()
    with torch.no_grad():
        assert torch.equal(reloaded.forward_features(probe), result.model.forward_features(probe))


# ------------------------------------------------------------------- training mechanics


def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_seed_same_metrics_and_weights(data: PreparedData, tmp_path: Path) -> None:
    cfg = tiny(epochs=2, max_train_batches=3)
    runs = [
        train_supervised(data, "gru", config=cfg, arch_config={"d_model": D_MODEL},
                         out_dir=tmp_path / name, seed=seed, device="cpu", verbose=False)
        for name, seed in (("a", 7), ("b", 7), ("c", 8))
    ]
    strip = [[{k: v for k, v in h.items() if k != "seconds"} for h in r.history] for r in runs]
    assert strip[0] == strip[1]
    assert _state_equal(runs[0].model, runs[1].model)
    assert not _state_equal(runs[0].model, runs[2].model)  # the seed matters


def test_weight_decay_groups_exclude_no_weight_decay_params() -> None:
    model = SupervisedModel("mamba", 5, 8, features_dim=8, d_model=8)
    groups = _param_groups(model, 0.1)
    decayed = {id(p) for p in groups[0]["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = model.no_weight_decay()
    assert any("A_log" in n for n in no_decay)
    for pid in decayed:
        assert names[pid] not in no_decay
        assert not names[pid].endswith(".bias")
    assert groups[1]["weight_decay"] == 0.0


def test_lr_schedule_warms_up_then_decays(data: PreparedData, tmp_path: Path) -> None:
    lrs: list[float] = []
    train_supervised(data, "mlp", config=tiny(epochs=2, max_train_batches=10, lr=1e-2,
                                              warmup_fraction=0.2),
                     arch_config={"d_model": D_MODEL}, out_dir=tmp_path, device="cpu",
                     verbose=False, callbacks=[lambda s: lrs.append(s.lr)])
    assert len(lrs) == 20
    assert lrs[0] == pytest.approx(1e-2 / 4) and lrs[3] == pytest.approx(1e-2)  # 4 warm-up
    assert all(a >= b for a, b in itertools.pairwise(lrs[3:]))
    assert lrs[-1] < 1e-3


def test_tensorboard_tags_are_readable(data: PreparedData, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train_supervised(data, "lstm", config=tiny(tensorboard=True, log_every=1),
                              arch_config={"d_model": D_MODEL}, out_dir=tmp_path,
                              device="cpu", verbose=False)
    assert result.log_dir is not None
    events = EventAccumulator(str(result.log_dir)).Reload()
    scalars = set(events.Tags()["scalars"])
    expected = {"train/loss", "train/lr", "train/grad_norm", "train/samples_per_s",
                "train/accuracy", "val/loss", "val/accuracy", "val/macro_f1",
                "val/recall_sell", "val/recall_hold", "val/recall_buy"}
    assert expected <= scalars, expected - scalars
    assert "val/confusion_matrix" in events.Tags()["images"]
    assert len(events.Scalars("train/loss")) == 2  # two steps, logged every step


def test_non_finite_loss_stops_with_a_clear_error(data: PreparedData, tmp_path: Path) -> None:
    def poison(state: TrainState) -> None:
        if state.step == 2:
            with torch.no_grad():
                state.model.head.weight.fill_(float("nan"))

    with pytest.raises(NonFiniteLossError) as info:
        train_supervised(data, "lstm", config=tiny(max_train_batches=5),
                         arch_config={"d_model": D_MODEL}, out_dir=tmp_path, device="cpu",
                         verbose=False, callbacks=[poison])
    message = str(info.value)
    assert "at step 3" in message and "'lstm'" in message
    assert "last finite loss" in message and "at step 2" in message

    with pytest.raises(NonFiniteLossError, match="non-finite training"):  # a huge lr
        train_supervised(data, "gru", config=tiny(max_train_batches=5, lr=1e30),
                         arch_config={"d_model": D_MODEL}, out_dir=tmp_path / "lr",
                         device="cpu", verbose=False)


def test_interrupt_saves_resumable_checkpoint(data: PreparedData, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tiny(epochs=2, max_train_batches=4)
    kwargs = dict(config=cfg, arch_config={"d_model": D_MODEL}, seed=3, device="cpu",
                  verbose=False)

    def interrupt(state: TrainState) -> None:
        if state.step == 6:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted) as info:
        train_supervised(data, "gru", out_dir=tmp_path / "run", callbacks=[interrupt],
                         **kwargs)  # type: ignore[arg-type]
    path = info.value.checkpoint
    assert path == tmp_path / "run" / "interrupted.pt" and path.exists()
    assert str(path) in str(info.value) and str(path) in capsys.readouterr().err
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 6 and ckpt["resume"]["epoch"] == 1 and ckpt["resume"]["batch"] == 2

    resumed = train_supervised(data, "gru", out_dir=tmp_path / "run", resume_from=path,
                               **kwargs)  # type: ignore[arg-type]
    straight = train_supervised(data, "gru", out_dir=tmp_path / "straight",
                                **kwargs)  # type: ignore[arg-type]
    assert resumed.steps == straight.steps == 8
    assert _state_equal(resumed.model, straight.model)
    assert resumed.history[-1]["val_loss"] == straight.history[-1]["val_loss"]


def test_early_stopping_and_best_checkpoint(data: PreparedData, tmp_path: Path) -> None:
    result = train_supervised(data, "mlp", config=tiny(epochs=8, patience=1, lr=0.5,
                                                       warmup_fraction=0.0),
                              arch_config={"d_model": D_MODEL}, out_dir=tmp_path,
                              device="cpu", verbose=False)
    losses = [h["val_loss"] for h in result.history]
    assert result.best_val_loss == min(losses)
    assert result.best_epoch == int(np.argmin(losses))
    if result.stopped_early:
        assert len(losses) < 8 and losses[-1] >= result.best_val_loss
    assert load_checkpoint(result.best_checkpoint)["epoch"] == result.best_epoch + 1


def test_focal_loss_and_class_weights() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.1, 0.2, 0.3], [-1.0, 0.0, 3.0]])
    target = torch.tensor([0, 1, 2])
    ce = _classification_loss(logits, target, None, tiny())
    focal0 = _classification_loss(logits, target, None, tiny(loss="focal", focal_gamma=0.0))
    assert float(focal0) == pytest.approx(float(ce), rel=1e-6)  # gamma 0 is cross-entropy
    focal2 = _classification_loss(logits, target, None, tiny(loss="focal", focal_gamma=2.0))
    assert float(focal2) < float(ce)
    weight = torch.tensor([1.0, 2.0, 0.5])
    weighted = _classification_loss(logits, target, weight, tiny())
    expected = torch.nn.functional.cross_entropy(logits, target, weight=weight)
    assert float(weighted) == pytest.approx(float(expected))


def test_config_and_argument_errors(data: PreparedData, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown supervised training key\\(s\\) \\['epoch'\\]"):
        SupervisedConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match=r"SupervisedConfig\.lr must be a number > 0"):
        SupervisedConfig(lr=0.0)
    with pytest.raises(ValueError, match=r"SupervisedConfig\.loss"):
        SupervisedConfig(loss="hinge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="warmup_fraction"):
        SupervisedConfig(warmup_fraction=1.0)
    with pytest.raises(ValueError, match="unknown architecture 'nope'"):
        train_supervised(data, "nope", config=tiny(), out_dir=tmp_path, verbose=False)
    with pytest.raises(ValueError, match="unknown config key"):
        train_supervised(data, "gru", config=tiny(), arch_config={"d_modl": 8},
                         out_dir=tmp_path, verbose=False)
    with pytest.raises(ValueError, match="seed must be"):
        train_supervised(data, "gru", config=tiny(), out_dir=tmp_path, seed=-1, verbose=False)
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu9")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_resume_from_best_is_refused(data: PreparedData, tmp_path: Path) -> None:
    first = train_supervised(data, "mlp", config=tiny(), arch_config={"d_model": D_MODEL},
                             out_dir=tmp_path, device="cpu", verbose=False)
    with pytest.raises(ValueError, match="no optimiser state to resume from"):
        train_supervised(data, "mlp", config=tiny(), arch_config={"d_model": D_MODEL},
                         out_dir=tmp_path, device="cpu", verbose=False,
                         resume_from=first.best_checkpoint)


# ------------------------------------------------------------------------------ evaluation


def test_classification_report_values() -> None:
    report = classification_report([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0])
    assert report.confusion == ((1, 1, 0), (0, 1, 0), (1, 0, 2))
    assert report.support == (2, 1, 3)
    assert report.precision == pytest.approx((0.5, 0.5, 1.0))
    assert report.recall == pytest.approx((0.5, 1.0, 2 / 3))
    assert report.f1[2] == pytest.approx(0.8)
    assert report.accuracy == pytest.approx(4 / 6)
    assert report.macro_f1 == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    with pytest.raises(ValueError, match="classes 0"):
        classification_report([0, 3], [0, 1])


def test_rules_and_signal_positions() -> None:
    probabilities = np.array([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.3, 0.4, 0.3],
                              [0.45, 0.1, 0.45]])
    np.testing.assert_array_equal(_apply_rule(probabilities, "argmax", 0.5), [0, 2, 1, 0])
    np.testing.assert_array_equal(_apply_rule(probabilities, "threshold", 0.55), [0, 1, 1, 1])
    np.testing.assert_array_equal(_apply_rule(probabilities, "threshold", 0.4), [0, 2, 1, 2])
    positions = signals_to_positions(np.array([2, 1, 0, 1]))
    np.testing.assert_array_equal(positions, [1.0, np.nan, -1.0, np.nan])
    np.testing.assert_array_equal(signals_to_positions(np.array([0]), allow_short=False), [0.0])


def test_evaluate_report_and_backtest(data: PreparedData, tmp_path: Path) -> None:
    from tradezoo.backtest.simulation import simulate

    result = train_supervised(data, "gru", config=tiny(), arch_config={"d_model": D_MODEL},
                              out_dir=tmp_path, device="cpu", verbose=False)
    by_model = evaluate_supervised(result.model, data, "test")
    by_path = evaluate_supervised(result.best_checkpoint, data, "test")
    np.testing.assert_allclose(by_model.probabilities, by_path.probabilities, rtol=0, atol=0)
    rows = data.decision_rows("test")
    assert len(by_model.signals) == len(rows)
    labelled = np.isfinite(data.labels.to_numpy()[rows])
    assert sum(by_model.report.support) == int(labelled.sum())
    # The backtest is simulate() on the split's bars with the targets the signals give.
    bars = by_model.positions.index
    assert bars[0] == data.features.index[rows[0]] and len(bars) == len(rows) + 1
    again = simulate(data.bars.loc[bars], by_model.positions, costs=data.costs)
    assert again.metrics.to_dict() == by_model.backtest.metrics.to_dict()
    assert by_model.metrics["buy_and_hold/total_return"] == pytest.approx(
        again.benchmark_metrics.total_return)
    flat_only = evaluate_supervised(result.model, data, "test", allow_short=False)
    assert (flat_only.positions.dropna() >= 0).all()
    thresholded = evaluate_supervised(result.model, data, "test", rule="threshold",
                                      threshold=0.99)
    assert (thresholded.signals == 1).all()  # nothing clears 99 %: hold, never trade
    assert thresholded.backtest.metrics.n_trades == 0

    with pytest.raises(ValueError, match="rule must be"):
        evaluate_supervised(result.model, data, rule="vote")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold must be a probability"):
        evaluate_supervised(result.model, data, rule="threshold", threshold=1.5)
    other = prepare_data(data.bars, window=WINDOW + 8)
    with pytest.raises(ValueError, match="windows of 16 bars"):
        evaluate_supervised(result.model, other)


def test_aux_heads_hook(data: PreparedData, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Auxiliary heads are found by name in the architecture's module and trained."""
    import tradezoo.agents.supervised as supervised
    import tradezoo.policies.baselines as baselines

    class FakeHeads(torch.nn.Module):
        def __init__(self, d_model: int, horizons: tuple[str, ...], regression: bool) -> None:
            super().__init__()
            self.names = horizons
            self.direction = torch.nn.Linear(d_model, len(horizons))
            self.regressor = torch.nn.Linear(d_model, len(horizons))

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            d = self.direction(z)
            return {"regression": self.regressor(z),
                    **{name: d[:, i] for i, name in enumerate(self.names)}}

    monkeypatch.setitem(supervised.AUX_HEADS, "gru", "FakeHeads")
    monkeypatch.setattr(baselines, "FakeHeads", FakeHeads, raising=False)
    seen: list[torch.Tensor] = []
    result = train_supervised(data, "gru", config=tiny(aux_horizons=(1, 4), aux_weight=1.0),
                              arch_config={"d_model": D_MODEL}, out_dir=tmp_path,
                              device="cpu", verbose=False,
                              callbacks=[lambda s: seen.append(
                                  s.model.aux.regressor.weight.detach().clone())])
    assert isinstance(result.model.aux, FakeHeads) and result.model.aux_names == ("h1", "h4")
    assert not torch.equal(seen[0], seen[1])  # only the auxiliary loss reaches these weights
    reloaded = model_from_checkpoint(result.best_checkpoint)
    assert isinstance(reloaded.aux, FakeHeads)
    # An architecture whose entry names no heads class gets the generic ones.
    plain = SupervisedModel("lstm", data.n_features, WINDOW, aux_horizons=(4,), d_model=8)
    assert isinstance(plain.aux, supervised.AuxHeads) and plain.aux_names == ("h4",)
