"""One model across several datasets (tradezoo.agents.multi): per-dataset preparation, the
sampling rule, pooled validation, per-dataset backtests, dataset names in checkpoints, the
unknown-asset rules and the asset embedding, ``--data a,b`` end to end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tradezoo.agents.checkpoint import (
    CheckpointError,
    checkpoint_dataset_names,
    load_checkpoint,
    scaler_from_checkpoint,
)
from tradezoo.agents.data import prepare_data
from tradezoo.agents.multi import MultiData, epoch_order, prepare_datasets
from tradezoo.agents.supervised import evaluate_supervised, train_supervised
from tradezoo.data.features import FeatureScaler

NAMES = ("bybit-btcusdt-1h", "yahoo-spy-1d")
WINDOW = 16
TINY = {"epochs": 2, "batch_size": 32, "max_train_batches": 2, "max_eval_batches": 1,
        "eval_batch_size": 64, "features_dim": 16, "tensorboard": False,
        "progress": False, "patience": None}
ARCH_CONFIG = {"d_model": 8}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def multi() -> MultiData:
    return prepare_datasets(list(NAMES), window=WINDOW)


@pytest.fixture(scope="module")
def trained(multi: MultiData, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("multi") / "sup"
    return train_supervised(multi, "cfc", config=TINY, arch_config=ARCH_CONFIG, out_dir=out,
                            seed=0, device="cpu", verbose=False)


def test_each_dataset_is_prepared_on_its_own(multi: MultiData) -> None:
    assert multi.names == NAMES
    bybit, spy = multi.parts
    for part in multi.parts:  # the scaler: fitted on this dataset's own train rows only
        train_rows = part.env_splits.part("train")
        own = FeatureScaler(clip=part.scaler.clip).fit(part.features.iloc[train_rows])
        np.testing.assert_array_equal(own.to_dict()["mean"], part.scaler.to_dict()["mean"])
        np.testing.assert_array_equal(own.to_dict()["std"], part.scaler.to_dict()["std"])
        assert part.train.decision_rows.max() < train_rows.max() + 1  # own splits
    assert not np.allclose(bybit.scaler.to_dict()["mean"], spy.scaler.to_dict()["mean"])
    # its own cost model (auto resolves per source) and labels netting out those costs
    assert bybit.costs.funding and not spy.costs.funding
    assert bybit.label_spec.cost_bps != spy.label_spec.cost_bps
    # the same feature columns: SPY pays no funding, its funding_rate column is zeros
    assert bybit.feature_names == spy.feature_names and "funding_rate" in spy.feature_names
    assert (spy.bars["funding_rate"] == 0).all()


def test_one_dataset_keeps_the_single_dataset_preparation_and_shuffle() -> None:
    one = prepare_datasets(["yahoo-spy-1d"], window=WINDOW).parts[0]
    alone = prepare_data("yahoo-spy-1d", window=WINDOW)
    assert one.feature_names == alone.feature_names and "funding_rate" not in alone.feature_names
    np.testing.assert_array_equal(one.scaled.to_numpy(), alone.scaled.to_numpy())
    for rule in ("proportional", "balanced"):
        order = epoch_order([37], rule, torch.Generator().manual_seed(5))
        assert torch.equal(order, torch.randperm(37, generator=torch.Generator().manual_seed(5)))


def test_sampling_rules_draw_the_documented_proportions() -> None:
    sizes = [100, 10]
    proportional = epoch_order(sizes, "proportional", torch.Generator().manual_seed(1))
    assert sorted(proportional.tolist()) == list(range(110))  # every item once: 100 : 10
    balanced = epoch_order(sizes, "balanced", torch.Generator().manual_seed(1))
    assert len(balanced) == 110
    first = balanced[balanced < 100]
    second = balanced[balanced >= 100]
    assert len(first) == len(second) == 55  # equal shares
    assert len(set(first.tolist())) == 55  # the large dataset: cut, no repeats
    counts = np.bincount(second.numpy() - 100, minlength=10)
    assert counts.min() == 5 and counts.max() == 6  # the small one: repeated shuffles
    again = epoch_order(sizes, "balanced", torch.Generator().manual_seed(1))
    other = epoch_order(sizes, "balanced", torch.Generator().manual_seed(2))
    assert torch.equal(balanced, again) and not torch.equal(balanced, other)
    with pytest.raises(ValueError, match="sampling must be one of"):
        epoch_order(sizes, "uniform", torch.Generator())


def test_pooled_validation_chooses_the_best_checkpoint(trained, multi: MultiData) -> None:  # type: ignore[no-untyped-def]
    history = trained.history
    assert len(history) == 2
    for record in history:
        per = record["val_datasets"]
        assert set(per) == set(NAMES)
        low, high = sorted(per[name]["loss"] for name in NAMES)
        assert low <= record["val_loss"] <= high  # pooled over both datasets' items
    pooled = [record["val_loss"] for record in history]
    assert trained.best_epoch == int(np.argmin(pooled))
    best = load_checkpoint(trained.best_checkpoint)
    assert best["best"]["metric"] == "val_loss"
    assert math.isclose(best["best"]["score"], min(pooled))
    assert best["epoch"] == trained.best_epoch + 1


def test_checkpoint_records_the_datasets_and_their_scalers(trained, multi: MultiData) -> None:  # type: ignore[no-untyped-def]
    ckpt = load_checkpoint(trained.best_checkpoint)  # torch.load(weights_only=True)
    assert checkpoint_dataset_names(ckpt) == NAMES
    assert ckpt["asset_embedding"] is False
    for part in multi.parts:
        saved = scaler_from_checkpoint(ckpt, part.name).to_dict()
        assert saved["mean"] == part.scaler.to_dict()["mean"]
        record = next(r for r in ckpt["datasets"] if r["name"] == part.name)
        assert record["costs"] == part.costs.to_dict()


def test_a_cfc_trained_on_two_datasets_backtests_on_both(trained, multi: MultiData) -> None:  # type: ignore[no-untyped-def]
    """The acceptance test: one cfc, two bundled datasets of different kinds, a backtest on
    the test split of each against its own buy-and-hold."""
    from tradezoo.agents.run import evaluate_checkpoint_datasets

    outcomes = evaluate_checkpoint_datasets(trained.best_checkpoint, split="test")
    assert [o.dataset for o in outcomes] == list(NAMES)
    for outcome, part in zip(outcomes, multi.parts, strict=True):
        first, last = part.boundaries["test"]
        index = outcome.result.equity.index
        assert first <= index[0] and index[-1] <= last + (part.bars.index[1]
                                                          - part.bars.index[0]) * 2
        direct = evaluate_supervised(trained.best_checkpoint, part, "test")
        assert outcome.result.metrics.to_dict() == direct.backtest.metrics.to_dict()
        assert math.isfinite(outcome.result.benchmark_metrics.total_return)
        assert outcome.classification is not None
    assert outcomes[0].result.benchmark_metrics.total_return != \
        outcomes[1].result.benchmark_metrics.total_return


def test_an_unknown_asset_is_allowed_with_a_warning(trained) -> None:  # type: ignore[no-untyped-def]
    other = prepare_data("synthetic-regime", window=WINDOW, zero_funding=True)
    with pytest.warns(UserWarning, match="not one it was trained on"):
        evaluation = evaluate_supervised(trained.best_checkpoint, other, "test")
    assert math.isfinite(evaluation.backtest.metrics.total_return)


def test_asset_embedding_learns_a_vector_per_dataset_and_refuses_unknown_assets(
    multi: MultiData, tmp_path: Path
) -> None:
    from tradezoo.agents.ppo import PPOConfig, make_ppo

    config = {**TINY, "epochs": 1, "asset_embedding": True, "sampling": "balanced"}
    result = train_supervised(multi, "cfc", config=config, arch_config=ARCH_CONFIG,
                              out_dir=tmp_path / "emb", seed=0, device="cpu", verbose=False)
    vectors = result.model.assets.weight.detach()  # type: ignore[union-attr]
    assert vectors.shape == (2, multi.parts[0].n_features)
    assert not torch.equal(vectors[0], vectors[1])  # learned apart from their zero start
    ckpt = load_checkpoint(result.best_checkpoint)
    assert ckpt["asset_embedding"] is True
    known = evaluate_supervised(result.best_checkpoint, multi.parts[1], "test")
    assert math.isfinite(known.backtest.metrics.total_return)
    other = prepare_data("synthetic-regime", window=WINDOW, zero_funding=True)
    with pytest.raises(ValueError, match=r"not one of the assets .*yahoo-spy-1d"):
        evaluate_supervised(result.best_checkpoint, other, "test")
    with pytest.raises(CheckpointError, match="asset embedding"):
        make_ppo(multi, "cfc", config=PPOConfig(n_envs=1, n_steps=64, batch_size=64),
                 init_from=result.best_checkpoint, device="cpu")


def test_yaml_list_and_comma_list_are_one_option(tmp_path: Path) -> None:
    from tradezoo.agents.config import resolve_options, training_options

    config = tmp_path / "multi.yaml"
    config.write_text("data: [bybit-btcusdt-1h, yahoo-spy-1d]\n", encoding="utf-8")
    from_file = training_options("train-supervised",
                                 resolve_options("train-supervised", config_path=config))
    from_flag = training_options("train-supervised", resolve_options(
        "train-supervised", flags={"data": "bybit-btcusdt-1h,yahoo-spy-1d"}))
    assert from_file.data == from_flag.data == "bybit-btcusdt-1h,yahoo-spy-1d"


def test_cli_trains_on_two_datasets_and_backtests_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tradezoo.cli import main

    out = tmp_path / "run"
    assert main(["train", "supervised", "--data", ",".join(NAMES), "--arch", "cfc",
                 "--budget", "smoke", "--window", str(WINDOW), "--d-model", "8",
                 "--batch-size", "32", "--set", "supervised.max_train_batches=2",
                 "--set", "supervised.eval_batch_size=64",
                 "--set", "supervised.tensorboard=false", "--device", "cpu", "--quiet",
                 "--out", str(out)]) == 0
    trained_on = capsys.readouterr().out
    assert all(f"-- {name}" in trained_on for name in NAMES)  # validation per dataset
    assert checkpoint_dataset_names(load_checkpoint(out / "best.pt")) == NAMES
    assert main(["backtest", str(out / "best.pt"), "--split", "test"]) == 0
    table = capsys.readouterr().out
    for name in NAMES:
        assert f"| {name} | supervised |" in table
        assert f"| {name} | buy & hold |" in table
        assert (out / f"best.test.{name}.backtest.json").is_file()


def test_ppo_warm_starts_trains_and_evaluates_on_several_datasets(
    trained, multi: MultiData, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    from tradezoo.agents.ppo import evaluate_ppo, load_ppo_policy, make_eval_env, train_ppo

    config = {"timesteps": 128, "n_envs": 2, "n_steps": 64, "batch_size": 64, "n_epochs": 1,
              "eval_freq": 0, "checkpoint_freq": 0, "tensorboard": False,
              "episode_length": 48, "features_dim": 16, "arch_config": ARCH_CONFIG}
    result = train_ppo(multi, "cfc", config=config, out_dir=tmp_path / "ppo", seed=0,
                       device="cpu", init_from=trained.best_checkpoint, progress=False,
                       verbose=False)
    sidecar = load_checkpoint(result.final_model.with_suffix(".pt"))
    assert checkpoint_dataset_names(sidecar) == NAMES
    policy = load_ppo_policy(result.final_model)
    spy = multi.parts[1]
    evaluation = evaluate_ppo(policy, spy, "test")  # its own scaler, bars and costs
    first, last = spy.boundaries["test"]
    assert first <= evaluation.backtest.equity.index[0] <= last
    assert evaluation.max_equity_difference < 1e-9
    envs = make_eval_env(multi, result.config, "val")  # the pooled validation: one per dataset
    assert isinstance(envs, dict) and list(envs) == list(NAMES)
