"""Options of the ``tradezoo`` training commands: defaults < budget < YAML file < flags.

Every training command (``train supervised``, ``train ppo``, ``run``, ``compare``) resolves
one nested dict of options, in layers, each overriding the one before key by key (sections
such as ``supervised:`` are merged field by field)::

    the dataclass defaults            TrainingOptions (top level), SupervisedConfig and
                                      PPOConfig (sections): the only defaults
    checkpoint-derived options        ``train ppo --init-from``: the checkpoint's window,
                                      features, labels, splits, costs, architecture
    COMMAND_PRESETS[command]          the command's recipe (``run`` and ``compare``: PPO
                                      lr 1e-4 for fine-tuning; ``run``: frozen backbone for
                                      the first 2 PPO updates; ``compare``: no periodic
                                      checkpoints)
    BUDGETS[budget]                   ``--budget`` overlays (epochs, timesteps); ``default``
                                      is none: the dataclass defaults are the main job's
    the YAML file of --config         (JSON is YAML too: a saved ``config.json`` works)
    the flags, then --set KEY=VALUE   ``--epochs 3`` = ``--set supervised.epochs=3``

:func:`resolve_options` returns that nested dict; :func:`training_options` turns it into a
typed :class:`TrainingOptions` (the sections become ``SupervisedConfig`` and ``PPOConfig``),
which the CLI builds once and hands to the jobs. So ``tradezoo train ppo`` and ``tradezoo train
supervised`` with no flags train ``PPOConfig()`` and ``SupervisedConfig()``, as
``train_ppo(data, arch)`` and ``train_supervised(data, arch, ...)`` do.

A config file looks like::

    data: bybit-btcusdt-1h         # a bundled dataset name or a CSV/Parquet bars file, or a
                                   # list of them: [bybit-btcusdt-1h, yahoo-spy-1d]
    arch: gru
    seed: 0
    device: auto                   # auto | cpu | cuda
    window: 64                     # bars per observation
    costs: auto                    # auto | bybit-linear | equities | zero | {CostModel fields}
    arch_config: {d_model: 64}     # the architecture's config fields
    features: {}                   # FeatureSpec fields
    labels: {horizon: 4}           # LabelSpec fields
    split_fractions: [0.7, 0.15, 0.15]
    threads: auto                  # torch CPU threads: auto (1 on <= 4 cores) or a number
    supervised: {epochs: 8, batch_size: 256}     # SupervisedConfig fields
    ppo: {timesteps: 100000, n_envs: 8}          # PPOConfig fields (not arch_config, window)

Unknown keys, at the top or inside a section, are a :class:`ConfigError` that names the
file (or flag), the key and lists the valid keys. Values are checked by the dataclasses they
end up in (:class:`~tradezoo.agents.supervised.SupervisedConfig`,
:class:`~tradezoo.agents.ppo.PPOConfig`, :class:`~tradezoo.data.features.FeatureSpec`,
:class:`~tradezoo.agents.data.LabelSpec`, the architecture's config): their errors name the
field and the rule.

YAML needs ``pyyaml``; without it only JSON-syntax files are read (JSON is a subset of YAML)
and a YAML-only file is an error saying to install it.

Nothing here imports torch.
"""

from __future__ import annotations

import copy
import json
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tradezoo.errors import ConfigError

if TYPE_CHECKING:
    from tradezoo.agents.ppo import PPOConfig
    from tradezoo.agents.supervised import SupervisedConfig

__all__ = [
    "BUDGETS",
    "COMMANDS",
    "COMMAND_PRESETS",
    "ConfigError",
    "TrainingOptions",
    "command_defaults",
    "cost_model",
    "parse_archs",
    "parse_assignment",
    "parse_ppo_archs",
    "read_config_file",
    "resolve_options",
    "torch_threads",
    "training_options",
    "valid_keys",
]

Command = Literal["train-supervised", "train-ppo", "run", "compare"]
COMMANDS: tuple[str, ...] = ("train-supervised", "train-ppo", "run", "compare")


# ------------------------------------------------------------------------------ defaults


@dataclass(frozen=True)
class TrainingOptions:
    """The resolved options of a training command, typed: what the CLI builds once (from the
    layers of :func:`resolve_options`, with :func:`training_options`) and hands to the jobs
    (:func:`~tradezoo.agents.run.run_main_job`, :func:`~tradezoo.agents.compare.run_compare`,
    the ``train`` commands).

    The field defaults here are the top-level defaults of every command; the trainers'
    defaults are those of :class:`~tradezoo.agents.supervised.SupervisedConfig` and
    :class:`~tradezoo.agents.ppo.PPOConfig`, with a :data:`BUDGETS` overlay on top.

    Attributes:
        command: one of :data:`COMMANDS`.
        data: a bundled dataset name or a CSV/Parquet bars file, or several as a
            comma-separated list (a YAML list is joined into one): one model trained across
            them (:mod:`tradezoo.agents.multi`).
        arch: the architecture (registry name); ``compare`` trains :attr:`archs` instead.
        seed: the seed (``compare``: the first of :attr:`seeds` seeds).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
        out: the run directory; ``None``: the command's own under ``runs/``.
        window: bars per observation (both trainers).
        costs: ``auto`` (the data source's), ``bybit-linear``, ``equities``, ``zero`` or a
            mapping of CostModel fields.
        arch_config: the architecture's config fields (both trainers).
        features: FeatureSpec fields; labels: LabelSpec fields.
        split_fractions: train, validation and test fractions.
        progress: progress bars.
        threads: torch CPU threads, ``auto`` (:func:`torch_threads`) or a number.
        budget: the name of the :data:`BUDGETS` overlay applied.
        supervised: the :class:`~tradezoo.agents.supervised.SupervisedConfig` (commands that
            train a classifier; else ``None``).
        ppo: the :class:`~tradezoo.agents.ppo.PPOConfig` (commands that train PPO; its
            ``arch_config`` is the top-level one and its ``window`` is left to the data).
        init_from, resume_from: ``train ppo --init-from``, ``train * --resume-from``.
        name: ``run --name``.
        archs, mode, seeds: ``compare``'s architectures (``"all"`` or names; a tuple of
            names once resolved), mode and number of seeds.
        ppo_archs: ``compare``'s architectures that get PPO cells under ``mode`` ``ppo`` or
            ``both`` (``"all"``: every one of :attr:`archs`; else a subset of them), so one
            grid can grade every architecture supervised and a few with PPO too.
    """

    command: str = "run"
    data: str = "bybit-btcusdt-1h"
    arch: str = "gru"
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    window: int = 64
    costs: str | Mapping[str, Any] = "auto"
    arch_config: Mapping[str, Any] = field(default_factory=dict)
    features: Mapping[str, Any] = field(default_factory=dict)
    labels: Mapping[str, Any] = field(default_factory=dict)
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    progress: bool = True
    threads: str | int = "auto"
    budget: str = "default"
    supervised: SupervisedConfig | None = None
    ppo: PPOConfig | None = None
    init_from: str | None = None
    resume_from: str | None = None
    name: str | None = None
    archs: str | tuple[str, ...] = "all"
    mode: str = "both"
    seeds: int = 1
    ppo_archs: str | tuple[str, ...] = "all"

    def to_dict(self) -> dict[str, Any]:
        """The options as a valid config file of :attr:`command` (what ``config.json``
        holds; sections as their dataclasses' dicts)."""
        out: dict[str, Any] = {}
        for key in _COMMAND_KEYS[self.command]:
            value = getattr(self, key)
            if key in ("supervised", "ppo") and value is None:  # not built: nothing to save
                continue
            if key == "supervised":
                value = value.to_dict()
            elif key == "ppo":
                value = {k: v for k, v in value.to_dict().items() if k not in _PPO_TOP_LEVEL}
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = copy.deepcopy(dict(value))
            out[key] = value
        return out


_TOP_LEVEL = ("data", "arch", "seed", "device", "out", "window", "costs", "arch_config",
              "features", "labels", "split_fractions", "progress", "threads", "budget")
_COMMAND_KEYS: dict[str, tuple[str, ...]] = {
    "train-supervised": (*_TOP_LEVEL, "supervised", "resume_from"),
    "train-ppo": (*_TOP_LEVEL, "ppo", "init_from", "resume_from"),
    "run": (*_TOP_LEVEL, "name", "supervised", "ppo"),
    "compare": (*(k for k in _TOP_LEVEL if k != "arch"), "archs", "mode", "seeds",
                "ppo_archs", "supervised", "ppo"),
}
"""Each command's valid top-level keys."""

_WARM_START_LR = 1e-4  # below SB3's 3e-4 (PPOConfig.lr): a warm start is fine-tuned, not
# overwritten; compare uses it for every PPO row so its rows differ only by the start
COMMAND_PRESETS: dict[str, dict[str, Any]] = {
    # the fresh value head of a warm start must not push large gradients through the
    # pretrained backbone at first: the backbone stays frozen for 2 updates
    "run": {"ppo": {"lr": _WARM_START_LR, "freeze_backbone_updates": 2}},
    # dozens of runs: only the best and final models are kept
    "compare": {"ppo": {"lr": _WARM_START_LR, "checkpoint_freq": 0}},
}
"""What a command sets over the dataclass defaults, under the budget (its recipe)."""

BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {  # seconds per architecture: checks the pipeline, measures nothing
        "supervised": {"epochs": 1, "max_train_batches": 4, "max_eval_batches": 1},
        "ppo": {"timesteps": 1024, "n_envs": 2, "n_steps": 256, "batch_size": 128,
                "n_epochs": 2, "eval_freq": 0, "checkpoint_freq": 0},
    },
    "tiny": {  # the budget of docs/results.md: 366 cells (10 architectures x 2 seeds x 3
        # folds on 5 datasets, PPO for 4) in about an hour on a 2-core CPU (PPO: 4 updates)
        "supervised": {"epochs": 1},
        "ppo": {"timesteps": 8_192, "eval_freq": 4_096},
    },
    "small": {  # 1-5 min per architecture and seed on a 2-core CPU; ltc ~35, mambats ~25
        "supervised": {"epochs": 4},
        "ppo": {"timesteps": 40_960, "eval_freq": 20_480},
    },
    # The main job's budget (every command's default): the SupervisedConfig and PPOConfig
    # defaults themselves. With the default gru (d_model 64) `tradezoo run` took 188-231 s of
    # wall time on a shared 2-core CPU (load average 1.4-2.5), inside the 10-minute bound
    # with room for a busier machine. gru because it is the fastest zoo backbone per step on
    # a CPU (fused GRU kernel): cfc measured ~1.6x slower in PPO and ~1.7x slower in
    # supervised epochs at the same width.
    "default": {},
    "large": {  # meant for a GPU
        "supervised": {"epochs": 30, "patience": 5},
        "ppo": {"timesteps": 1_003_520, "n_envs": 16, "eval_freq": 102_400},
    },
}
"""Named overlays on the trainers' dataclass defaults (``--budget``; ``default``: none),
applied over the command's preset and under the config file and the flags."""

_SECTIONS = ("supervised", "ppo", "features", "labels")
# PPOConfig fields the top level owns (one window and one arch_config for both trainers).
_PPO_TOP_LEVEL = ("arch_config", "window")
_COST_PRESETS = ("auto", "bybit-linear", "equities", "zero")


def _section_keys(section: str) -> list[str]:
    """Valid keys inside a section (dataclass fields; imported lazily: torch for two)."""
    if section == "supervised":
        from tradezoo.agents.supervised import SupervisedConfig

        return [f.name for f in fields(SupervisedConfig)]
    if section == "ppo":
        from tradezoo.agents.ppo import PPOConfig

        return [f.name for f in fields(PPOConfig) if f.name not in _PPO_TOP_LEVEL]
    if section == "features":
        from tradezoo.data.features import FeatureSpec

        return [f.name for f in fields(FeatureSpec)]
    if section == "labels":
        from tradezoo.agents.data import LabelSpec

        return [f.name for f in fields(LabelSpec)]
    raise KeyError(section)


def valid_keys(command: str) -> list[str]:
    """The valid top-level keys of ``command`` (a name of :data:`COMMANDS`)."""
    if command not in _COMMAND_KEYS:
        raise ConfigError(f"command must be one of {list(COMMANDS)}, got {command!r}")
    return list(_COMMAND_KEYS[command])


def command_defaults(command: str) -> dict[str, Any]:
    """The bottom layer of ``command``'s options: the :class:`TrainingOptions` field defaults
    and, for its ``supervised`` and ``ppo`` sections, the fields of ``SupervisedConfig()`` and
    ``PPOConfig()`` (all but ``arch_config`` and ``window``, which the top level owns)."""
    keys = valid_keys(command)
    defaults: dict[str, Any] = {}
    for item in fields(TrainingOptions):
        if item.name in keys and item.name not in ("supervised", "ppo"):
            value = (item.default_factory() if item.default_factory is not MISSING
                     else item.default)
            defaults[item.name] = list(value) if isinstance(value, tuple) else value
    if "supervised" in keys:
        from tradezoo.agents.supervised import SupervisedConfig

        defaults["supervised"] = SupervisedConfig().to_dict()
    if "ppo" in keys:
        from tradezoo.agents.ppo import PPOConfig

        defaults["ppo"] = {k: v for k, v in PPOConfig().to_dict().items()
                           if k not in _PPO_TOP_LEVEL}
    return defaults


# ------------------------------------------------------------------------------- reading


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or JSON) config file into a dict.

    Raises:
        ConfigError: no such file, unreadable, not valid YAML/JSON, not a mapping at the top,
            or YAML syntax without pyyaml installed.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path}: cannot be read: {exc}") from None
    try:
        import yaml
    except ImportError:
        yaml = None
    if yaml is not None:
        try:
            loaded = _yaml_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path}: not valid YAML: {exc}") from None
    else:
        try:
            loaded = json.loads(text) if text.strip() else None
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"config file {path}: reading YAML needs the pyyaml package (pip install "
                f"pyyaml); without it only JSON-syntax files are read, and this is not JSON "
                f"({exc})"
            ) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        raise ConfigError(
            f"config file {path}: the top level must be a mapping of keys to values, got "
            f"{type(loaded).__name__}"
        )
    return dict(loaded)


def _yaml_load(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats: pyyaml follows YAML 1.1, where ``3e-4`` (no
    dot) is the *string* "3e-4", a classic trap for learning rates in config files."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
        list("-+0123456789."),
    )
    return yaml.load(text, Loader=Loader)  # a SafeLoader subclass: no arbitrary objects


def _parse_scalar(text: str) -> Any:
    """A ``--set`` value: YAML when pyyaml is there, else JSON, else the string itself."""
    try:
        import yaml

        try:
            return _yaml_load(text)
        except yaml.YAMLError:
            return text
    except ImportError:
        pass
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if lowered in ("null", "none", "~"):
            return None
        return text


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"supervised.lr=3e-4"`` -> ``("supervised.lr", 0.0003)`` (``--set`` options).

    Raises:
        ConfigError: no ``=`` or an empty key.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. supervised.lr=3e-4")
    return key.strip(), _parse_scalar(value.strip())


def _nest(dotted: Mapping[str, Any]) -> dict[str, Any]:
    """``{"supervised.lr": 1}`` -> ``{"supervised": {"lr": 1}}``."""
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"option {key!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return out


# ------------------------------------------------------------------------------ checking


def _check_keys(command: str, options: Mapping[str, Any], source: str) -> None:
    """Reject unknown top-level and section keys of one layer (``source`` names it)."""
    valid = valid_keys(command)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {unknown} for `tradezoo {command.replace('-', ' ')}`; "
            f"valid keys: {valid}"
        )
    for section in _SECTIONS:
        if section not in options or section not in valid:
            continue
        value = options[section]
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: {section!r} must be a mapping of keys to values, got "
                              f"{value!r}")
        keys = _section_keys(section)
        unknown = sorted(set(value) - set(keys))
        if unknown:
            hint = ""
            if section == "ppo" and set(unknown) & set(_PPO_TOP_LEVEL):
                hint = " (arch_config and window are top-level keys, shared by both trainers)"
            raise ConfigError(
                f"{source}: unknown key(s) {[f'{section}.{k}' for k in unknown]}{hint}; valid "
                f"keys in {section!r}: {keys}"
            )
    if "arch_config" in options and options["arch_config"] is not None and not isinstance(
        options["arch_config"], Mapping
    ):
        raise ConfigError(f"{source}: 'arch_config' must be a mapping of the architecture's "
                          f"config fields, got {options['arch_config']!r}")


def _merge(base: dict[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    """``layer`` over ``base``; mappings (sections, arch_config) merge key by key."""
    out = copy.deepcopy(base)
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check_values(command: str, options: dict[str, Any]) -> None:
    """Types of the top-level values the commands use directly (sections are checked by
    their dataclasses when built)."""
    seed = options.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"option 'seed' must be an integer >= 0, got {seed!r}")
    window = options.get("window")
    if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 1:
        raise ConfigError(f"option 'window' must be an integer >= 1, got {window!r}")
    if options.get("device") not in ("auto", "cpu", "cuda") and not str(
        options.get("device")
    ).startswith("cuda:"):
        raise ConfigError(f"option 'device' must be auto, cpu, cuda or cuda:N, got "
                          f"{options.get('device')!r}")
    fractions = options.get("split_fractions")
    if not (isinstance(fractions, Sequence) and not isinstance(fractions, str)
            and len(fractions) == 3):
        raise ConfigError(f"option 'split_fractions' must be [train, val, test], got "
                          f"{fractions!r}")
    threads = options.get("threads", "auto")
    if threads != "auto" and (isinstance(threads, bool) or not isinstance(threads, numbers.Integral)
                              or threads < 1):
        raise ConfigError(f"option 'threads' must be 'auto' or an integer >= 1, got {threads!r}")
    costs = options.get("costs")
    if not (costs in _COST_PRESETS or isinstance(costs, Mapping)):
        raise ConfigError(f"option 'costs' must be one of {list(_COST_PRESETS)} or a mapping of "
                          f"CostModel fields, got {costs!r}")
    data = options.get("data")
    if isinstance(data, list | tuple) and data and all(
            isinstance(d, str | Path) and str(d) and "," not in str(d) for d in data):
        options["data"] = data = ",".join(str(d) for d in data)  # one form: "a,b"
    if not isinstance(data, str | Path) or not str(data):
        raise ConfigError(f"option 'data' must be a bundled dataset name or a bars file path, "
                          f"a comma-separated list of them or a list (several datasets, "
                          f"docs/multi-asset.md), got {options.get('data')!r}")
    if command == "compare":
        if options["mode"] not in ("supervised", "ppo", "both"):
            raise ConfigError(f"option 'mode' must be supervised, ppo or both, got "
                              f"{options['mode']!r}")
        seeds = options["seeds"]
        if isinstance(seeds, bool) or not isinstance(seeds, numbers.Integral) or seeds < 1:
            raise ConfigError(f"option 'seeds' must be an integer >= 1 (seeds seed .. seed + "
                              f"N - 1), got {seeds!r}")
        options["archs"] = parse_archs(options["archs"])
        options["ppo_archs"] = parse_ppo_archs(options.get("ppo_archs", "all"),
                                               options["archs"])


def parse_ppo_archs(value: str | Sequence[str], archs: Sequence[str]) -> list[str]:
    """``compare``'s ``ppo_archs`` -> registry names, a subset of ``archs`` (``"all"``:
    ``archs`` itself)."""
    if isinstance(value, str) and value.strip() == "all":
        return list(archs)
    names = parse_archs(value)
    outside = [n for n in names if n not in archs]
    if outside:
        raise ConfigError(f"option 'ppo_archs': {outside} not in option 'archs' {list(archs)}; "
                          f"PPO cells are a subset of the grid's architectures")
    return names


def parse_archs(value: str | Sequence[str]) -> list[str]:
    """``"all"``, ``"gru,lstm"`` or a list -> registry names (unknown names rejected)."""
    from tradezoo.policies.registry import ARCHITECTURES

    if isinstance(value, str):
        names = list(ARCHITECTURES) if value.strip() == "all" else [
            v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, Sequence):
        names = [str(v) for v in value]
    else:
        raise ConfigError(f"option 'archs' must be 'all', a comma-separated list or a list, got "
                          f"{value!r}")
    unknown = [n for n in names if n not in ARCHITECTURES]
    if unknown or not names:
        raise ConfigError(f"option 'archs': unknown architecture(s) {unknown or names}; valid "
                          f"names: {list(ARCHITECTURES)} or 'all'")
    return list(dict.fromkeys(names))


def resolve_options(
    command: str,
    *,
    config_path: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    assignments: Sequence[str] = (),
    base: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The options of ``command``: defaults < ``base`` < preset < budget < file < flags <
    ``--set``.

    The defaults are the dataclasses' (:func:`command_defaults`), the preset the command's
    own (:data:`COMMAND_PRESETS`), the budget the overlay of :data:`BUDGETS` that the layers
    above name (``"default"``: none). :func:`training_options` types the result.

    Args:
        command: one of :data:`COMMANDS`.
        config_path: a YAML/JSON config file (``--config``).
        flags: dotted keys of the flags the user gave (``None`` values are skipped), e.g.
            ``{"supervised.epochs": 3, "arch": "lstm"}``.
        assignments: ``--set KEY=VALUE`` texts.
        base: options derived from elsewhere (a warm-start checkpoint), under the file.

    Returns:
        The nested options dict (``compare``'s ``archs`` resolved to a list of names).

    Raises:
        ConfigError: unknown keys (listing the valid ones) or bad top-level values.
    """
    defaults = command_defaults(command)
    layers: list[tuple[str, dict[str, Any]]] = []
    if base:
        layers.append(("checkpoint", dict(base)))
    file_layer: dict[str, Any] = {}
    if config_path is not None:
        file_layer = read_config_file(config_path)
        _check_keys(command, file_layer, f"config file {config_path}")
    flag_layer = _nest({k: v for k, v in (flags or {}).items() if v is not None})
    _check_keys(command, flag_layer, "command-line flags")
    set_layer = _nest(dict(parse_assignment(text) for text in assignments))
    _check_keys(command, set_layer, "--set")

    layers.append((f"{command} preset", copy.deepcopy(COMMAND_PRESETS.get(command, {}))))
    budget = set_layer.get("budget", flag_layer.get("budget", file_layer.get("budget",
                                                                            "default")))
    if budget not in BUDGETS:
        raise ConfigError(f"option 'budget' must be one of {list(BUDGETS)}, got {budget!r}")
    layers.append((f"budget {budget}", {k: copy.deepcopy(v) for k, v in BUDGETS[budget].items()
                                        if k in defaults}))
    layers += [("file", file_layer), ("flags", flag_layer), ("--set", set_layer)]
    options = defaults
    for _, layer in layers:
        options = _merge(options, layer)
    for section in ("arch_config", *_SECTIONS):
        if section in options and options[section] is None:
            options[section] = {}
    _check_values(command, options)
    return options


# ----------------------------------------------------------------------------- building


def torch_threads(value: str | int = "auto") -> int | None:
    """The torch intra-op thread count for ``threads`` (``None``: leave torch's default).

    ``"auto"`` is 1 on machines with at most 4 cores: the zoo's models are small, and on a
    small machine shared with other work torch's OpenMP workers wait on each other, which
    was measured at 100-500x slower per GRU call with 2 threads than with 1 on 2 busy cores
    (and no faster with 2 threads on the same cores idle).
    """
    import os

    if value == "auto":
        return 1 if (os.cpu_count() or 1) <= 4 else None
    return int(value)


def cost_model(value: str | Mapping[str, Any]) -> Any:
    """``costs`` option -> a :class:`~tradezoo.backtest.costs.CostModel` or ``None``
    (``"auto"``: the dataset's default for its source)."""
    from tradezoo.backtest.costs import CostModel

    if isinstance(value, Mapping):
        names = [f.name for f in fields(CostModel)]
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ConfigError(f"option 'costs': unknown CostModel field(s) {unknown}; valid "
                              f"fields: {names}")
        return CostModel(**dict(value))
    presets = {"bybit-linear": CostModel.bybit_linear, "equities": CostModel.equities,
               "zero": CostModel.zero}
    if value == "auto":
        return None
    if value not in presets:
        raise ConfigError(f"option 'costs' must be one of {list(_COST_PRESETS)} or a mapping of "
                          f"CostModel fields, got {value!r}")
    return presets[value]()


def training_options(command: str, options: Mapping[str, Any]) -> TrainingOptions:
    """The typed :class:`TrainingOptions` of ``command``'s resolved ``options``
    (:func:`resolve_options`): the ``supervised`` section becomes a ``SupervisedConfig`` (no
    progress bar when ``progress`` is off), the ``ppo`` section a ``PPOConfig`` with the
    top-level ``arch_config``.

    Raises:
        ConfigError: a key the command does not take, or a field its dataclass rejects.
    """
    keys = valid_keys(command)
    unknown = sorted(set(options) - set(keys))
    if unknown:
        raise ConfigError(f"options of `tradezoo {command.replace('-', ' ')}`: unknown key(s) "
                          f"{unknown}; valid keys: {keys}")
    values: dict[str, Any] = {k: v for k, v in options.items()
                              if k not in ("supervised", "ppo")}
    values["split_fractions"] = tuple(float(v) for v in options["split_fractions"])
    if "archs" in options:
        values["archs"] = tuple(parse_archs(options["archs"]))
        values["ppo_archs"] = tuple(parse_ppo_archs(options.get("ppo_archs", "all"),
                                                    values["archs"]))
    if "supervised" in keys:
        from tradezoo.agents.supervised import SupervisedConfig

        section = dict(options.get("supervised") or {})
        if not options.get("progress", True):
            section["progress"] = False
        values["supervised"] = SupervisedConfig.from_dict(section)
    if "ppo" in keys:
        from tradezoo.agents.ppo import PPOConfig

        section = dict(options.get("ppo") or {})
        section["arch_config"] = dict(options.get("arch_config") or {})
        values["ppo"] = PPOConfig.from_dict(section)
    return TrainingOptions(command=command, **values)
