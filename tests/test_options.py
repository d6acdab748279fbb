"""One source of defaults (the trainer dataclasses), budgets as named overlays on them, typed
options from the CLI, and one config-check mechanism (``tradezoo.data.checks``)."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tradezoo.agents.config import (
    BUDGETS,
    COMMAND_PRESETS,
    TrainingOptions,
    resolve_options,
    training_options,
)
from tradezoo.agents.ppo import PPOConfig
from tradezoo.agents.supervised import SupervisedConfig
from tradezoo.backtest.costs import CostModel
from tradezoo.cli import main
from tradezoo.data.checks import ConfigTypeError
from tradezoo.errors import ConfigError
from tradezoo.policies.registry import ARCHITECTURES
from tradezoo.policies.wiring import NCP, AutoNCP, FullyConnected


class _Stop(Exception):
    """Raised by the stand-in trainer once it has seen the configuration it was given."""


def _config_the_cli_trains(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str],
                           module: str, name: str) -> Any:
    """Run ``tradezoo <argv>`` with the trainer ``module.name`` replaced by one that records
    its ``config`` and stops: the configuration the command would train with."""
    import importlib

    monkeypatch.chdir(tmp_path)
    seen: dict[str, Any] = {}

    def record(*args: Any, config: Any = None, **kwargs: Any) -> Any:
        seen["config"] = config
        raise _Stop

    monkeypatch.setattr(importlib.import_module(module), name, record)
    with pytest.raises(_Stop):
        main(argv)
    return seen["config"]


def test_train_ppo_without_flags_trains_the_api_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = _config_the_cli_trains(monkeypatch, tmp_path, ["train", "ppo", "--quiet"],
                                    "tradezoo.agents.ppo", "train_ppo")
    # What train_ppo(data, arch) trains (config=None -> PPOConfig()), progress bars aside.
    assert config == PPOConfig()


def test_train_supervised_without_flags_trains_the_api_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = _config_the_cli_trains(monkeypatch, tmp_path, ["train", "supervised"],
                                    "tradezoo.agents.supervised", "train_supervised")
    assert config == SupervisedConfig()


def test_the_typed_options_are_the_dataclass_defaults() -> None:
    for command in ("train-supervised", "train-ppo"):
        options = training_options(command, resolve_options(command))
        assert isinstance(options, TrainingOptions) and options.budget == "default"
        if command == "train-supervised":
            assert options.supervised == SupervisedConfig() and options.ppo is None
        else:
            assert options.ppo == PPOConfig() and options.supervised is None
        # The top level too: one set of defaults, the TrainingOptions fields.
        top = {k: v for k, v in options.to_dict().items() if k not in ("supervised", "ppo")}
        expected = TrainingOptions(command=command).to_dict()
        assert top == {k: v for k, v in expected.items() if k not in ("supervised", "ppo")}


def _overlaid(config: Any, *layers: dict[str, Any]) -> Any:
    values: dict[str, Any] = {}
    for layer in layers:
        values.update(copy.deepcopy(layer))
    return replace(config, **values)


@pytest.mark.parametrize("budget", list(BUDGETS))
@pytest.mark.parametrize("command", ["train-supervised", "train-ppo", "run", "compare"])
def test_budgets_are_overlays_on_the_dataclass_defaults(command: str, budget: str) -> None:
    options = training_options(command, resolve_options(command, flags={"budget": budget}))
    assert options.budget == budget
    preset = COMMAND_PRESETS.get(command, {})
    overlay = BUDGETS[budget]
    if options.supervised is not None:
        assert options.supervised == _overlaid(SupervisedConfig(), preset.get("supervised", {}),
                                               overlay.get("supervised", {}))
    if options.ppo is not None:
        assert options.ppo == _overlaid(PPOConfig(), preset.get("ppo", {}),
                                        overlay.get("ppo", {}))
    # Flags and --set still win over the budget.
    flagged = training_options(command, resolve_options(
        command, flags={"budget": budget}, assignments=(
            ["supervised.epochs=2"] if options.supervised is not None else
            ["ppo.timesteps=512"])))
    if options.supervised is not None:
        assert flagged.supervised is not None and flagged.supervised.epochs == 2
    else:
        assert flagged.ppo is not None and flagged.ppo.timesteps == 512


def test_the_main_job_budget_is_the_default_and_named_in_help(
    capsys: pytest.CaptureFixture[str]
) -> None:
    assert BUDGETS["default"] == {}  # the main job trains the dataclass defaults
    run = training_options("run", resolve_options("run"))
    assert run.budget == "default"
    assert run.supervised == SupervisedConfig()
    assert run.ppo == _overlaid(PPOConfig(), COMMAND_PRESETS["run"]["ppo"])
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--budget" in text and "budget 'default'" in text
    # The help's figures are the dataclasses' own.
    assert f"{SupervisedConfig().epochs} epochs" in text
    assert f"{PPOConfig().timesteps:,} PPO timesteps" in text


def test_unknown_budget_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"option 'budget' must be one of \['smoke'"):
        resolve_options("run", flags={"budget": "huge"})


# -------------------------------------------------------------------- one check mechanism


def _architecture_cases() -> list[tuple[str, Any, str, str]]:
    return [(f"{name}:d_model", lambda cls=entry.config_cls: cls(d_model=-3), "d_model", "-3")
            for name, entry in ARCHITECTURES.items()]


BAD_FIELDS: list[tuple[str, Any, str, str]] = [
    ("SupervisedConfig.epochs", lambda: SupervisedConfig(epochs=0), "epochs", "0"),
    ("SupervisedConfig.loss", lambda: SupervisedConfig(loss="hinge"), "loss", "'hinge'"),
    ("PPOConfig.gamma", lambda: PPOConfig(gamma=2.5), "gamma", "2.5"),
    ("PPOConfig.batch_size", lambda: PPOConfig(batch_size=4096), "batch_size", "4096"),
    ("CostModel.max_participation", lambda: CostModel(max_participation=-0.5),
     "max_participation", "-0.5"),
    ("CostModel.maintenance_margin", lambda: CostModel(maintenance_margin=1.5),
     "maintenance_margin", "1.5"),
    ("FullyConnected.units", lambda: FullyConnected(0), "units", "0"),
    ("NCP.motor_fanin", lambda: NCP(3, 4, 2, 1, 1, 1, 5), "motor_fanin", "5"),
    ("AutoNCP.sparsity_level", lambda: AutoNCP(10, 2, sparsity_level=1.5), "sparsity_level",
     "1.5"),
    *_architecture_cases(),
]


@pytest.mark.parametrize(("label", "make", "field", "value"), BAD_FIELDS,
                         ids=[case[0] for case in BAD_FIELDS])
def test_every_config_rejects_a_bad_field_with_a_config_error_naming_it(
    label: str, make: Any, field: str, value: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        make()
    message = str(caught.value)
    assert field in message and "must be" in message, message  # the field and its rule
    assert value in message, message  # and the value


def test_env_arguments_use_the_same_checks() -> None:
    from tradezoo.envs import TradingEnv

    with pytest.raises(ConfigError, match="max_leverage must be a finite number > 0, got 0"):
        TradingEnv("bybit-btcusdt-1h", max_leverage=0)
    with pytest.raises(ConfigTypeError, match="allow_short must be true or false, got 1"):
        TradingEnv("bybit-btcusdt-1h", allow_short=1)


@pytest.mark.parametrize("make", [
    lambda: PPOConfig(allow_short="yes"),
    lambda: SupervisedConfig(epochs=2.5),
    lambda: FullyConnected(True),
    lambda: ARCHITECTURES["mamba"].config_cls(chunk_size=1.5),
])
def test_a_wrong_type_is_a_config_error_and_a_type_error(make: Any) -> None:
    with pytest.raises(ConfigTypeError) as caught:
        make()
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, ConfigError)
