"""The supervised model's observations: the env's observation of a flat account at decision
rows, gathered on the training device.

:class:`ModelInputs` is the one builder of supervised observations (the trainer's batches, the
evaluation and :func:`~tradezoo.agents.supervised_evaluation.model_predictions` all use it):
the Box window ``[B, window, F + 2]`` (scaled features plus the two account columns, 0), or
for a multi-timeframe model (``msa`` on intraday bars) the dict of each timeframe's last
``window`` closed bars ``[B, window_tf, F]`` plus the zero account vector ``[B, 4]``, cut by
the env's own rule; with each window's elapsed seconds beside it for a model that takes
``dt`` (the envs' ``include_dt=True`` observation). :class:`_Batches` adds the labels and the
per-item targets of one or more datasets for the trainer. :func:`flat_observation` and
:func:`with_dt_observation` turn scaled feature windows into such observations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from tradezoo.agents.data import PreparedData, flat_account_observation, flat_account_vector
from tradezoo.data.elapsed import DT_KEY, WINDOW_KEY, dt_key
from tradezoo.data.prepare import closed_window_rows
from tradezoo.data.windows import WindowDataset
from tradezoo.envs.layout import ACCOUNT_KEY

__all__ = ["ModelInputs", "flat_observation", "with_dt_observation"]


def flat_observation(x: Tensor | Mapping[str, Tensor]) -> Tensor | dict[str, Tensor]:
    """Scaled feature windows -> the env's observation of a flat account: a Box window
    ``[B, L, F]`` gets its two zero account columns, a dict of timeframe windows gets the zero
    account vector ``[B, 4]``."""
    if isinstance(x, Tensor):
        return flat_account_observation(x)  # [B, L, F + 2]
    windows = dict(x)
    windows[ACCOUNT_KEY] = flat_account_vector(next(iter(windows.values())))  # [B, 4]
    return windows


def with_dt_observation(obs: Tensor | dict[str, Tensor],
                        dt: Tensor | Mapping[str, Tensor] | None) -> dict[str, Tensor]:
    """``obs`` as the envs' ``include_dt=True`` gives it (:mod:`tradezoo.data.elapsed`): a Box
    window becomes ``{"window": obs}`` plus ``"dt"``; a dict of timeframe windows gains
    ``"dt_<tf>"`` from ``dt[tf]``. ``dt=None`` leaves the elapsed times out (regular bars)."""
    if isinstance(obs, Tensor):
        return {WINDOW_KEY: obs} if dt is None else {WINDOW_KEY: obs, DT_KEY: dt}
    out = dict(obs)
    if isinstance(dt, Mapping):
        out.update({dt_key(name): value for name, value in dt.items()})
    return out


class ModelInputs:
    """The model's observations (flat account) at decision rows ``[N]``, gathered on
    ``device`` by one index operation per timeframe.

    ``ModelInputs(data, rows, device, include_dt=model.include_dt).get(index [B])`` gives
    the observations :meth:`~tradezoo.agents.supervised_model.SupervisedModel.forward` takes,
    for ``data`` prepared with the model's inputs (:meth:`PreparedData.for_model`): the
    trainer's batches, the evaluation and
    :func:`~tradezoo.agents.supervised_evaluation.model_predictions` all gather them here.

    Box: ``features[rows[:, None] + offsets]`` ``[B, L, F]`` padded to ``[B, L, F + 2]``.
    Multi-timeframe (``data.timeframes``): each timeframe's window rows come from
    :func:`~tradezoo.data.prepare.closed_window_rows`, the env's rule (index ``[N, L_tf]``
    built once on the host), plus the zero account vector: the env's dict observation.
    With ``include_dt`` (a model whose backbone takes elapsed time) each window's elapsed
    seconds, unscaled, come with it, gathered by the same index from the bars' open times
    (:attr:`PreparedData.dt_seconds`, each timeframe's ``dt_seconds``): ``"dt"`` beside the
    Box window (then under ``"window"``), ``"dt_<tf>"`` beside each timeframe, the envs'
    ``include_dt=True`` observation. This is the one place a supervised observation is
    built: another per-window input is one more table gathered here.
    """

    def __init__(self, data: PreparedData, rows: np.ndarray, device: torch.device, *,
                 features: Tensor | None = None, include_dt: bool = False,
                 dt: Tensor | None = None) -> None:
        """``rows``: decision rows of ``data`` ``[N]``; ``features``: the Box features
        ``[T, F]`` to gather instead of ``data.scaled``, with ``dt`` ``[T]`` their elapsed
        seconds (default ``data.elapsed()``); ``include_dt``: add the elapsed times (a model
        whose backbone takes them)."""
        self.device = device
        self.include_dt = include_dt
        rows = np.asarray(rows, dtype=np.int64)
        self.n = len(rows)
        self.tables: dict[str, Tensor] = {}
        self.dt_tables: dict[str, Tensor] = {}
        self.windows: dict[str, Tensor] = {}
        for tf in data.timeframes:
            name, window = tf.interval.name, data.timeframe_windows[tf.interval.name]
            self.tables[name] = torch.tensor(tf.features, device=device)  # [T_tf, F]
            self.dt_tables[name] = torch.tensor(tf.dt_seconds, device=device)  # [T_tf]
            self.windows[name] = torch.from_numpy(
                closed_window_rows(tf.last_closed, rows, window)).to(device)  # [N, L_tf]
        if not self.tables:
            if features is None:
                features = torch.tensor(data.scaled.to_numpy(dtype=np.float32))
            self.features = features.to(device)  # [T, F]
            self.dt = (torch.tensor(data.elapsed(), device=device) if dt is None
                       else dt.to(device))  # [T] seconds (``dt``: with ``features``)
            self.rows = torch.from_numpy(rows).to(device)  # [N]
            self.offsets = torch.arange(-data.window + 1, 1, device=device)  # [L]

    def __len__(self) -> int:
        return self.n

    def get(self, index: Tensor) -> Tensor | dict[str, Tensor]:
        """Observations of items ``index`` ``[B]``."""
        if not self.tables:
            at = self.rows[index][:, None] + self.offsets  # [B, L]
            box = flat_account_observation(self.features[at])  # [B, L, F + 2]
            return {WINDOW_KEY: box, DT_KEY: self.dt[at]} if self.include_dt else box
        obs = flat_observation({name: table[self.windows[name][index]]  # [B, L_tf, F]
                                for name, table in self.tables.items()})
        if self.include_dt:
            obs.update({dt_key(name): table[self.windows[name][index]]  # [B, L_tf]
                        for name, table in self.dt_tables.items()})
        return obs


class _Batches:
    """Batches of one or more :class:`WindowDataset`: their items' observations
    (:class:`ModelInputs` at their decision rows), labels and per-item ``targets`` (arrays
    ``[N, ...]``, :func:`~tradezoo.agents.supervised_objective._item_targets`), gathered on
    ``device`` with the same index.

    Several datasets (Box inputs) are laid end to end: features ``[sum T_k, F]``, rows shifted
    by the rows before them (a window never crosses datasets: every row has a full window of
    its own dataset), targets concatenated; the ``"asset"`` target ``[N]`` int64 holds each
    item's dataset position (the asset embedding's id).
    """

    def __init__(self, data: PreparedData | Sequence[PreparedData],
                 dataset: WindowDataset | Sequence[WindowDataset], device: torch.device,
                 targets: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]]
                 | None = None, include_dt: bool = False,
                 asset_ids: Sequence[int] | None = None) -> None:
        datas = [data] if isinstance(data, PreparedData) else list(data)
        parts = [dataset] if isinstance(dataset, WindowDataset) else list(dataset)
        given = ([targets or {}] if targets is None or isinstance(targets, Mapping)
                 else list(targets))
        self.device = device
        self.sizes = [len(p) for p in parts]
        if len(parts) == 1:
            self.inputs = ModelInputs(datas[0], np.array(parts[0].decision_rows), device,
                                  features=parts[0].features, include_dt=include_dt)
            joined = dict(given[0])
        else:
            starts = np.cumsum([0] + [len(p.features) for p in parts[:-1]])
            rows = np.concatenate([np.asarray(p.decision_rows) + int(start)
                                   for p, start in zip(parts, starts, strict=True)])
            self.inputs = ModelInputs(datas[0], rows, device,
                                  features=torch.cat([p.features for p in parts]),
                                  include_dt=include_dt,
                                  dt=torch.cat([torch.as_tensor(d.elapsed()) for d in datas]))
            joined = {name: np.concatenate([t[name] for t in given]) for name in given[0]}
        self.labels = torch.cat([p.labels for p in parts]).to(device)  # [N]
        ids = list(range(len(parts))) if asset_ids is None else list(asset_ids)
        joined["asset"] = np.repeat(np.asarray(ids, dtype=np.int64), self.sizes)
        self.targets = {name: torch.from_numpy(values).to(device)
                        for name, values in joined.items()}

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def get(self, index: Tensor
            ) -> tuple[Tensor | dict[str, Tensor], Tensor, dict[str, Tensor]]:
        """``(observations (:meth:`ModelInputs.get`), labels [B], {target name: [B, ...]})`` of
        items ``index``."""
        index = index.to(self.device)
        targets = {name: values[index] for name, values in self.targets.items()}
        return self.inputs.get(index), self.labels[index], targets
