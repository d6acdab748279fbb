"""The architecture registry: one entry per architecture is all the zoo needs.

A toy architecture (a one-layer causal convolution, mean-pooled over time) defined in this
module is registered for the tests that need it alone, trained supervised (auxiliary heads
included) and with PPO warm-started from that checkpoint through the public API, and both
checkpoints are reloaded. Everything that lists architectures (``POLICY_CLASSES``, the
policy exports, ``AUX_HEADS``, ``--archs all``) follows the entry, and unregistering removes
it everywhere. The docs' architecture tables list exactly the registered names.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import tradezoo.policies as policies
from tradezoo.agents.config import parse_archs
from tradezoo.agents.data import PreparedData, prepare_data
from tradezoo.agents.ppo import PPOConfig, load_ppo_policy, train_ppo
from tradezoo.agents.supervised import (
    AUX_HEADS,
    SupervisedConfig,
    model_from_checkpoint,
    train_supervised,
)
from tradezoo.data import load_dataset
from tradezoo.policies import (
    ARCHITECTURES,
    POLICY_CLASSES,
    Architecture,
    Backbone,
    BackboneConfig,
    SequencePolicy,
    make_backbone,
    register_architecture,
    unregister_architecture,
)

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 16
D_MODEL = 8

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ the toy architecture


@dataclass
class ToyConfig(BackboneConfig):
    """Attributes: d_model (output width), kernel (convolution length in bars)."""

    d_model: int = 16
    kernel: int = 3


class ToyBackbone(Backbone):
    """``x [B, L, F] -> [B, d_model]``: causal ``Conv1d(F, d_model, kernel)``, ReLU, mean over
    time."""

    name: ClassVar[str] = "toy"
    config_cls: ClassVar[type[BackboneConfig]] = ToyConfig

    def __init__(self, n_features: int, config: ToyConfig) -> None:
        super().__init__(n_features, config)
        self.kernel = config.kernel
        self.conv = nn.Conv1d(n_features, config.d_model, config.kernel)

    def forward(self, x: Tensor, dt: Tensor | None = None) -> Tensor:
        self.check_input(x, dt)
        h = nn.functional.pad(x.transpose(1, 2), (self.kernel - 1, 0))  # causal: left pad
        return torch.relu(self.conv(h)).mean(dim=-1)


class ToyHeads(nn.Module):
    """Auxiliary heads with the interface supervised training expects."""

    def __init__(self, d_model: int, horizons: tuple[str, ...], regression: bool) -> None:
        super().__init__()
        self.regressor = nn.Linear(d_model, len(horizons))
        self.direction = nn.Linear(d_model, len(horizons))

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        return {"regression": self.regressor(z), "direction": self.direction(z)}


class ToyPolicy(SequencePolicy):
    """Actor-critic policy over the ``toy`` backbone."""

    arch: ClassVar[str | None] = "toy"


TOY = Architecture("toy", module=__name__, backbone="ToyBackbone", config="ToyConfig",
                   policy="ToyPolicy", aux_heads="ToyHeads")
"""The one registry entry the toy needs (its module is this test file)."""


@pytest.fixture
def toy() -> Iterator[Architecture]:
    """``toy`` registered for one test, and removed afterwards whatever happens."""
    entry = register_architecture(TOY)
    try:
        yield entry
    finally:
        unregister_architecture("toy")
    assert "toy" not in ARCHITECTURES


@pytest.fixture(scope="module")
def data() -> PreparedData:
    return prepare_data(load_dataset("bybit-btcusdt-1h").iloc[:1500], window=WINDOW)


# --------------------------------------------------------------------------------- tests


def test_builtin_entries_resolve_and_agree_with_their_classes() -> None:
    for name, entry in ARCHITECTURES.items():
        assert entry.name == name
        assert entry.backbone_cls.name == name and entry.backbone_cls.config_cls is entry.config_cls
        assert POLICY_CLASSES[name] is entry.policy_cls and entry.policy_cls.arch == name
        assert getattr(policies, entry.policy_name) is entry.policy_cls
        assert entry.policy_name in policies.__all__
    assert dict(AUX_HEADS) == {"mambats": "MambaTSHeads", "msa": "MSAHeads"}
    assert ARCHITECTURES["msa"].aux_heads_cls.__name__ == "MSAHeads"
    assert ARCHITECTURES["gru"].aux_heads_cls is None


def test_everything_that_lists_architectures_follows_the_registry(toy: Architecture) -> None:
    assert list(ARCHITECTURES)[-1] == "toy" and ARCHITECTURES["toy"] is toy
    assert toy.backbone_cls is ToyBackbone and toy.config_cls is ToyConfig
    assert POLICY_CLASSES["toy"] is ToyPolicy and list(POLICY_CLASSES) == list(ARCHITECTURES)
    assert policies.ToyPolicy is ToyPolicy
    assert AUX_HEADS["toy"] == "ToyHeads" and toy.aux_heads_cls is ToyHeads
    assert parse_archs("all") == list(ARCHITECTURES)
    assert parse_archs("toy,gru") == ["toy", "gru"]
    net = make_backbone("toy", 5, d_model=4, kernel=2)
    assert net(torch.randn(3, 7, 5)).shape == (3, 4)
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['width'\].*'kernel'"):
        make_backbone("toy", 5, width=4)


def test_toy_trains_supervised_and_with_ppo_through_the_public_api(
    toy: Architecture, data: PreparedData, tmp_path: Path
) -> None:
    config = SupervisedConfig(epochs=1, batch_size=32, max_train_batches=2, max_eval_batches=1,
                              features_dim=D_MODEL, aux_horizons=(1, 4), progress=False,
                              tensorboard=False)
    supervised = train_supervised(data, "toy", config=config,
                                  arch_config={"d_model": D_MODEL, "kernel": 2},
                                  out_dir=tmp_path / "supervised", seed=0, device="cpu",
                                  verbose=False)
    assert type(supervised.model.extractor.backbone) is ToyBackbone
    assert isinstance(supervised.model.aux, ToyHeads) and supervised.steps == 2
    reloaded = model_from_checkpoint(supervised.best_checkpoint)
    probe = data.test.features[: WINDOW * 3].reshape(3, WINDOW, -1)  # [3, L, F]
    with torch.no_grad():
        assert torch.equal(reloaded.forward_features(probe),
                           supervised.model.forward_features(probe))

    ppo_config = PPOConfig(timesteps=128, n_envs=2, n_steps=64, batch_size=64, n_epochs=1,
                           episode_length=96, eval_freq=0, checkpoint_freq=0, tensorboard=False)
    ppo = train_ppo(data, "toy", config=ppo_config, out_dir=tmp_path / "ppo", seed=0,
                    device="cpu", init_from=supervised.best_checkpoint, progress=False,
                    verbose=False)
    assert type(ppo.model.policy) is ToyPolicy and ppo.num_timesteps == 128
    assert ppo.model.policy.features_extractor.backbone.config == ToyConfig(D_MODEL, 2)
    policy, checkpoint = load_ppo_policy(ppo.final_model)
    assert type(policy) is ToyPolicy and checkpoint["arch"] == "toy"
    obs = np.concatenate([probe.numpy(), np.zeros((3, WINDOW, 2), np.float32)], axis=-1)
    np.testing.assert_array_equal(policy.predict(obs, deterministic=True)[0],
                                  ppo.model.predict(obs, deterministic=True)[0])


def test_unregister_removes_the_entry_everywhere() -> None:
    register_architecture(TOY)
    assert unregister_architecture("toy") is TOY
    assert "toy" not in ARCHITECTURES and "toy" not in POLICY_CLASSES and "toy" not in AUX_HEADS
    assert "toy" not in parse_archs("all")
    with pytest.raises(AttributeError, match="ToyPolicy"):
        policies.ToyPolicy  # noqa: B018
    with pytest.raises(ValueError, match=r"unknown architecture 'toy'; valid names: \['mamba'"):
        make_backbone("toy", 5)
    with pytest.raises(ValueError, match="unknown architecture 'toy'"):
        unregister_architecture("toy")


def test_bad_entries_are_refused_with_the_rule() -> None:
    with pytest.raises(ValueError, match="architecture name must match"):
        dataclasses.replace(TOY, name="Toy-1")
    with pytest.raises(ValueError, match="policy must be a class name"):
        dataclasses.replace(TOY, policy="not a class")
    with pytest.raises(ValueError, match="'gru' is already registered"):
        register_architecture(dataclasses.replace(TOY, name="gru"))
    with pytest.raises(ValueError, match="policy class name 'GRUPolicy' is already used by 'gru'"):
        register_architecture(dataclasses.replace(TOY, policy="tradezoo.policies.sb3:GRUPolicy"))
    assert "toy" not in ARCHITECTURES
    # Classes are checked when first used: a policy for another architecture, a missing class.
    wrong = [dataclasses.replace(TOY, name="toy2", policy="ToyHeads"),
             dataclasses.replace(TOY, name="toy3", backbone="NoSuchBackbone",
                                 policy="Toy3Policy")]
    for entry in wrong:
        register_architecture(entry)
    try:
        with pytest.raises(TypeError, match=r"policy .ToyHeads. must be a .*SequencePolicy"):
            POLICY_CLASSES["toy2"]
        with pytest.raises(TypeError, match=r"ToyBackbone has name=.toy.*needs name=.toy2."):
            make_backbone("toy2", 5)
        with pytest.raises(ImportError, match="defines no 'NoSuchBackbone'"):
            make_backbone("toy3", 5)
    finally:
        for entry in wrong:
            unregister_architecture(entry.name)


def _table_names(path: Path) -> list[str]:
    """Names in the first column of the Markdown table whose header starts ``| name |``."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| name |"))
    names: list[str] = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        names += re.findall(r"`([a-z0-9_]+)`", line.split("|")[1])
    return names


@pytest.mark.parametrize("doc", ["README.md", "docs/architectures.md"])
def test_docs_architecture_tables_list_exactly_the_registry(doc: str) -> None:
    assert _table_names(ROOT / doc) == list(ARCHITECTURES)


def test_docs_policy_class_list_is_the_registry() -> None:
    text = (ROOT / "docs" / "architectures.md").read_text()
    listed = re.search(r"Policy classes: (.*?)\. ", text, re.S)
    assert listed is not None
    assert re.findall(r"`(\w+)`", listed.group(1)) == [
        entry.policy_name for entry in ARCHITECTURES.values()]
