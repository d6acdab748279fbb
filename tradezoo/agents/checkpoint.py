"""One-file checkpoints readable with ``torch.load(path, weights_only=True)``.

A checkpoint is a dict of plain values (dicts, lists, str, int, float, bool, None, tensors),
so loading it never runs pickled code::

    format          "tradezoo.checkpoint"
    format_version  1
    kind            "supervised" or "ppo" (:data:`KIND_KEYS`: the keys each kind adds)
    arch            registry name, e.g. "mamba"
    arch_config     the backbone's full config (``BackboneConfig.to_dict()``); a field
                    added after a checkpoint was written is absent from it, and reads as
                    the form the model had before the field existed
                    (:func:`saved_arch_config`), not as today's
                    default: :func:`load_checkpoint` returns the completed config
    features_dim    width of the extractor output the head reads
    state_dict      the model's tensors
    feature_spec    ``FeatureSpec.to_dict()``
    feature_names   the feature columns, in order
    n_features      F (the observation has F + 2 columns: + position, equity log-return)
    window          bars per observation
    scaler          ``FeatureScaler.to_dict()`` (mean and std as lists of floats)
    timeframes      {timeframe: bars per window} of a multi-timeframe model (``msa`` on
                    intraday bars: the env's dict observation), ``{}`` for Box windows; a
                    checkpoint without the key was trained on Box windows
    timeframe_scalers  {timeframe: ``FeatureScaler.to_dict()``} of those timeframes' features
    label_spec      ``LabelSpec.to_dict()``
    splits          {"fractions": [..], "embargo": int, part: [first ISO, last ISO], ...}
    dataset         {"name", "symbol", "interval", "source"}
    costs           ``CostModel.to_dict()``
    datasets        one record per dataset trained on, in order: {"name", "symbol",
                    "interval", "source", "scaler", "costs", "label_spec", "splits"}
                    (several for a multi-dataset model, whose top-level
                    ``dataset``, ``scaler``, ``costs`` and ``splits`` are its first
                    dataset's; :mod:`tradezoo.agents.multi`)
    asset_embedding whether the model learned a vector per dataset (supervised)
    training        the trainer's config dict
    epoch, step     progress when written
    best            {"metric", "mode" ("min"/"max"), "score", "step", "epoch"}: the best
                    evaluation so far and the step it was reached at (``score`` None before
                    the first); a resumed run starts from it, so it never forgets its best
    resume          None, or {"optimizer", "scheduler", "best_val_loss", ...} to continue
    metrics         the latest validation metrics (dict of floats)
    versions        {"tradezoo", "torch", "python"}

PPO pairs. A ``kind="ppo"`` checkpoint is the sidecar ``X.pt`` of SB3's ``X.zip``; it records
the zip's step (``num_timesteps``) and ``sb3_zip_sha256``, the SHA-256 of the zip's bytes.
Every load of a sidecar whose zip is next to it, and every load through the zip's path,
verifies the pair (:func:`verify_sb3_pair`): the zip is a readable archive with SB3's
entries, its ``data`` record (read as JSON, never unpickled) is at the sidecar's step, and
its hash is the recorded one. A mismatch is a :class:`CheckpointError` naming both files and
the reason. Tensors are read from the zip's ``.pth`` entries with ``weights_only=True``
(:func:`sb3_zip_tensors`); nothing in a zip is ever unpickled.

Writes. :func:`save_checkpoint` and :func:`write_files_atomically` write every file to a
temporary name in its folder, flush and fsync it, then rename it over the final name and
fsync the folder: an interrupted write never leaves a half file under the final name, and a
pair's files are renamed only once both are complete.

Reads. :func:`load_checkpoint` refuses, with a :class:`CheckpointError` naming the file and
the rule: anything ``torch.load(weights_only=True)`` cannot read (a text file, a truncated
file, pickled objects), another format, an unknown kind, a kind's missing keys, fields of the
wrong type, a newer format version, and a model whose estimated size exceeds
:data:`tradezoo.policies.size.MAX_PARAMETERS` (checked from the config before anything is
built). On request it checks the architecture, the kind and the feature spec.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tradezoo._fs import TEMP_SUFFIX, temp_name_prefix
from tradezoo.data.features import FeatureScaler, FeatureSpec
from tradezoo.envs.layout import N_ACCOUNT_COLUMNS
from tradezoo.errors import TradezooError

if TYPE_CHECKING:
    from tradezoo.agents.data import LabelSpec, PreparedData

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "KIND_KEYS",
    "SB3_ZIP_ENTRIES",
    "CheckpointError",
    "check_feature_spec",
    "check_model_fits_limit",
    "checkpoint_dataset_names",
    "checkpoint_datasets",
    "data_payload",
    "feature_spec_from_checkpoint",
    "input_timeframes",
    "label_spec_from_checkpoint",
    "load_checkpoint",
    "load_weights",
    "save_checkpoint",
    "saved_arch_config",
    "sb3_zip_tensors",
    "scaler_from_checkpoint",
    "serialize_checkpoint",
    "timeframe_scalers_from_checkpoint",
    "verify_sb3_pair",
    "versions",
    "write_files_atomically",
]

CHECKPOINT_FORMAT = "tradezoo.checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS: tuple[str, ...] = (
    "format", "format_version", "kind", "arch", "arch_config", "state_dict", "feature_spec",
    "n_features", "window", "scaler",
)
"""Keys every checkpoint has (the supervised trainer writes all the keys listed above)."""

KIND_KEYS: dict[str, tuple[str, ...]] = {
    "supervised": ("label_spec",),
    "ppo": ("env", "net_arch", "features_dim", "training", "num_timesteps", "sb3_zip"),
}
"""The kinds tradezoo reads, and the keys each adds to :data:`REQUIRED_KEYS`."""

SB3_ZIP_ENTRIES: tuple[str, ...] = ("data", "policy.pth", "policy.optimizer.pth")
"""Entries an SB3 PPO zip must hold."""

MAX_SB3_DATA_BYTES = 64 * 1024 * 1024
"""Largest ``data`` entry of an SB3 zip that is read (a JSON record of a few kB)."""


class CheckpointError(TradezooError, ValueError):
    """A checkpoint that cannot be read or does not fit what the caller needs."""


def versions() -> dict[str, str]:
    """Versions recorded in a checkpoint."""
    import tradezoo

    return {
        "tradezoo": str(tradezoo.__version__),
        "torch": str(torch.__version__),
        "python": sys.version.split()[0],
    }


def _dataset_record(data: PreparedData) -> dict[str, Any]:
    """One entry of a checkpoint's ``datasets``: the dataset and how it was prepared."""
    attrs = data.bars.attrs
    return {
        "name": data.name,
        "symbol": str(attrs.get("symbol") or ""),
        "interval": str(attrs.get("interval") or ""),
        "source": str(attrs.get("source") or ""),
        "scaler": data.scaler.to_dict(),
        "costs": dict(data.costs.to_dict()),
        "label_spec": data.label_spec.to_dict(),
        "splits": {part: [first.isoformat(), last.isoformat()]
                   for part, (first, last) in data.boundaries.items()},
    }


def data_payload(data: PreparedData | Sequence[PreparedData]) -> dict[str, Any]:
    """The checkpoint fields that describe the data a model was trained on, the same for both
    trainers: ``feature_spec, feature_names, n_features, n_account_columns, window, scaler,
    timeframes, timeframe_scalers, splits, dataset, costs, datasets`` (module docstring); of
    several datasets, the top-level fields are the first's and ``datasets`` lists them all."""
    parts = (data,) if not isinstance(data, Sequence) else tuple(data)
    return {**_first_payload(parts[0]), "datasets": [_dataset_record(p) for p in parts]}


def _first_payload(data: PreparedData) -> dict[str, Any]:
    splits: dict[str, Any] = {
        "fractions": list(data.split_fractions),
        "embargo": int(data.splits.embargo),
        "lookback": int(data.splits.lookback),
        "horizon": int(data.splits.horizon),
    }
    for part, (first, last) in data.boundaries.items():
        splits[part] = [first.isoformat(), last.isoformat()]
    attrs = data.bars.attrs
    return {
        "feature_spec": data.feature_spec.to_dict(),
        "feature_names": list(data.feature_names),
        "n_features": data.n_features,
        "n_account_columns": N_ACCOUNT_COLUMNS,
        "window": data.window,
        "scaler": data.scaler.to_dict(),
        "timeframes": dict(data.timeframe_windows),
        "timeframe_scalers": {name: scaler.to_dict()
                              for name, scaler in data.timeframe_scalers().items()},
        "splits": splits,
        "dataset": {
            "name": data.name,
            "symbol": str(attrs.get("symbol") or ""),
            "interval": str(attrs.get("interval") or ""),
            "source": str(attrs.get("source") or ""),
        },
        "costs": dict(data.costs.to_dict()),
    }


# ---------------------------------------------------------------------------------- writing


def _fsync_directory(folder: Path) -> None:
    """Make the renames in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_files_atomically(files: Sequence[tuple[str | os.PathLike[str], bytes]]) -> list[Path]:
    """Write each ``(path, content)``: all to temporary names in their folders (flushed and
    fsynced), then renamed over the final names in order, then the folders fsynced.

    An error or a kill before the renames leaves every final name as it was; no temporary
    file is left behind by an error (a kill can leave ``.<name>.*.tmp`` files, which are never
    read).

    Returns:
        The final paths, in order.
    """
    temps: list[tuple[Path, Path]] = []
    try:
        for target, content in files:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=temp_name_prefix(path.name), suffix=TEMP_SUFFIX,
                                       dir=path.parent)
            temps.append((Path(tmp), path))
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
        for tmp, path in temps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        raise
    for folder in dict.fromkeys(path.parent for _, path in temps):
        _fsync_directory(folder)
    return [path for _, path in temps]


def serialize_checkpoint(payload: Mapping[str, Any]) -> bytes:
    """The bytes :func:`save_checkpoint` writes for ``payload`` (``torch.save`` of a dict).

    Raises:
        CheckpointError: the payload lacks a required key.
    """
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"save_checkpoint: payload lacks key(s) {missing}")
    buffer = io.BytesIO()
    torch.save({k: v for k, v in payload.items() if k != "path"}, buffer)
    return buffer.getvalue()


def save_checkpoint(payload: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``payload`` to ``path`` atomically (:func:`write_files_atomically`).

    The payload must hold plain types only (checked by reading it back with
    ``weights_only=True`` would be too slow for every save; :func:`load_checkpoint` does it).

    Returns:
        The path written.
    """
    return write_files_atomically([(path, serialize_checkpoint(payload))])[0]


# ---------------------------------------------------------------------------------- reading


def _spec_differences(saved: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(saved) | set(expected)):
        a, b = saved.get(key, "<absent>"), expected.get(key, "<absent>")
        if a != b:
            out.append(f"{key}: checkpoint {a!r} vs expected {b!r}")
    return out


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check_fields(payload: Mapping[str, Any], where: str) -> None:
    """Types of the fields a model is rebuilt from (a crafted file fails here, named)."""
    from tradezoo.policies.registry import ARCHITECTURES

    problems: list[str] = []
    if not isinstance(payload["arch"], str) or payload["arch"] not in ARCHITECTURES:
        problems.append(f"arch {payload['arch']!r} is not a registered architecture "
                        f"({list(ARCHITECTURES)})")
    config = payload["arch_config"]
    if not isinstance(config, Mapping) or not all(isinstance(k, str) for k in config):
        problems.append("arch_config must be a dict of the architecture's config fields")
    for key in ("n_features", "window", "features_dim"):
        if key in payload and not _is_count(payload[key]):
            problems.append(f"{key} must be a positive integer, got {payload[key]!r}")
    for key in ("scaler", "feature_spec", "env", "net_arch", "training", "label_spec",
                "timeframes", "timeframe_scalers"):
        if key in payload and not isinstance(payload[key], Mapping):
            problems.append(f"{key} must be a dict, got {type(payload[key]).__name__}")
    timeframes = payload.get("timeframes")
    if isinstance(timeframes, Mapping) and not all(
            isinstance(k, str) and _is_count(v) for k, v in timeframes.items()):
        problems.append(f"timeframes must map timeframe names to windows >= 1, got "
                        f"{timeframes!r}")
    tf_scalers = payload.get("timeframe_scalers")
    if isinstance(timeframes, Mapping) and isinstance(tf_scalers, Mapping) and (
            set(tf_scalers) != set(timeframes)
            or not all(isinstance(v, Mapping) for v in tf_scalers.values())):
        problems.append(f"timeframe_scalers must hold one scaler dict per timeframe "
                        f"{sorted(timeframes)}, got {sorted(map(str, tf_scalers))}")
    state = payload["state_dict"]
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        problems.append("state_dict must map parameter names to tensors")
    if payload["kind"] == "ppo":
        if not isinstance(payload.get("num_timesteps"), int) or payload["num_timesteps"] < 0:
            problems.append(f"num_timesteps must be an integer >= 0, got "
                            f"{payload.get('num_timesteps')!r}")
        net_arch = payload.get("net_arch")
        if isinstance(net_arch, Mapping) and not all(
                isinstance(net_arch.get(part), list | tuple)
                and all(_is_count(w) for w in net_arch[part]) for part in ("pi", "vf")):
            problems.append(f"net_arch must be {{'pi': [widths], 'vf': [widths]}}, got "
                            f"{net_arch!r}")
        env = payload.get("env")
        if isinstance(env, Mapping) and env.get("action_scheme") not in (
                "target", "signal", "continuous"):
            problems.append(f"env.action_scheme {env.get('action_scheme')!r} is not one of "
                            "'target', 'signal', 'continuous'")
    if problems:
        raise CheckpointError(f"checkpoint {where}: malformed ({'; '.join(problems)})")


def check_model_fits_limit(payload: Mapping[str, Any], where: str) -> int:
    """Estimate the size of the model a checkpoint describes, from its config alone, and
    refuse one above :data:`tradezoo.policies.size.MAX_PARAMETERS` or with an invalid
    config, before anything is built.

    Returns:
        The estimated parameter count.

    Raises:
        CheckpointError: too large, or a config the architecture rejects (names the file).
    """
    from tradezoo.policies.size import check_model_size

    features_dim = int(payload.get("features_dim", 64))
    if payload["kind"] == "ppo":
        net_arch, env = payload["net_arch"], payload["env"]
        n_actions = 1 if env.get("action_scheme") == "continuous" else 3
        heads = [[features_dim, *net_arch["pi"], n_actions], [features_dim, *net_arch["vf"], 1]]
    else:
        heads = [[features_dim, 3]]
    try:
        return check_model_size(str(payload["arch"]),
                                int(payload["n_features"]) + N_ACCOUNT_COLUMNS,
                                int(payload["window"]), saved_arch_config(payload),
                                features_dim=features_dim, heads=heads,
                                where=f"checkpoint {where}")
    except CheckpointError:
        raise
    except (ValueError, TypeError) as exc:
        message = str(exc)
        if not message.startswith(f"checkpoint {where}"):
            message = f"checkpoint {where}: invalid architecture config: {message}"
        raise CheckpointError(message) from exc


def saved_arch_config(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The backbone config a checkpoint's model was built with: its ``arch_config`` with the
    fields it lacks (added after it was written) set to the forms the model had
    (:meth:`~tradezoo.policies.base.BackboneConfig.restore_saved` of its architecture's
    config class). Every rebuild of a model from a checkpoint, in a file or in memory, reads
    its config through this."""
    from tradezoo.policies.registry import get_architecture

    config_cls = get_architecture(str(payload["arch"])).config_cls
    return config_cls.restore_saved(payload["arch_config"])


def check_payload(payload: Mapping[str, Any], where: str) -> None:
    """Every check of :func:`load_checkpoint` that needs no file: format, kind, the kind's
    keys, version, field types and the model size bound."""
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {where}: not a tradezoo checkpoint (format {payload.get('format')!r}, "
            f"expected {CHECKPOINT_FORMAT!r})"
        )
    kind = payload.get("kind")
    if not isinstance(kind, str) or kind not in KIND_KEYS:
        raise CheckpointError(f"checkpoint {where}: unknown kind {kind!r}; tradezoo reads "
                              f"{list(KIND_KEYS)}")
    missing = [k for k in (*REQUIRED_KEYS, *KIND_KEYS[kind]) if k not in payload]
    if missing:
        for_kind = f" for kind {kind!r}" if set(missing) <= set(KIND_KEYS[kind]) else ""
        raise CheckpointError(f"checkpoint {where}: incomplete, missing key(s) {missing}"
                              f"{for_kind}")
    version = payload["format_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"checkpoint {where}: format_version {version!r} is not an integer")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {where}: format version {version} is newer than this "
            f"tradezoo reads ({CHECKPOINT_VERSION}); upgrade tradezoo"
        )
    _check_fields(payload, where)
    check_model_fits_limit(payload, where)


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    expect_arch: str | None = None,
    expect_feature_spec: FeatureSpec | Mapping[str, Any] | None = None,
    expect_kind: str | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and check it.

    Args:
        path: the checkpoint file; for PPO also the SB3 ``.zip`` (its sidecar ``.pt`` is
            read and the pair verified). A PPO sidecar whose ``.zip`` is next to it is
            verified with it too.
        expect_arch: the architecture the caller will build; another one is an error.
        expect_feature_spec: the feature spec the caller's data uses; a different one is an
            error listing the differing fields.
        expect_kind: ``"supervised"`` or ``"ppo"``; another kind is an error.
        map_location: where tensors are loaded (default CPU).

    Returns:
        The checkpoint dict (see the module docstring), with ``path`` (the file read) and
        ``arch_config`` completed by :func:`saved_arch_config`.

    Raises:
        FileNotFoundError: no such file (or a ``.zip`` without its sidecar).
        CheckpointError: unreadable or not a tradezoo checkpoint, malformed, too large a
            model, a mismatched PPO pair, or a mismatch with an ``expect_*`` (the message
            names the file, the field, the saved and the expected values).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path}: is a directory, not a checkpoint file")
    zip_path: Path | None = None
    if path.suffix == ".zip":
        zip_path, path = path, path.with_suffix(".pt")
        if not path.exists():
            raise FileNotFoundError(
                f"checkpoint {zip_path}: no sidecar {path} (the tradezoo metadata train_ppo "
                "writes next to each SB3 .zip; keep the two together)"
            )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # any failure of the restricted unpickler: not a checkpoint
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path}: cannot be read as a tradezoo checkpoint with "
            f"torch.load(weights_only=True) (truncated, corrupt or another kind of file): "
            f"{type(exc).__name__}: {first}"
        ) from exc
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"checkpoint {path}: not a tradezoo checkpoint (format {type(payload).__name__!r}, "
            f"expected {CHECKPOINT_FORMAT!r})"
        )
    check_payload(payload, str(path))
    payload["arch_config"] = saved_arch_config(payload)
    if zip_path is not None and payload["kind"] != "ppo":
        raise CheckpointError(f"checkpoint {zip_path}: its sidecar {path} is of kind "
                              f"{payload['kind']!r}; only 'ppo' checkpoints come as .zip")
    if payload["kind"] == "ppo":
        sibling = zip_path if zip_path is not None else path.with_suffix(".zip")
        if sibling.exists():
            verify_sb3_pair(sibling, payload, path)
    if expect_kind is not None and payload["kind"] != expect_kind:
        raise CheckpointError(
            f"checkpoint {path}: kind {payload['kind']!r}, expected {expect_kind!r}"
        )
    if expect_arch is not None and payload["arch"] != expect_arch:
        raise CheckpointError(
            f"checkpoint {path}: architecture mismatch: the checkpoint holds "
            f"{payload['arch']!r}, expected {expect_arch!r}"
        )
    if expect_feature_spec is not None:
        check_feature_spec(payload, expect_feature_spec, str(path))
    payload["path"] = str(path)
    return payload


def load_weights(module: torch.nn.Module, state_dict: Mapping[str, Any], *, where: str,
                 what: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)``; weights that do not fit the module
    built from the saved config are a :class:`CheckpointError` naming the file and ``what``
    (e.g. ``"architecture 'gru'"``)."""
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {where}: its weights do not fit {what} with the saved config: "
            f"{str(exc).splitlines()[0]}"
        ) from exc


def check_feature_spec(payload: Mapping[str, Any], expected: FeatureSpec | Mapping[str, Any],
                       where: str) -> None:
    """The feature spec a checkpoint was trained on must equal ``expected`` (the caller's data).

    Raises:
        CheckpointError: a malformed saved spec, or a mismatch listing the differing fields.
    """
    wanted = (expected.to_dict() if isinstance(expected, FeatureSpec)
              else FeatureSpec.from_dict(expected).to_dict())
    try:
        saved = FeatureSpec.from_dict(payload["feature_spec"]).to_dict()
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {where}: malformed feature_spec: {exc}") from exc
    differences = _spec_differences(saved, wanted)
    if differences:
        raise CheckpointError(
            f"checkpoint {where}: feature spec mismatch ({'; '.join(differences)}); the "
            "model was trained on other features"
        )


# ------------------------------------------------------------------------------ PPO pairs


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def verify_sb3_pair(zip_path: str | os.PathLike[str], sidecar: Mapping[str, Any],
                    sidecar_path: str | os.PathLike[str] | None = None) -> bytes:
    """Check that ``zip_path`` is the SB3 zip its PPO sidecar describes; return its bytes
    (read once: what was verified is what the caller reads tensors from).

    Checks, in order: the sidecar records ``sb3_zip_sha256``; the zip is a readable archive
    with :data:`SB3_ZIP_ENTRIES` and intact CRCs; its ``data`` record (parsed as JSON; its
    ``:serialized:`` fields are left as text, never unpickled) is at the sidecar's
    ``num_timesteps``; its SHA-256 equals the recorded one.

    Raises:
        FileNotFoundError: no zip.
        CheckpointError: any check failing (names both files and the reason).
    """
    zip_path = Path(zip_path)
    where = str(sidecar_path) if sidecar_path is not None else str(
        sidecar.get("path", "<in memory>"))
    pair = f"checkpoint pair {zip_path} + {where}"
    recorded = sidecar.get("sb3_zip_sha256")
    if not isinstance(recorded, str) or len(recorded) != 64:
        raise CheckpointError(
            f"checkpoint {where}: records no valid sb3_zip_sha256, so its zip {zip_path} cannot "
            "be verified (written by an older tradezoo, or edited); move the .zip away to use "
            "the sidecar alone (backtest), or retrain"
        )
    if not zip_path.is_file():
        raise FileNotFoundError(f"{pair}: no zip {zip_path}")
    content = zip_path.read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            names = set(archive.namelist())
            absent = [name for name in SB3_ZIP_ENTRIES if name not in names]
            if absent:
                raise CheckpointError(f"{pair}: {zip_path} is not an SB3 PPO zip (no "
                                      f"{absent} entries)")
            damaged = archive.testzip()
            if damaged is not None:
                raise CheckpointError(f"{pair}: {zip_path} is corrupt (entry {damaged!r} fails "
                                      "its CRC check)")
            info = archive.getinfo("data")
            if info.file_size > MAX_SB3_DATA_BYTES:
                raise CheckpointError(f"{pair}: {zip_path}'s data entry is {info.file_size} "
                                      f"bytes (more than {MAX_SB3_DATA_BYTES}); not an SB3 zip")
            record = json.loads(archive.read("data").decode("utf-8"))
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, UnicodeDecodeError,
            json.JSONDecodeError, NotImplementedError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{pair}: {zip_path} is not a readable SB3 zip (truncated or "
                              f"corrupt): {type(exc).__name__}: {exc}") from exc
    zip_step = record.get("num_timesteps") if isinstance(record, dict) else None
    sidecar_step = sidecar.get("num_timesteps")
    if zip_step != sidecar_step:
        raise CheckpointError(
            f"{pair}: the zip is at step {zip_step!r} but its sidecar records step "
            f"{sidecar_step!r}; the two files come from different saves (an interrupted save "
            "or a copied file); use another checkpoint"
        )
    actual = _sha256(content)
    if actual != recorded:
        raise CheckpointError(
            f"{pair}: {zip_path} has SHA-256 {actual[:16]}..., its sidecar records "
            f"{recorded[:16]}...; the zip was changed, replaced or corrupted after it was saved"
        )
    return content


def sb3_zip_tensors(content: bytes, zip_path: str | os.PathLike[str],
                    names: Sequence[str] = ("policy", "policy.optimizer"),
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state dicts ``<name>.pth`` of an SB3 zip's bytes (from :func:`verify_sb3_pair`),
    each read with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: an entry is missing or not a plain state dict (names the zip).
    """
    out: dict[str, Any] = {}
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        for name in names:
            entry = f"{name}.pth"
            try:
                value = torch.load(io.BytesIO(archive.read(entry)), map_location=map_location,
                                   weights_only=True)
            except Exception as exc:  # the restricted unpickler refused it, or no entry
                raise CheckpointError(
                    f"SB3 zip {zip_path}: entry {entry} cannot be read with "
                    f"torch.load(weights_only=True): {type(exc).__name__}: {exc}"
                ) from exc
            if not isinstance(value, dict):
                raise CheckpointError(f"SB3 zip {zip_path}: entry {entry} is not a state dict")
            out[name] = value
    return out


# ---------------------------------------------------------------------- rebuilding models


def _as_checkpoint(checkpoint: Mapping[str, Any] | str | os.PathLike[str]) -> Mapping[str, Any]:
    if isinstance(checkpoint, Mapping):
        return checkpoint
    return load_checkpoint(checkpoint)


def feature_spec_from_checkpoint(checkpoint: Mapping[str, Any] | str | Path) -> FeatureSpec:
    """The :class:`FeatureSpec` the checkpoint's model was trained on."""
    return FeatureSpec.from_dict(_as_checkpoint(checkpoint)["feature_spec"])


def scaler_from_checkpoint(checkpoint: Mapping[str, Any] | str | Path,
                           dataset: str | None = None) -> FeatureScaler:
    """The fitted :class:`FeatureScaler` of the checkpoint (pass it to the env's ``scaler=``);
    with ``dataset``, that training dataset's own scaler (``KeyError`` for another name)."""
    ckpt = _as_checkpoint(checkpoint)
    if dataset is None:
        return FeatureScaler.from_dict(ckpt["scaler"])
    for record in checkpoint_datasets(ckpt):
        if record["name"] == dataset:
            return FeatureScaler.from_dict(record["scaler"])
    raise KeyError(f"the checkpoint was not trained on dataset {dataset!r}")


def checkpoint_datasets(checkpoint: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``datasets`` records of a checkpoint (module docstring); a checkpoint written
    before the field existed gives its one ``dataset`` with the top-level scaler.

    Raises:
        CheckpointError: a malformed ``datasets`` field.
    """
    where = checkpoint.get("path", "<in memory>")
    records = checkpoint.get("datasets")
    if records is None:
        name = (checkpoint.get("dataset") or {}).get("name")
        return [{"name": str(name), "scaler": checkpoint["scaler"]}] if name else []
    if not isinstance(records, list) or not all(
            isinstance(r, Mapping) and isinstance(r.get("name"), str)
            and isinstance(r.get("scaler"), Mapping) for r in records):
        raise CheckpointError(f"checkpoint {where}: field 'datasets' must be a list of "
                              "{name, scaler, ...} records")
    return [dict(r) for r in records]


def checkpoint_dataset_names(checkpoint: Mapping[str, Any]) -> tuple[str, ...]:
    """The names of the datasets a checkpoint's model was trained on, in order."""
    return tuple(r["name"] for r in checkpoint_datasets(checkpoint))


def input_timeframes(checkpoint: Mapping[str, Any]) -> dict[str, int]:
    """The timeframes (name -> window) of a multi-timeframe model's inputs; ``{}`` for a Box
    model, which includes every checkpoint written before timeframes were recorded."""
    return {str(k): int(v) for k, v in (checkpoint.get("timeframes") or {}).items()}


def timeframe_scalers_from_checkpoint(checkpoint: Mapping[str, Any]) -> dict[str, FeatureScaler]:
    """The scalers of a multi-timeframe model's timeframes (empty for a Box model)."""
    return {str(k): FeatureScaler.from_dict(v)
            for k, v in (checkpoint.get("timeframe_scalers") or {}).items()}


def label_spec_from_checkpoint(checkpoint: Mapping[str, Any] | str | Path) -> LabelSpec:
    """The :class:`~tradezoo.agents.data.LabelSpec` the checkpoint was trained with."""
    from tradezoo.agents.data import LabelSpec

    return LabelSpec.from_dict(_as_checkpoint(checkpoint)["label_spec"])
