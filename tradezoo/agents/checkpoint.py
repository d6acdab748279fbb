"""One-file checkpoints readable with ``torch.load(path, weights_only=True)``.

A checkpoint is a dict of plain values (dicts, lists, str, int, float, bool, None, tensors),
so loading it never runs pickled code::

    format          "tradezoo.checkpoint"
    format_version  1
    kind            "supervised" (the PPO trainer adds its own kind)
    arch            registry name, e.g. "mamba"
    arch_config     the backbone's full config (``BackboneConfig.to_dict()``)
    features_dim    width of the extractor output the head reads
    state_dict      the model's tensors
    feature_spec    ``FeatureSpec.to_dict()``
    feature_names   the feature columns, in order
    n_features      F (the observation has F + 2 columns: + position, equity log-return)
    window          bars per observation
    scaler          ``FeatureScaler.to_dict()`` (mean and std as lists of floats)
    label_spec      ``LabelSpec.to_dict()``
    splits          {"fractions": [..], "embargo": int, part: [first ISO, last ISO], ...}
    dataset         {"name", "symbol", "interval", "source"}
    costs           ``CostModel.to_dict()``
    training        the trainer's config dict
    epoch, step     progress when written
    resume          None, or {"optimizer", "scheduler", "best_val_loss", ...} to continue
    metrics         the latest validation metrics (dict of floats)
    versions        {"tradezoo", "torch", "python"}

:func:`save_checkpoint` writes atomically (temporary file + rename): an interrupted write
never leaves a half checkpoint under the final name. :func:`load_checkpoint` checks the file
and, on request, the architecture and the feature spec, naming the mismatch.
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tradezoo.data.features import FeatureScaler, FeatureSpec

if TYPE_CHECKING:
    from tradezoo.agents.data import LabelSpec, PreparedData
    from tradezoo.agents.supervised import SupervisedModel

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "data_payload",
    "feature_spec_from_checkpoint",
    "label_spec_from_checkpoint",
    "load_checkpoint",
    "model_from_checkpoint",
    "save_checkpoint",
    "scaler_from_checkpoint",
    "versions",
]

CHECKPOINT_FORMAT = "tradezoo.checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS: tuple[str, ...] = (
    "format", "format_version", "kind", "arch", "arch_config", "state_dict", "feature_spec",
    "n_features", "window", "scaler",
)
"""Keys every checkpoint has (the supervised trainer writes all the keys listed above)."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit what the caller needs."""


def versions() -> dict[str, str]:
    """Versions recorded in a checkpoint."""
    import tradezoo

    return {
        "tradezoo": str(tradezoo.__version__),
        "torch": str(torch.__version__),
        "python": sys.version.split()[0],
    }


def data_payload(data: PreparedData) -> dict[str, Any]:
    """The checkpoint fields that describe the data a model was trained on, the same for both
    trainers: ``feature_spec, feature_names, n_features, n_account_columns, window, scaler,
    splits, dataset, costs`` (module docstring)."""
    from tradezoo.agents.data import N_ACCOUNT_COLUMNS

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
        "splits": splits,
        "dataset": {
            "name": data.name,
            "symbol": str(attrs.get("symbol") or ""),
            "interval": str(attrs.get("interval") or ""),
            "source": str(attrs.get("source") or ""),
        },
        "costs": dict(data.costs.to_dict()),
    }


def save_checkpoint(payload: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary file in the same folder + rename).

    The payload must hold plain types only (checked by reading it back with
    ``weights_only=True`` would be too slow for every save; :func:`load_checkpoint` does it).

    Returns:
        The path written.
    """
    path = Path(path)
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"save_checkpoint: payload lacks key(s) {missing}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(dict(payload), handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _spec_differences(saved: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(saved) | set(expected)):
        a, b = saved.get(key, "<absent>"), expected.get(key, "<absent>")
        if a != b:
            out.append(f"{key}: checkpoint {a!r} vs expected {b!r}")
    return out


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
        path: the checkpoint file.
        expect_arch: the architecture the caller will build; another one is an error.
        expect_feature_spec: the feature spec the caller's data uses; a different one is an
            error listing the differing fields.
        expect_kind: ``"supervised"`` (or another trainer's kind); another kind is an error.
        map_location: where tensors are loaded (default CPU).

    Returns:
        The checkpoint dict (see the module docstring).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable or not a tradezoo checkpoint, or a mismatch (the message
            names the file, the field, the saved and the expected values).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path}: is a directory, not a checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError,
            ValueError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"checkpoint {path}: cannot be read as a tradezoo checkpoint with "
            f"torch.load(weights_only=True) (truncated, corrupt or another kind of file): "
            f"{first}"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"checkpoint {path}: not a tradezoo checkpoint (format {found!r}, expected "
            f"{CHECKPOINT_FORMAT!r})"
        )
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path}: incomplete, missing key(s) {missing}")
    if int(payload["format_version"]) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path}: format version {payload['format_version']} is newer than this "
            f"tradezoo reads ({CHECKPOINT_VERSION}); upgrade tradezoo"
        )
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
        expected = (
            expect_feature_spec.to_dict()
            if isinstance(expect_feature_spec, FeatureSpec)
            else FeatureSpec.from_dict(expect_feature_spec).to_dict()
        )
        saved = FeatureSpec.from_dict(payload["feature_spec"]).to_dict()
        differences = _spec_differences(saved, expected)
        if differences:
            raise CheckpointError(
                f"checkpoint {path}: feature spec mismatch ({'; '.join(differences)}); the "
                "model was trained on other features"
            )
    payload["path"] = str(path)
    return payload


def _as_checkpoint(checkpoint: Mapping[str, Any] | str | os.PathLike[str]) -> Mapping[str, Any]:
    if isinstance(checkpoint, Mapping):
        return checkpoint
    return load_checkpoint(checkpoint)


def feature_spec_from_checkpoint(checkpoint: Mapping[str, Any] | str | Path) -> FeatureSpec:
    """The :class:`FeatureSpec` the checkpoint's model was trained on."""
    return FeatureSpec.from_dict(_as_checkpoint(checkpoint)["feature_spec"])


def scaler_from_checkpoint(checkpoint: Mapping[str, Any] | str | Path) -> FeatureScaler:
    """The fitted :class:`FeatureScaler` of the checkpoint (pass it to the env's ``scaler=``)."""
    return FeatureScaler.from_dict(_as_checkpoint(checkpoint)["scaler"])


def label_spec_from_checkpoint(checkpoint: Mapping[str, Any] | str | Path) -> LabelSpec:
    """The :class:`~tradezoo.agents.data.LabelSpec` the checkpoint was trained with."""
    from tradezoo.agents.data import LabelSpec

    return LabelSpec.from_dict(_as_checkpoint(checkpoint)["label_spec"])


def model_from_checkpoint(
    checkpoint: Mapping[str, Any] | str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
) -> SupervisedModel:
    """Rebuild the :class:`~tradezoo.agents.supervised.SupervisedModel` of a ``"supervised"``
    checkpoint, in eval mode, with its weights loaded (strictly: every tensor must fit).

    Raises:
        CheckpointError: another kind of checkpoint, or weights that do not fit the model
            (the message names the missing/unexpected keys).
    """
    from tradezoo.agents.supervised import SupervisedModel

    ckpt = (
        checkpoint
        if isinstance(checkpoint, Mapping)
        else load_checkpoint(checkpoint, map_location=map_location)
    )
    where = ckpt.get("path", "<in memory>")
    if ckpt.get("kind") != "supervised":
        raise CheckpointError(
            f"checkpoint {where}: kind {ckpt.get('kind')!r}; model_from_checkpoint rebuilds "
            "'supervised' checkpoints"
        )
    model = SupervisedModel(
        ckpt["arch"],
        n_features=int(ckpt["n_features"]),
        window=int(ckpt["window"]),
        features_dim=int(ckpt.get("features_dim", 64)),
        clip=ckpt["scaler"].get("clip"),
        aux_horizons=tuple(ckpt.get("aux_horizons", ()) or ()),
        arch_config=dict(ckpt["arch_config"]),
    )
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {where}: its weights do not fit architecture {ckpt['arch']!r} with the "
            f"saved config: {str(exc).splitlines()[0]}"
        ) from exc
    model.to(map_location)
    model.eval()
    return model
