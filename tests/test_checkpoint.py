"""Checkpoints: plain-type content readable with ``weights_only=True``, clear errors for bad
files and mismatches, identical predictions after reload."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import tradezoo
from tradezoo.agents.checkpoint import (
    CheckpointError,
    feature_spec_from_checkpoint,
    label_spec_from_checkpoint,
    load_checkpoint,
    save_checkpoint,
    scaler_from_checkpoint,
)
from tradezoo.agents.data import prepare_data
from tradezoo.agents.supervised import (
    SupervisedConfig,
    model_from_checkpoint,
    train_supervised,
)
from tradezoo.data import FeatureSpec, load_dataset

WINDOW = 16


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    bars = load_dataset("bybit-btcusdt-1h").iloc[:1500]
    data = prepare_data(bars, window=WINDOW)
    config = SupervisedConfig(epochs=1, batch_size=32, max_train_batches=2, max_eval_batches=1,
                              eval_batch_size=64, progress=False, tensorboard=False)
    result = train_supervised(data, "lstm", config=config, arch_config={"d_model": 16},
                              out_dir=tmp_path_factory.mktemp("ckpt"), seed=1, device="cpu",
                              verbose=False)
    return data, result


def test_content_is_plain_and_complete(trained) -> None:
    data, result = trained
    raw = torch.load(result.last_checkpoint, weights_only=True)  # no pickled code
    assert raw["kind"] == "supervised" and raw["arch"] == "lstm"
    assert raw["arch_config"]["d_model"] == 16
    assert raw["window"] == WINDOW and raw["n_features"] == data.n_features
    assert raw["feature_spec"] == data.feature_spec.to_dict()
    assert raw["scaler"]["mean"] == [float(v) for v in data.scaler.mean]
    assert raw["label_spec"] == data.label_spec.to_dict()
    assert raw["splits"]["test"][0] == data.boundaries["test"][0].isoformat()
    assert pd.Timestamp(raw["splits"]["train"][1]) == data.boundaries["train"][1]
    assert raw["training"]["batch_size"] == 32
    assert raw["versions"]["tradezoo"] == tradezoo.__version__
    assert raw["versions"]["torch"] == torch.__version__
    assert raw["epoch"] == 1 and raw["step"] == 2
    assert set(raw["resume"]) >= {"optimizer", "scheduler", "epoch", "batch"}
    assert load_checkpoint(result.best_checkpoint)["resume"] is None  # best: weights only


def test_helpers_rebuild_specs_and_scaler(trained) -> None:
    data, result = trained
    ckpt = load_checkpoint(result.best_checkpoint)
    assert feature_spec_from_checkpoint(ckpt) == data.feature_spec
    assert label_spec_from_checkpoint(result.best_checkpoint) == data.label_spec
    scaler = scaler_from_checkpoint(ckpt)
    np.testing.assert_array_equal(scaler.transform(data.features), data.scaled)


def test_reload_predicts_identically(trained) -> None:
    data, result = trained
    model = model_from_checkpoint(result.best_checkpoint)
    assert not model.training
    probe = torch.from_numpy(data.windows(data.decision_rows("test")[:8]))  # [8, L, F]
    with torch.no_grad():
        assert torch.equal(model.forward_features(probe), result.model.forward_features(probe))


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot be read as a tradezoo checkpoint"):
        load_checkpoint(garbage)
    pickled = tmp_path / "pickled.pt"  # arbitrary objects are refused by weights_only
    torch.save({"format": "tradezoo.checkpoint", "obj": pickle.PickleError("x")}, pickled)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(pickled)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a tradezoo checkpoint"):
        load_checkpoint(foreign)


def test_truncated_file(trained, tmp_path: Path) -> None:
    _, result = trained
    cut = tmp_path / "cut.pt"
    cut.write_bytes(result.best_checkpoint.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=str(cut)):
        load_checkpoint(cut)


def test_mismatches_are_named(trained, tmp_path: Path) -> None:
    data, result = trained
    path = result.best_checkpoint
    with pytest.raises(CheckpointError, match=r"architecture mismatch.*'lstm', expected 'gru'"):
        load_checkpoint(path, expect_arch="gru")
    other = FeatureSpec(sma_windows=(5, 10))
    with pytest.raises(CheckpointError, match="feature spec mismatch \\(sma_windows: checkpoint"):
        load_checkpoint(path, expect_feature_spec=other)
    assert load_checkpoint(path, expect_arch="lstm", expect_feature_spec=data.feature_spec)
    with pytest.raises(CheckpointError, match="kind 'supervised', expected 'ppo'"):
        load_checkpoint(path, expect_kind="ppo")

    ckpt = dict(load_checkpoint(path))
    newer = {**ckpt, "format_version": 99}
    save_checkpoint(newer, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="newer than this tradezoo reads"):
        load_checkpoint(tmp_path / "newer.pt")
    incomplete = {k: v for k, v in ckpt.items() if k != "scaler"}
    torch.save(incomplete, tmp_path / "incomplete.pt")
    with pytest.raises(CheckpointError, match="missing key\\(s\\) \\['scaler'\\]"):
        load_checkpoint(tmp_path / "incomplete.pt")
    with pytest.raises(CheckpointError, match="lacks key"):
        save_checkpoint(incomplete, tmp_path / "x.pt")
    wrong_weights = {**ckpt, "arch_config": {**ckpt["arch_config"], "d_model": 8}}
    with pytest.raises(CheckpointError, match="weights do not fit architecture 'lstm'"):
        model_from_checkpoint(wrong_weights)


def test_save_is_atomic(trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, result = trained
    ckpt = load_checkpoint(result.best_checkpoint)
    target = tmp_path / "model.pt"
    save_checkpoint(ckpt, target)
    before = target.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({**ckpt, "step": 999}, target)
    assert target.read_bytes() == before  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary left behind


# ------------------------------------------- configs saved before a field existed (old forms)

#: TimeParticle's form before the design chapter's parts became its defaults.
PREVIOUS_TIMEPARTICLE = {"attention_heads": 1, "message_feedback": False,
                         "particle_outputs": False}


@pytest.mark.parametrize("absent", [tuple(PREVIOUS_TIMEPARTICLE), ("attention_heads",)])
def test_a_checkpoint_saved_before_a_field_existed_rebuilds_the_model_it_was(
        trained, tmp_path: Path, absent: tuple[str, ...]) -> None:
    """A checkpoint whose ``arch_config`` lacks fields added later (as one written before they
    existed) rebuilds the previous form, from a file and from a dict, with identical outputs;
    without ``message_feedback``/``particle_outputs`` the new defaults would not even load,
    without ``attention_heads`` alone they would load silently as another model."""
    data, _ = trained
    config = SupervisedConfig(epochs=1, batch_size=32, max_train_batches=1, max_eval_batches=1,
                              eval_batch_size=64, progress=False, tensorboard=False)
    result = train_supervised(data, "timeparticle", config=config,
                              arch_config={"d_model": 8, **PREVIOUS_TIMEPARTICLE},
                              out_dir=tmp_path / "run", seed=1, device="cpu", verbose=False)
    probe = torch.from_numpy(data.windows(data.decision_rows("test")[:4]))  # [4, L, F]
    with torch.no_grad():
        expected = result.model.forward_features(probe)
    saved = load_checkpoint(result.best_checkpoint)
    assert {k: saved["arch_config"][k] for k in PREVIOUS_TIMEPARTICLE} == PREVIOUS_TIMEPARTICLE
    old = {**saved, "arch_config": {k: v for k, v in saved["arch_config"].items()
                                    if k not in absent}}
    old.pop("path")
    save_checkpoint(old, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert loaded["arch_config"] == saved["arch_config"]
    for source in (result.best_checkpoint, tmp_path / "old.pt", old):
        model = model_from_checkpoint(source)
        assert model.backbone.config.attention_heads == 1  # type: ignore[union-attr]
        with torch.no_grad():
            assert torch.equal(model.forward_features(probe), expected)
