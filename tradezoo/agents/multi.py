"""One model across several datasets: per-dataset preparation and the sampling rule.

Each dataset is prepared on its own by the one data preparation
(:func:`tradezoo.agents.data.prepare_data`): its features, its splits, a scaler fitted on
**its own** train part, labels netting out **its own** cost model (``costs=None``: each
dataset's source default). :class:`MultiData` holds the prepared datasets in the order given;
the trainers accept it wherever they accept one :class:`~tradezoo.agents.data.PreparedData`
(docs/multi-asset.md).

Feature columns. Every dataset must yield the same feature columns. A dataset without a
``funding_rate`` column (spot, equities) trained beside one with it (Bybit perpetuals) gets a
column of zeros, as the multi-dataset env does (an instrument without funding pays none), so
the columns agree; its bars then carry that zero column too, for the env and the backtests.

Sampling rule (:data:`SAMPLING_RULES`, ``SupervisedConfig.sampling``). An epoch has as many
training items as all datasets together (``N = sum N_k``):

- ``"proportional"``: every item of every dataset once per epoch, in one seeded shuffle, so
  dataset ``k`` supplies ``N_k / N`` of the items (a large dataset dominates);
- ``"balanced"``: each of the ``K`` datasets supplies ``N // K`` items (the first ``N % K``
  datasets one more): its items in a seeded shuffle, repeated in fresh shuffles when it has
  fewer than its share, cut when it has more; the union is shuffled again.

Both depend only on ``(seed, epoch)`` (:func:`epoch_order`). With one dataset both are the
single-dataset shuffle, bit for bit.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tradezoo.agents.data import PreparedData, prepare_data

if TYPE_CHECKING:
    import torch

    from tradezoo.backtest.costs import CostModel
    from tradezoo.data.features import FeatureScaler, FeatureSpec
    from tradezoo.data.prepare import DataSource

__all__ = [
    "SAMPLING_RULES",
    "MultiData",
    "as_datasets",
    "check_known_asset",
    "checkpoint_scaler",
    "epoch_order",
    "prepare_datasets",
    "split_sources",
]

SAMPLING_RULES: tuple[str, ...] = ("proportional", "balanced")
"""How training windows are drawn from several datasets (module docstring)."""


@dataclass(frozen=True, eq=False)
class MultiData:
    """Several prepared datasets trained together (module docstring).

    Attributes:
        parts: the :class:`~tradezoo.agents.data.PreparedData` of each dataset, in the order
            given; same window, feature spec and feature columns; unique names.
    """

    parts: tuple[PreparedData, ...]

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError("MultiData needs at least one dataset")
        first = self.parts[0]
        names = [p.name for p in self.parts]
        if len(set(names)) != len(names):
            raise ValueError(f"datasets must have distinct names, got {names}")
        for part in self.parts[1:]:
            if part.window != first.window:
                raise ValueError(f"datasets must share the window: {part.name!r} has "
                                 f"{part.window}, {first.name!r} {first.window}")
            if part.feature_names != first.feature_names:
                missing = [c for c in first.feature_names if c not in part.feature_names]
                extra = [c for c in part.feature_names if c not in first.feature_names]
                raise ValueError(f"datasets must have the same feature columns; {part.name!r} "
                                 f"differs from {first.name!r}: missing {missing}, extra {extra}")
            if part.walk_forward is not None or first.walk_forward is not None:
                raise ValueError("walk-forward folds are not supported with several datasets")

    @property
    def names(self) -> tuple[str, ...]:
        """The dataset names, in order (the asset ids of an asset embedding)."""
        return tuple(p.name for p in self.parts)

    @property
    def feature_spec(self) -> FeatureSpec:
        """The feature spec every dataset was prepared with."""
        return self.parts[0].feature_spec

    @property
    def label_spec(self) -> Any:
        """The first dataset's :class:`~tradezoo.agents.data.LabelSpec` (task, horizon and
        threshold are every dataset's; ``cost_bps`` is each dataset's own, see
        :attr:`parts`)."""
        return self.parts[0].label_spec

    @property
    def window(self) -> int:
        """Bars per model input window (every dataset's)."""
        return self.parts[0].window

    def __len__(self) -> int:
        return len(self.parts)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.parts)

    def part(self, name: str) -> PreparedData:
        """The prepared dataset called ``name`` (``KeyError`` naming the known ones)."""
        for p in self.parts:
            if p.name == name:
                return p
        raise KeyError(f"no dataset {name!r}; the datasets are {list(self.names)}")

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description: each dataset's :meth:`PreparedData.summary`."""
        return {"datasets": [p.summary() for p in self.parts]}


def as_datasets(data: PreparedData | MultiData | Sequence[PreparedData]) -> tuple[PreparedData,
                                                                                   ...]:
    """The prepared datasets of ``data`` (one :class:`PreparedData` -> a 1-tuple).

    Raises:
        TypeError: anything else.
    """
    if isinstance(data, PreparedData):
        return (data,)
    if isinstance(data, MultiData):
        return data.parts
    if isinstance(data, Sequence) and not isinstance(data, str) and data and all(
            isinstance(d, PreparedData) for d in data):
        return MultiData(tuple(data)).parts
    raise TypeError(f"data must be a PreparedData, a MultiData or a list of PreparedData (see "
                    f"prepare_data, prepare_datasets), got {type(data).__name__}")


def split_sources(data: str | Sequence[str]) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` -> ``["a", "b"]`` (blanks dropped, order kept)."""
    items = data.split(",") if isinstance(data, str) else [str(d) for d in data]
    return [d.strip() for d in items if d.strip()]


def prepare_datasets(
    sources: Sequence[DataSource],
    *,
    window: int = 64,
    feature_spec: FeatureSpec | Mapping[str, Any] | None = None,
    label_spec: Mapping[str, Any] | Any = None,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    embargo: int | None = None,
    costs: CostModel | None = None,
) -> MultiData:
    """:func:`~tradezoo.agents.data.prepare_data` of each source, on its own (module
    docstring): own scaler (its train part), own splits, own labels and cost model
    (``costs=None``: each source's default; a cost model given applies to all).

    Raises:
        ValueError, TypeError: no source, a bad argument, datasets whose feature columns or
            names clash (the message names them).
        tradezoo.data.DataError: bars that fail validation.
    """
    from tradezoo.data.prepare import load_source

    sources = list(sources)
    if not sources:
        raise ValueError("data must name at least one dataset")
    if len(sources) == 1:
        return MultiData((prepare_data(sources[0], window=window, feature_spec=feature_spec,
                                       label_spec=label_spec, split_fractions=split_fractions,
                                       embargo=embargo, costs=costs),))
    loaded = [load_source(s, f"data[{i}]") for i, s in enumerate(sources)]
    zero_funding = any("funding_rate" in b.columns for b in loaded)
    parts = tuple(
        prepare_data(source, window=window, feature_spec=feature_spec, label_spec=label_spec,
                     split_fractions=split_fractions, embargo=embargo, costs=costs,
                     zero_funding=zero_funding)
        for source in sources
    )
    return MultiData(parts)


def _balanced_shares(n_total: int, k: int) -> list[int]:
    return [n_total // k + (1 if i < n_total % k else 0) for i in range(k)]


def epoch_order(sizes: Sequence[int], rule: str, generator: torch.Generator) -> torch.Tensor:
    """Item indices ``[N]`` (int64, into the datasets laid end to end) of one epoch under the
    sampling ``rule`` (module docstring), drawn from ``generator``.

    With one dataset both rules are ``torch.randperm(N, generator=generator)``.
    """
    import torch

    if rule not in SAMPLING_RULES:
        raise ValueError(f"sampling must be one of {list(SAMPLING_RULES)}, got {rule!r}")
    n_total = int(sum(sizes))
    if len(sizes) == 1 or rule == "proportional":
        return torch.randperm(n_total, generator=generator)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    chosen = []
    for size, offset, share in zip(sizes, offsets, _balanced_shares(n_total, len(sizes)),
                                   strict=True):
        draws = [torch.randperm(int(size), generator=generator)
                 for _ in range(-(-share // int(size)))]
        chosen.append(torch.cat(draws)[:share] + int(offset))
    pooled = torch.cat(chosen)
    return pooled[torch.randperm(len(pooled), generator=generator)]


def check_known_asset(name: str, known: Sequence[str], *, embedding: bool, where: str) -> int:
    """The asset id of dataset ``name`` for a model trained on ``known`` datasets.

    An unknown dataset is allowed without an asset embedding (a warning names the known
    ones; the id is -1), and an error with one: the embedding has no vector for it.

    Raises:
        ValueError: ``embedding`` and ``name`` not in ``known``.
    """
    if name in known:
        return list(known).index(name)
    if embedding:
        raise ValueError(f"{where}: dataset {name!r} is not one of the assets the model's "
                         f"asset embedding knows ({list(known)}); backtest it on one of them, "
                         "or train without the asset embedding to apply a model to new assets")
    if known:
        warnings.warn(f"{where}: dataset {name!r} is not one it was trained on "
                      f"({list(known)}); applying the shared model to an unknown asset",
                      UserWarning, stacklevel=3)
    return -1


def checkpoint_scaler(checkpoint: Mapping[str, Any], data: PreparedData) -> FeatureScaler:
    """The scaler a checkpoint's model reads ``data`` with: a single-dataset checkpoint's own
    (whatever the data), a multi-dataset checkpoint's scaler of that dataset, and for a
    dataset outside a multi-dataset checkpoint the data's own (fitted on its train part, as
    each training dataset's was)."""
    from tradezoo.agents.checkpoint import checkpoint_dataset_names, scaler_from_checkpoint

    names = checkpoint_dataset_names(checkpoint)
    if len(names) <= 1:
        return scaler_from_checkpoint(checkpoint)
    if data.name in names:
        return scaler_from_checkpoint(checkpoint, data.name)
    return data.scaler
