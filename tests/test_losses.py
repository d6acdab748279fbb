"""The supervised trainer's objectives (``SupervisedConfig.loss``): the differentiable Sharpe
term on hand-made series with a known optimum, the scale-aware weights, the chunked batches
the turnover needs, the default left unchanged, and a tiny real training with each loss."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as functional

from tradezoo.agents.checkpoint import load_checkpoint
from tradezoo.agents.data import PreparedData, prepare_data
from tradezoo.agents.losses import (
    LOSSES,
    expected_position,
    has_sharpe_term,
    magnitude_weights,
    sharpe_loss,
)
from tradezoo.agents.supervised import (
    SupervisedConfig,
    SupervisedModel,
    TrainingInterrupted,
    TrainState,
    _epoch_order,
    _n_chunks,
    _SupervisedRun,
    evaluate_supervised,
    train_supervised,
)
from tradezoo.agents.supervised_objective import _classification_loss, _item_targets, _Objective
from tradezoo.backtest import simulate
from tradezoo.backtest.costs import CostModel
from tradezoo.data import load_dataset
from tradezoo.data.labels import forward_returns
from tradezoo.errors import ConfigError
from tradezoo.policies.registry import ARCHITECTURES

# Tiny tensors: one intra-op thread avoids waiting on a pool of busy threads.
pytestmark = pytest.mark.usefixtures("one_thread")

WINDOW = 16


def tiny(**overrides: object) -> SupervisedConfig:
    base: dict[str, object] = dict(epochs=1, batch_size=32, max_train_batches=2,
                                   eval_batch_size=256, progress=False, tensorboard=False)
    base.update(overrides)
    return SupervisedConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def data() -> PreparedData:
    return prepare_data(load_dataset("bybit-btcusdt-1h").iloc[:1500], window=WINDOW)


def _logits_of(z: torch.Tensor) -> torch.Tensor:
    """Logits ``[..., 3]`` (sell, hold, buy) whose expected position rises with ``z``."""
    return torch.stack([-z, torch.zeros_like(z), z], dim=-1)


def _numpy_sharpe(position: np.ndarray, next_return: np.ndarray, follows: np.ndarray,
                  cost: float) -> float:
    """The documented formula, term by term (one run in time order)."""
    net = []
    for t in range(1, len(position)):
        if follows[t] and np.isfinite(next_return[t]):
            net.append(position[t] * next_return[t] - cost * abs(position[t] - position[t - 1]))
    values = np.array(net, dtype=np.float64)
    return -values.mean() / math.sqrt(values.var() + 1e-12)


# ------------------------------------------------------------------------- the Sharpe term


def test_expected_position_follows_the_label_order() -> None:
    logits = torch.tensor([[5.0, 0.0, -5.0], [0.0, 5.0, 0.0], [-5.0, 0.0, 5.0]])
    position = expected_position(logits)  # sell, hold, buy
    assert position[0] < -0.98 and abs(float(position[1])) < 1e-6 and position[2] > 0.98
    probabilities = torch.softmax(logits, dim=-1)
    torch.testing.assert_close(position, probabilities[:, 2] - probabilities[:, 0])


def test_sharpe_loss_is_the_documented_formula() -> None:
    rng = np.random.default_rng(0)
    position = rng.uniform(-1, 1, (3, 10))
    next_return = rng.normal(0.0005, 0.01, (3, 10))
    next_return[1, 4] = np.nan  # a missing return drops its term
    follows = np.ones((3, 10), dtype=bool)
    follows[2, 6] = False  # a gap in the decisions drops its term (its turnover is unknown)
    cost = 5e-4
    got = sharpe_loss(torch.tensor(position), torch.tensor(next_return),
                      torch.tensor(follows), cost)
    # All runs' terms pooled: the Sharpe of one batch.
    net = []
    for k in range(3):
        for t in range(1, 10):
            if follows[k, t] and np.isfinite(next_return[k, t]):
                net.append(position[k, t] * next_return[k, t]
                           - cost * abs(position[k, t] - position[k, t - 1]))
    values = np.array(net)
    assert len(values) == 3 * 9 - 2
    expected = -values.mean() / math.sqrt(values.var() + 1e-12)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # One run in time order is the same as the helper the training tests use.
    one = sharpe_loss(torch.tensor(position[:1]), torch.tensor(next_return[:1]),
                      torch.tensor(follows[:1]), cost)
    assert float(one) == pytest.approx(
        _numpy_sharpe(position[0], next_return[0], follows[0], cost), rel=1e-5)


def test_sharpe_loss_without_a_valid_term_is_zero_with_zero_gradient() -> None:
    position = torch.zeros(4, 1, requires_grad=True)  # runs of one decision: no turnover
    loss = sharpe_loss(position, torch.ones(4, 1), torch.ones(4, 1, dtype=torch.bool), 0.0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and position.grad is not None
    assert torch.equal(position.grad, torch.zeros(4, 1))


def _fit_free_position(next_return: torch.Tensor, signal: torch.Tensor, cost: float,
                       steps: int = 500) -> tuple[float, float]:
    """Minimise the Sharpe loss over ``position = tanh(bias + slope * signal)``; returns the
    fitted ``(bias, slope)``."""
    theta = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=0.01)
    follows = torch.ones_like(next_return, dtype=torch.bool)
    for _ in range(steps):
        position = torch.tanh(theta[0] + theta[1] * signal)
        loss = sharpe_loss(position, next_return, follows, cost)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    bias, slope = theta.detach().tolist()
    return bias, slope


# A signal that flips every bar and predicts the next return's sign (edge 20 bps per bar),
# with per-bar noise of 20 bps; runs of 64 bars, 4 runs per batch.
SIGNAL = torch.where(torch.arange(4 * 64) % 2 == 0, 1.0, -1.0).reshape(4, 64)
NOISE = 0.002 * torch.randn(4, 64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_sharpe_gradient_drives_the_position_to_the_signal(sign: float) -> None:
    """Returns ``sign * 20 bps * signal + noise``, no drift, no cost: the optimal position is
    ``sign * signal``, so the slope takes the sign and the bias stays near 0."""
    bias, slope = _fit_free_position(sign * 0.002 * SIGNAL + NOISE, SIGNAL, cost=0.0)
    assert np.sign(slope) == sign and abs(slope) > 0.02
    assert abs(bias) < 0.1 * abs(slope)


def test_high_turnover_cost_makes_a_constant_position_optimal() -> None:
    """Same signal plus a 5 bps drift, and a one-way cost of 20 bps: following the signal
    turns the position over 2|q| per bar for 2 * 20 bps * |q| of cost against 20 bps * |q| of
    edge, so the optimum is the constant long the drift pays (slope 0, bias > 0). Without the
    cost the same series (with noise, so that no position is riskless) is traded with the
    signal."""
    returns = 0.002 * SIGNAL + 0.0005
    bias, slope = _fit_free_position(returns, SIGNAL, cost=0.002)
    assert bias > 0.05 and abs(slope) < 0.05 * bias
    bias_free, slope_free = _fit_free_position(returns + NOISE, SIGNAL, cost=0.0)
    assert slope_free > 2 * abs(bias_free)


# ------------------------------------------------------------------- the scale-aware term


def test_scale_aware_weights_are_capped_relative_moves() -> None:
    moves = torch.tensor([0.0, 0.01, 0.03, 0.5, float("nan")])
    torch.testing.assert_close(magnitude_weights(moves, scale=0.01, cap=10.0),
                               torch.tensor([0.0, 1.0, 3.0, 10.0, 0.0]))


def test_scale_aware_optimum_weights_labels_by_their_move() -> None:
    """Two decisions the model cannot tell apart: one labelled buy before a 5 % move, one sell
    before a 1 % move. Cross-entropy's optimum is P(buy) = P(sell); the scale-aware one is
    P(buy) / P(sell) = 5, the ratio of the moves."""
    labels = torch.tensor([2, 0])
    weights = magnitude_weights(torch.tensor([0.05, 0.01]), scale=0.03, cap=10.0)
    fitted = {}
    for loss in ("ce", "scale_aware"):
        logits = torch.zeros(3, requires_grad=True)
        optimizer = torch.optim.Adam([logits], lr=0.05)
        for _ in range(600):
            batch = logits.expand(2, 3)
            value = _classification_loss(batch, labels, None, tiny(loss=loss), weights)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
        p = torch.softmax(logits.detach(), dim=0)
        fitted[loss] = float(p[2] / p[0])
    assert fitted["ce"] == pytest.approx(1.0, rel=1e-3)
    assert fitted["scale_aware"] == pytest.approx(5.0, rel=1e-2)


def test_scale_aware_loss_multiplies_class_and_sample_weights() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.1, 0.2, 0.3], [-1.0, 0.0, 3.0]])
    target = torch.tensor([0, 1, 2])
    class_weight = torch.tensor([1.0, 2.0, 0.5])
    sample_weight = torch.tensor([3.0, 0.5, 1.0])
    got = _classification_loss(logits, target, class_weight, tiny(loss="scale_aware"),
                               sample_weight)
    w = sample_weight * class_weight[target]
    per_item = functional.cross_entropy(logits, target, reduction="none")
    assert float(got) == pytest.approx(float((w * per_item).sum() / w.sum()), rel=1e-6)


# --------------------------------------------------------------------- batches and targets


def test_default_objective_is_plain_cross_entropy(data: PreparedData) -> None:
    cfg = SupervisedConfig()
    assert cfg.loss == "ce" and cfg.chunk_bars is None and cfg.chunk_length == 1
    # No extra per-item targets, and the epoch order is the permutation it always was.
    assert _item_targets(data, data.train, cfg, None) == {}
    order = _epoch_order(1000, 1, torch.Generator().manual_seed(5))
    assert torch.equal(order, torch.randperm(1000, generator=torch.Generator().manual_seed(5)))
    logits = torch.randn(16, 3, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(3, (16,), generator=torch.Generator().manual_seed(2))
    weight = torch.tensor([1.0, 0.7, 1.3])
    model = SupervisedModel("mlp", data.n_features, WINDOW, features_dim=8, d_model=8)
    objective = _Objective(cfg, model, weight, cost=0.0, magnitude_scale=torch.ones(()))
    assert torch.equal(objective(logits, labels, {}, 1),
                       functional.cross_entropy(logits, labels, weight=weight))


@pytest.mark.parametrize("n_items", [97, 100, 127])
def test_chunked_epoch_order_is_runs_of_consecutive_items(n_items: int) -> None:
    chunk = 8
    lengths, firsts = set(), set()
    for epoch in range(12):
        order = _epoch_order(n_items, chunk, torch.Generator().manual_seed(epoch))
        runs = order.reshape(-1, chunk)
        assert torch.equal(runs - runs[:, :1], torch.arange(chunk).expand_as(runs))
        assert order.unique().numel() == order.numel()
        assert int(order.min()) >= 0 and int(order.max()) < n_items
        lengths.add(order.numel())
        firsts.add(int(runs[:, 0].min()) % chunk)
    assert lengths == {chunk * _n_chunks(n_items, chunk)}  # the same steps every epoch
    assert len(firsts) > 1  # run boundaries move from epoch to epoch


def test_targets_follow_the_backtest_and_label_conventions(data: PreparedData) -> None:
    cfg = tiny(loss="scale_aware+sharpe")
    targets = _item_targets(data, data.train, cfg, None)
    rows = np.asarray(data.train.decision_rows)
    opens = data.bars["open"].to_numpy()
    bar = rows + data.bar_offset  # the decision's bar in data.bars
    np.testing.assert_allclose(targets["next_return"], opens[bar + 2] / opens[bar + 1] - 1,
                               rtol=1e-6)
    horizon = data.label_spec.horizon
    np.testing.assert_allclose(targets["abs_move"],
                               np.abs(opens[bar + 1 + horizon] / opens[bar + 1] - 1), rtol=1e-6)
    assert not targets["follows"][0]
    np.testing.assert_array_equal(targets["follows"][1:], np.diff(rows) == 1)
    # The next return is what the backtest books for one bar held after the decision.
    t = int(bar[10])
    result = simulate(data.bars.iloc[t : t + 3], [1.0, 0.0, 0.0], costs=CostModel.zero())
    assert float(result.equity.iloc[-1]) == pytest.approx(1.0 + targets["next_return"][10],
                                                          rel=1e-6)


def test_loss_config_rules() -> None:
    with pytest.raises(ConfigError, match=r"SupervisedConfig\.loss must be one of .*sharpe"):
        SupervisedConfig(loss="hinge")
    with pytest.raises(ConfigError, match=r"chunk_bars must be >= 2 with a Sharpe term"):
        SupervisedConfig(loss="sharpe", chunk_bars=1)
    with pytest.raises(ConfigError, match=r"batch_size must be a multiple of chunk_bars \(32 "
                                          r"by default with a Sharpe term\), got batch_size=100"):
        SupervisedConfig(loss="ce+sharpe", batch_size=100)
    with pytest.raises(ConfigError, match=r"sharpe_cost_bps must be a number >= 0"):
        SupervisedConfig(loss="sharpe", sharpe_cost_bps=-1.0)
    with pytest.raises(ConfigError, match=r"sharpe_weight must be a number > 0"):
        SupervisedConfig(loss="ce+sharpe", sharpe_weight=0.0)
    with pytest.raises(ConfigError, match=r"scale_aware_cap must be a number > 0"):
        SupervisedConfig(loss="scale_aware", scale_aware_cap=0.0)
    assert SupervisedConfig(loss="sharpe").chunk_length == 32
    assert SupervisedConfig(loss="sharpe", chunk_bars=8, batch_size=24).chunk_length == 8
    # A stored config (every field written out) takes a Sharpe loss without naming the chunk.
    stored = SupervisedConfig().to_dict()
    assert SupervisedConfig.from_dict({**stored, "loss": "sharpe"}).chunk_length == 32


def test_too_few_train_items_for_the_chunks_is_an_error(data: PreparedData,
                                                        tmp_path: Path) -> None:
    n = len(data.train)
    chunk = n // 2 + 1  # 2 * chunk - 1 > n: no run fits after every offset
    with pytest.raises(ValueError, match=r"fewer than 2 \* chunk_bars - 1"):
        train_supervised(data, "mlp", config=tiny(loss="sharpe", chunk_bars=chunk,
                                                  batch_size=chunk),
                         out_dir=tmp_path, device="cpu", verbose=False)


# ---------------------------------------------------------------------- real training


@pytest.mark.parametrize("loss", [name for name in LOSSES
                                  if not name.startswith("multi_horizon")])
def test_tiny_training_with_each_loss_trains_and_backtests(
    loss: str, data: PreparedData, tmp_path: Path
) -> None:
    cfg = tiny(loss=loss, chunk_bars=8 if has_sharpe_term(loss) else None)
    result = train_supervised(data, "gru", config=cfg, arch_config={"d_model": 8},
                              out_dir=tmp_path, seed=0, device="cpu", verbose=False)
    record = result.history[0]
    assert math.isfinite(record["train_loss"]) and math.isfinite(record["val_loss"])
    assert result.steps == 2
    assert load_checkpoint(result.best_checkpoint)["training"]["loss"] == loss
    evaluation = evaluate_supervised(result.best_checkpoint, data, "test")
    assert math.isfinite(evaluation.metrics["backtest/total_return"])
    assert len(evaluation.positions) == len(data.decision_rows("test")) + 1
    if loss == "sharpe":
        # The validation loss is minus the Sharpe of the val split's expected positions in
        # time order, net of the labels' one-way cost on their turnover.
        val = data.val
        assert val is not None
        rows = np.asarray(val.decision_rows)
        probabilities = evaluation_probabilities(result.model, data, rows)
        position = probabilities[:, 2] - probabilities[:, 0]
        next_return = forward_returns(data.bars, 1).to_numpy()[rows + data.bar_offset]
        follows = np.concatenate([[False], np.diff(rows) == 1])
        expected = _numpy_sharpe(position, next_return, follows,
                                 data.label_spec.cost_bps / 1e4)
        assert record["val_loss"] == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_sharpe_training_batches_are_runs_of_consecutive_decisions(
    data: PreparedData, tmp_path: Path
) -> None:
    run = _SupervisedRun(data, "mlp", tiny(loss="sharpe", chunk_bars=8, max_train_batches=3),
                         None, tmp_path, 0, torch.device("cpu"), False)
    seen: list[torch.Tensor] = []
    gather = run.train_batches.get

    def record(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """The real gather, with its indices kept."""
        seen.append(index.clone())
        return gather(index)

    run.train_batches.get = record  # type: ignore[method-assign]
    run.fit([])
    assert len(seen) == 3
    for index in seen:
        runs = index.reshape(4, 8)  # batch_size 32 = 4 runs of 8
        assert torch.equal(runs - runs[:, :1], torch.arange(8).expand(4, 8))


def test_interrupted_sharpe_run_resumes_onto_the_same_batches(data: PreparedData,
                                                              tmp_path: Path) -> None:
    kwargs = dict(config=tiny(loss="ce+sharpe", chunk_bars=8, epochs=2, max_train_batches=3),
                  seed=3, device="cpu", verbose=False)

    def interrupt(state: TrainState) -> None:
        if state.step == 4:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted) as info:
        train_supervised(data, "mlp", out_dir=tmp_path / "run", callbacks=[interrupt],
                         **kwargs)  # type: ignore[arg-type]
    resumed = train_supervised(data, "mlp", out_dir=tmp_path / "run",
                               resume_from=info.value.checkpoint, **kwargs)  # type: ignore[arg-type]
    straight = train_supervised(data, "mlp", out_dir=tmp_path / "straight",
                                **kwargs)  # type: ignore[arg-type]
    assert resumed.steps == straight.steps == 6
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key])
    assert resumed.history[-1]["val_loss"] == straight.history[-1]["val_loss"]


def evaluation_probabilities(model: SupervisedModel, data: PreparedData,
                             rows: np.ndarray) -> np.ndarray:
    """``[N, 3]`` class probabilities of the windows ending at ``rows``."""
    x = torch.from_numpy(data.windows(rows))  # [N, L, F]
    model.eval()
    with torch.no_grad():
        return torch.softmax(model.forward_features(x), dim=-1).numpy().astype(np.float64)


def test_sharpe_cost_defaults_to_the_label_cost(data: PreparedData, tmp_path: Path) -> None:
    run = _SupervisedRun(data, "mlp", tiny(loss="sharpe", chunk_bars=8), None, tmp_path, 0,
                         torch.device("cpu"), False)
    assert run.objective.cost == pytest.approx(data.label_spec.cost_bps / 1e4)
    assert run.chunk == 8
    run = _SupervisedRun(data, "mlp", tiny(loss="sharpe", chunk_bars=8, sharpe_cost_bps=0.0),
                         None, tmp_path, 0, torch.device("cpu"), False)
    assert run.objective.cost == 0.0
    run = _SupervisedRun(data, "mlp", tiny(loss="scale_aware"), None, tmp_path, 0,
                         torch.device("cpu"), False)
    moves = forward_returns(data.bars, data.label_spec.horizon).to_numpy()
    train_moves = np.abs(moves[np.asarray(data.train.decision_rows) + data.bar_offset])
    assert float(run.objective.magnitude_scale) == pytest.approx(float(train_moves.mean()),
                                                                 rel=1e-5)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_trains_on_the_sharpe_term(arch: str, data: PreparedData) -> None:
    torch.manual_seed(0)
    model = SupervisedModel(arch, data.n_features, WINDOW, features_dim=8, d_model=8)
    cfg = tiny(loss="ce+sharpe", chunk_bars=8)
    targets = _item_targets(data, data.train, cfg, None)
    index = np.arange(16)  # two runs of 8 consecutive items
    rows = np.asarray(data.train.decision_rows)[index]
    obs = torch.from_numpy(data.windows(rows))
    labels = data.train.labels[torch.from_numpy(index)]
    batch_targets = {k: torch.from_numpy(v[index]) for k, v in targets.items()}
    objective = _Objective(cfg, model, None, cost=5e-4, magnitude_scale=torch.ones(()))
    loss = objective(model.forward_features(obs), labels, batch_targets, 8)
    loss.backward()
    grad = model.head.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


# ------------------------------------------------------------------- multi-horizon labels


@pytest.fixture(scope="module")
def multi_data() -> PreparedData:
    return prepare_data(load_dataset("bybit-btcusdt-1h").iloc[:1500], window=WINDOW,
                        label_spec={"task": "multi_horizon", "horizons": [1, 6]})


def test_multi_horizon_optimum_is_each_horizons_label_frequencies() -> None:
    """Four decisions the model cannot tell apart, labelled at two horizons: the averaged
    cross-entropy's optimum is, per head, the frequencies of that horizon's labels."""
    model = SupervisedModel("mlp", 3, 4, features_dim=4, task="multi_horizon", horizons=(1, 6),
                            d_model=4)
    labels = torch.tensor([[2, 0], [2, 0], [2, 1], [0, 1]])  # [B, H]
    logits = torch.zeros(2, 3, requires_grad=True)  # one free head per horizon
    optimizer = torch.optim.Adam([logits], lr=0.05)
    objective = _Objective(tiny(loss="multi_horizon", class_weights=False), model, None,
                           cost=0.0, magnitude_scale=torch.ones(()))
    for _ in range(800):
        loss = objective(logits.expand(4, 2, 3), labels, {}, 1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    p = torch.softmax(logits.detach(), dim=-1)
    torch.testing.assert_close(p, torch.tensor([[0.25, 0.0, 0.75], [0.5, 0.5, 0.0]]),
                               atol=0.02, rtol=0)


def test_multi_horizon_loss_needs_multi_horizon_labels_and_volatility_takes_ce(
    data: PreparedData, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"loss='multi_horizon' averages the cross-entropy over "
                                          r"the horizon heads .* task is 'direction'"):
        train_supervised(data, "mlp", config=tiny(loss="multi_horizon"), out_dir=tmp_path,
                         device="cpu", verbose=False)
    volatility = prepare_data(load_dataset("bybit-btcusdt-1h").iloc[:600], window=WINDOW,
                              label_spec={"task": "volatility"})
    with pytest.raises(ConfigError, match=r"loss='sharpe' applies to the direction and "
                                          r"multi_horizon tasks"):
        train_supervised(volatility, "mlp", config=tiny(loss="sharpe", chunk_bars=8),
                         out_dir=tmp_path, device="cpu", verbose=False)


def test_multi_horizon_loss_is_cross_entropy_averaged_over_the_heads(
    multi_data: PreparedData, tmp_path: Path
) -> None:
    runs = {loss: train_supervised(multi_data, "gru", config=tiny(loss=loss),
                                   arch_config={"d_model": 8}, out_dir=tmp_path / loss,
                                   seed=0, device="cpu", verbose=False)
            for loss in ("ce", "multi_horizon")}
    assert runs["ce"].history[0]["val_loss"] == runs["multi_horizon"].history[0]["val_loss"]
    for key, value in runs["ce"].model.state_dict().items():
        assert torch.equal(value, runs["multi_horizon"].model.state_dict()[key])


@pytest.mark.parametrize("loss", ["scale_aware+sharpe", "multi_horizon+sharpe"])
def test_multi_horizon_model_trains_on_every_term_and_backtests(
    loss: str, multi_data: PreparedData, tmp_path: Path
) -> None:
    cfg = tiny(loss=loss, chunk_bars=8)
    run = _SupervisedRun(multi_data, "gru", cfg, {"d_model": 8}, tmp_path / "run", 0,
                         torch.device("cpu"), False)
    if loss.startswith("scale_aware"):  # one unit per horizon: the mean move of each
        opens = multi_data.bars["open"].to_numpy()
        bar = np.asarray(multi_data.train.decision_rows) + multi_data.bar_offset
        expected = [np.abs(opens[bar + 1 + h] / opens[bar + 1] - 1).mean() for h in (1, 6)]
        np.testing.assert_allclose(run.objective.magnitude_scale.numpy(), expected, rtol=1e-5)
    result = train_supervised(multi_data, "gru", config=cfg, arch_config={"d_model": 8},
                              out_dir=tmp_path / "train", seed=0, device="cpu", verbose=False)
    assert math.isfinite(result.history[0]["val_loss"])
    evaluation = evaluate_supervised(result.best_checkpoint, multi_data, "test")
    assert math.isfinite(evaluation.metrics["backtest/total_return"])
