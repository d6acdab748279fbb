"""Data preparation for the supervised and the PPO trainers: the one data preparation plus
labels and windows.

:func:`prepare_data` is :func:`tradezoo.data.prepare.prepare` (the call the environments build
their market from) plus labels and windows, so a model trained here sees the same inputs when
it later runs inside :class:`~tradezoo.envs.TradingEnv`::

    prepared = prepare(source, window=window, feature_spec=..., split_fractions=...)
        # validated bars, causal features [T, F], the env's splits (horizon 1), the scaler
        # fitted on the env's train rows, scaled features [T, F] float32
    labels   = make_labels(bars, horizon=h, threshold=..., cost_bps=costs.one_way_cost_bps)
    splits   = prepared.splits_for(horizon=h, embargo=...)   # embargo >= window + h
    train/val/test = WindowDataset(scaled, labels, window=window, indices=splits.<part>)

Scaler rows. The scaler is the preparation's: fitted on the train rows of the env's split
(``lookback=window``, ``horizon=1``). The label splits here use the label horizon ``h`` in the
embargo (``window + h`` rows), so for ``h > 1`` their train part ends ``h - 1`` rows earlier.
Features are causal, so those ``h - 1`` extra rows only hold data known before the validation
part starts (no label or future information), and the env built on the same data, ``window``
and ``split_fractions`` scales every feature bit-identically, with or without being handed
``PreparedData.scaler`` (tested). The test rows do not depend on ``window`` or ``h``
(:func:`~tradezoo.data.splits.time_splits` cuts the embargo from the earlier part), so every
architecture and the PPO env are scored on the same test rows.

Labels follow docs/design.md's order (0 sell, 1 hold, 2 buy) and net out the round trip of the
dataset's own cost model (``cost_bps`` defaults to :attr:`CostModel.one_way_cost_bps` of
:meth:`CostModel.for_source`), so a label says "this trade beats its costs under the env's
fill rule".

Window items are ``(x [window, F], dt [window], y)``; the models take the env's Box
observation ``[window, F + 2]`` (features plus the two account columns, 0 for a flat account):
:func:`flat_account_observation` pads ``x``. ``dt`` is the unscaled seconds since the previous
bar's open (:attr:`PreparedData.dt_seconds`, from the bars' open times, never from the scaler;
the scaled ``dt`` feature column stays among the features, as in the env).

Multi-timeframe inputs. A backbone that takes timeframes as its scales (``msa``:
``Backbone.multi_timeframe``) gets the env's dict observation instead: one window of the last
``window`` **closed** bars per timeframe plus a flat account vector (zeros ``[4]``).
:func:`model_timeframes` picks the timeframes from the bar interval (the base interval plus
the coarser of :data:`COARSER_TIMEFRAMES` that are whole multiples of it: 1h bars give 1h, 4h
and 1d; daily bars give none, and the backbone pools its one window in-window as before),
and :meth:`PreparedData.for_model` prepares them with
:meth:`tradezoo.data.prepare.PreparedDataset.with_timeframes`, the preparation the env runs
for ``observation="dict"``. Windows are cut with
:func:`tradezoo.data.prepare.closed_window_rows`, the env's own rule, so a supervised input
equals the env's dict observation of a flat account at the same decision row, bit for bit;
its decision rows start where every timeframe has a full window
(:func:`tradezoo.data.prepare.first_full_window`, as the env's).

Elapsed time. A model whose backbone takes ``dt`` (``ltc``, ``cfc``) gets each window's
elapsed seconds beside it, as the envs' ``include_dt=True`` observation has them
(:func:`with_dt_space`; keys of :mod:`tradezoo.data.elapsed`): ``"dt"`` beside the Box window
(``"window"``), ``"dt_<tf>"`` beside each timeframe window; the seconds come from the bars'
open times (:attr:`PreparedData.dt_seconds`, each timeframe's ``dt_seconds``), never from the
scaler. The supervised trainer gathers them with the windows (``ModelInputs`` in
:mod:`tradezoo.agents.supervised_inputs`).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tradezoo.agents.validation import coerce_config, from_known_keys
from tradezoo.backtest.costs import CostModel
from tradezoo.data.checks import FieldChecks
from tradezoo.data.elapsed import DT_KEY, WINDOW_KEY, dt_key, elapsed_seconds, nominal_seconds
from tradezoo.data.features import FeatureScaler, FeatureSpec
from tradezoo.data.intervals import Interval, parse_interval
from tradezoo.data.labels import make_labels, make_multi_horizon_labels, realised_volatility
from tradezoo.data.prepare import (
    DataSource,
    PreparedDataset,
    PreparedTimeframe,
    WalkForward,
    check_split_fractions,
    closed_window_rows,
    first_full_window,
    prepare,
)
from tradezoo.data.splits import PART_NAMES, PartName, Splits
from tradezoo.envs.layout import ACCOUNT_KEY, N_ACCOUNT_COLUMNS, N_ACCOUNT_FEATURES
from tradezoo.errors import ConfigError

if TYPE_CHECKING:  # torch only at run time, inside the functions that need it
    import torch
    from gymnasium import spaces

    from tradezoo.data.windows import WindowDataset

__all__ = [
    "COARSER_TIMEFRAMES",
    "TASKS",
    "LabelSpec",
    "PreparedData",
    "check_warm_start_task",
    "flat_account_observation",
    "flat_account_vector",
    "make_task_labels",
    "model_timeframes",
    "observation_space",
    "prepare_data",
    "with_dt_space",
]

COARSER_TIMEFRAMES: tuple[str, ...] = ("4h", "1d")
"""The timeframes a multi-timeframe backbone sees besides the base bars (the design
chapter's 1h/4h/1d), where they are coarser than and whole multiples of the base interval."""


def model_timeframes(arch: str, interval: Interval | str, window: int,
                     arch_config: Mapping[str, Any] | None = None) -> dict[str, int]:
    """The timeframes (name -> bars per window, finest first) whose closed bars ``arch``
    (with ``arch_config``) takes on data of ``interval``; empty: one Box window.

    A backbone that takes timeframes as its scales (``Backbone.takes_timeframes``: ``msa``
    with parallel scales) gets the base interval plus each of :data:`COARSER_TIMEFRAMES` that
    is coarser than it and a whole multiple of it, every one with ``window`` bars (the env's
    list form of ``timeframes``). When no coarser timeframe qualifies (daily or weekly bars:
    bins of the env are anchored at the Unix epoch, a Thursday, so a "1w" bin would not be a
    trading week, and ``window`` weeks of warm-up would take years of daily data), the
    backbone keeps its in-window pooled scales on the Box window. Every other backbone (and
    ``msa``'s pyramid, whose levels pool one window) takes the Box window.
    """
    from tradezoo.policies.registry import get_architecture, make_config

    config = make_config(arch, **dict(arch_config or {}))
    if not get_architecture(arch).backbone_cls.takes_timeframes(config):
        return {}
    base = parse_interval(interval)
    if base.minutes is None:
        return {}
    coarser = [
        tf.name
        for tf in map(parse_interval, COARSER_TIMEFRAMES)
        if tf.minutes is not None and tf.minutes > base.minutes and tf.minutes % base.minutes == 0
    ]
    if not coarser:
        return {}
    return {name: int(window) for name in (base.name, *coarser)}


TASKS: tuple[str, ...] = ("direction", "volatility", "multi_horizon")
"""Valid values of :attr:`LabelSpec.task` (docs/tasks.md)."""


@dataclass(frozen=True)
class LabelSpec:
    """What a supervised model learns, and how its labels are made (docs/tasks.md).

    Attributes:
        task: ``"direction"`` (buy/hold/sell at ``horizon``,
            :func:`tradezoo.data.labels.make_labels`), ``"volatility"`` (regression of the
            realised volatility per bar over the next ``horizon`` bars from ``open[t+1]``,
            :func:`~tradezoo.data.labels.realised_volatility`) or ``"multi_horizon"``
            (buy/hold/sell at each of ``horizons``,
            :func:`~tradezoo.data.labels.make_multi_horizon_labels`).
        horizon: bars between entry (``open[t+1]``) and exit (``open[t+1+horizon]``), >= 1
            (``direction`` and ``volatility``).
        horizons: the horizons (bars) of ``multi_horizon``, distinct integers >= 1 in
            increasing order; its label horizon (embargo, unlabelled tail) is the largest.
        threshold: net return (fraction) a side must beat, >= 0, or ``"vol"`` (causal
            volatility threshold, ``vol_k * std * sqrt(horizon)``).
        vol_k: volatility multiplier for ``threshold="vol"``, > 0.
        vol_window: rolling window of the volatility threshold, >= 2.
        cost_bps: one-way cost (bps) netted out of both sides; ``None`` takes the dataset's
            cost model's :attr:`~tradezoo.backtest.costs.CostModel.one_way_cost_bps`.

    The default (4 bars, threshold 0, costs on) labels a bar "buy" when a long opened at the
    next open and closed 4 bars later beats its round-trip costs, "sell" for the short, and
    "hold" when neither does.
    """

    horizon: int = 4
    threshold: float | str = 0.0
    vol_k: float = 1.0
    vol_window: int = 20
    cost_bps: float | None = None
    task: str = "direction"
    horizons: tuple[int, ...] = (1, 6, 12, 24)

    def __post_init__(self) -> None:
        check = FieldChecks(self)
        check.choice("task", TASKS)
        check.widths("horizons", "a non-empty list of distinct horizons (bars) >= 1 in "
                                 "increasing order")
        check.require(len(self.horizons) > 0 and list(self.horizons) == sorted(
            set(self.horizons)), "horizons must be a non-empty list of distinct horizons (bars) "
                                 f">= 1 in increasing order, got {list(self.horizons)}")
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, numbers.Integral):
            raise TypeError(f"LabelSpec.horizon must be an integer >= 1, got {self.horizon!r}")
        if self.horizon < 1:
            raise ValueError(f"LabelSpec.horizon must be an integer >= 1, got {self.horizon!r}")
        if isinstance(self.threshold, str):
            if self.threshold != "vol":
                raise ValueError(
                    f"LabelSpec.threshold must be a number >= 0 or 'vol', got {self.threshold!r}"
                )
        elif (
            isinstance(self.threshold, bool)
            or not isinstance(self.threshold, numbers.Real)
            or not math.isfinite(float(self.threshold))
            or float(self.threshold) < 0
        ):
            raise ValueError(
                f"LabelSpec.threshold must be a number >= 0 or 'vol', got {self.threshold!r}"
            )
        if self.cost_bps is not None and (
            isinstance(self.cost_bps, bool)
            or not isinstance(self.cost_bps, numbers.Real)
            or not math.isfinite(float(self.cost_bps))
            or float(self.cost_bps) < 0
        ):
            raise ValueError(
                f"LabelSpec.cost_bps must be a number >= 0 or None, got {self.cost_bps!r}"
            )

    @property
    def label_horizon(self) -> int:
        """Bars a label looks ahead past ``open[t+1]`` (the splits' embargo and the unlabelled
        tail): ``max(horizons)`` for ``multi_horizon``, else ``horizon``."""
        return max(self.horizons) if self.task == "multi_horizon" else self.horizon

    @property
    def horizon_names(self) -> tuple[str, ...]:
        """Column names of the multi-horizon labels and heads: ``("h1", "h6", ...)``."""
        return tuple(f"h{h}" for h in self.horizons)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (checkpoint and JSON friendly; ``horizons`` as a list)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelSpec:
        """Rebuild from :meth:`to_dict`; unknown keys are a ``ValueError`` listing valid ones."""
        return from_known_keys(cls, data)


@dataclass(frozen=True, eq=False)
class PreparedData:
    """Everything :func:`prepare_data` prepares (see the module docstring).

    Attributes:
        name: dataset name (bundled name, ``attrs["dataset"]``, symbol or ``"data"``).
        bars: the validated bars frame (all rows, warm-up included).
        features: unscaled causal features ``[T, F]`` float32 on ``bars.index[warmup:]``.
        scaled: ``scaler.transform(features)`` ``[T, F]`` float32, same index and columns.
        labels: float64 on ``features.index``, NaN unlabelled: ``[T]`` classes 0 sell,
            1 hold, 2 buy (``direction``), ``[T]`` realised volatility per bar
            (``volatility``), or a ``[T, H]`` DataFrame of classes (``multi_horizon``).
        splits: label splits of the feature rows (``lookback=window``, ``horizon``,
            ``embargo >= window + horizon``).
        boundaries: ``{part: (first timestamp, last timestamp)}`` of each non-empty part.
        scaler: fitted on the env's train rows only (see the module docstring).
        feature_spec, label_spec: how features and labels were made; ``label_spec.cost_bps``
            is the resolved number.
        costs: the dataset's cost model (labels and backtests use the same one).
        window: bars per model input window.
        split_fractions: ``(train, val, test)`` (with walk-forward folds: the fractions
            given, unused).
        train, val, test: :class:`~tradezoo.data.windows.WindowDataset` of each part (``None``
            for a part with no fraction).
        walk_forward, fold: the walk-forward scheme and fold the parts come from, ``None`` for
            fractions.
        env_splits: the env's parts of the same rows (``horizon=1``), what the PPO envs of
            this data trade on.
        prepared: the one data preparation these parts come from (``None`` for data built
            by hand; multi-timeframe inputs need it).
        timeframes: the multi-timeframe inputs' timeframes, in :attr:`timeframe_windows`
            order (``()``: Box windows; see :meth:`for_model`).
        timeframe_windows: timeframe name -> bars per window (empty: Box windows).
        timeframe_cache: timeframes prepared so far, by name (train-part scalers).
        dt_seconds: float32 ``[T]`` seconds from the previous bar's open to each feature row's
            open, unscaled (what the liquid networks take as ``dt``).
    """

    name: str
    bars: pd.DataFrame = field(repr=False)
    features: pd.DataFrame = field(repr=False)
    scaled: pd.DataFrame = field(repr=False)
    labels: pd.Series | pd.DataFrame = field(repr=False)
    splits: Splits = field(repr=False)
    boundaries: dict[str, tuple[pd.Timestamp, pd.Timestamp]]
    scaler: FeatureScaler = field(repr=False)
    feature_spec: FeatureSpec = field(repr=False)
    label_spec: LabelSpec
    costs: CostModel = field(repr=False)
    window: int
    split_fractions: tuple[float, float, float]
    train: WindowDataset = field(repr=False)
    val: WindowDataset | None = field(repr=False)
    test: WindowDataset | None = field(repr=False)
    walk_forward: WalkForward | None = None
    fold: int | None = None
    env_splits: Splits | None = field(default=None, repr=False)
    prepared: PreparedDataset | None = field(default=None, repr=False)
    timeframes: tuple[PreparedTimeframe, ...] = field(default=(), repr=False)
    timeframe_windows: dict[str, int] = field(default_factory=dict)
    timeframe_cache: dict[str, PreparedTimeframe] = field(default_factory=dict, repr=False)
    dt_seconds: np.ndarray | None = field(default=None, repr=False)

    @property
    def interval(self) -> Interval:
        """The bars' interval."""
        if self.prepared is None:
            raise ValueError(f"dataset {self.name!r}: built without its preparation "
                             "(PreparedData.prepared), so its interval is unknown")
        return self.prepared.interval

    @property
    def first_input_row(self) -> int:
        """The first feature row with a full input: a full window of every timeframe
        (:func:`~tradezoo.data.prepare.first_full_window`), else ``window - 1``."""
        first = self.window - 1
        for tf in self.timeframes:
            first = max(first, first_full_window(tf.last_closed,
                                                 self.timeframe_windows[tf.interval.name]))
        return first

    def for_model(self, arch: str, arch_config: Mapping[str, Any] | None = None
                  ) -> PreparedData:
        """This data with the inputs ``arch`` (with ``arch_config``) takes:
        :meth:`with_timeframes` of :func:`model_timeframes` (itself when they are already
        prepared).

        A coarser timeframe the data is too short for is left out with a warning: one whose
        bars cannot fill the feature warm-up, or whose warm-up and window would leave less
        than half of the train part with a full window (the first full input would fall after
        the train part's middle row). With no coarser timeframe left the model takes the Box
        window (``msa`` then pools it in-window).
        """
        wanted = model_timeframes(arch, self.interval, self.window, arch_config)
        if wanted == self.timeframe_windows:
            return self
        usable = self._fitting_timeframes(wanted, arch)
        return self.with_timeframes(usable if len(usable) > 1 else {})

    def _fitting_timeframes(self, wanted: Mapping[str, int], arch: str) -> dict[str, int]:
        """The timeframes of ``wanted`` this data is long enough for (see :meth:`for_model`),
        warning about the others."""
        from tradezoo.data.errors import DataError

        assert self.prepared is not None  # for_model found the interval
        train = self.splits.train
        middle = int(train[(train.size - 1) // 2])
        usable: dict[str, int] = {}
        for name, tf_window in wanted.items():
            if name == self.interval.name:
                usable[name] = tf_window
                continue
            try:
                tf = self._prepared_timeframe(name)
                first = first_full_window(tf.last_closed, tf_window)
                reason = (None if first <= middle else
                          f"its first full window of {tf_window} bars (after the feature "
                          f"warm-up) is at feature row {first}, past the middle of the train "
                          f"part (row {middle})")
            except DataError as exc:
                reason = str(exc)
            if reason is None:
                usable[name] = tf_window
                continue
            warnings.warn(
                f"dataset {self.name!r}: {arch!r} leaves out the {name} timeframe, the data is "
                f"too short for it: {reason}; use more data for multi-timeframe inputs",
                UserWarning, stacklevel=3,
            )
        return usable

    def with_timeframes(
        self,
        timeframes: Mapping[str, int],
        scalers: Mapping[str, FeatureScaler] | None = None,
    ) -> PreparedData:
        """This data with multi-timeframe inputs (name -> bars per window, finest first;
        empty: Box windows), prepared as the env's ``observation="dict"`` prepares them.

        The label parts keep their rows except those before :attr:`first_input_row`.

        Args:
            timeframes: name -> window; each name the base interval or a whole multiple.
            scalers: scalers by timeframe name (a checkpoint's, to score it as it was
                trained); missing ones are fitted on the train part, as the env fits them.
        """
        windows = {parse_interval(k).name: int(v) for k, v in timeframes.items()}
        if windows == self.timeframe_windows and scalers is None:
            return self
        if not windows:
            tfs: tuple[PreparedTimeframe, ...] = ()
        else:
            if self.prepared is None:
                raise ValueError(f"dataset {self.name!r}: multi-timeframe inputs need the "
                                 "data's preparation (build it with prepare_data)")
            tfs = (tuple(self._prepared_timeframe(name) for name in windows) if scalers is None
                   else self.prepared.with_timeframes(list(windows), scalers).timeframes)
        data = replace(self, timeframes=tfs, timeframe_windows=windows)
        datasets = _window_datasets(data.scaled, data.labels, data.elapsed(), data.splits,
                                    data.window, data.name, data.first_input_row,
                                    data.label_spec.task)
        return replace(data, **datasets)

    def _prepared_timeframe(self, name: str) -> PreparedTimeframe:
        """Timeframe ``name`` prepared with scalers fitted on the train part (as the env fits
        them), computed once per data (copies made by :meth:`with_timeframes` share it)."""
        if name not in self.timeframe_cache:
            assert self.prepared is not None
            (self.timeframe_cache[name],) = self.prepared.with_timeframes([name]).timeframes
        return self.timeframe_cache[name]

    def timeframe_scalers(self) -> dict[str, FeatureScaler]:
        """Timeframe name -> the scaler of its features (empty for Box inputs)."""
        return {tf.interval.name: tf.scaler for tf in self.timeframes}

    def timeframe_inputs(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The multi-timeframe windows at decision ``rows`` ``[N]``: timeframe name ->
        float32 ``[N, window_tf, F]`` (the env's dict observation without the account)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and rows.min() < self.first_input_row:
            raise ValueError(f"rows must be >= {self.first_input_row} (a full window of every "
                             f"timeframe), got {int(rows.min())}")
        return {
            tf.interval.name: tf.features.take(
                closed_window_rows(tf.last_closed, rows,
                                   self.timeframe_windows[tf.interval.name]), axis=0)
            for tf in self.timeframes
        }

    def env_split(self, part: PartName) -> PartName | tuple[pd.Timestamp, pd.Timestamp]:
        """The ``split`` argument of an env trading ``part`` of this data: the part's name
        with split fractions (the env cuts the same parts), the first and last timestamps of
        the env's part with walk-forward folds (the env has no folds of its own)."""
        if self.walk_forward is None or self.env_splits is None:
            return part
        rows = self.env_splits.part(part)
        if rows.size == 0:
            raise ValueError(f"the {part!r} part of fold {self.fold} is empty")
        return (self.index_at(int(rows[0])), self.index_at(int(rows[-1])))

    def index_at(self, row: int) -> pd.Timestamp:
        """Open time of feature row ``row``."""
        return pd.Timestamp(self.features.index[row])

    @property
    def n_features(self) -> int:
        """``F``, feature columns (the Box observation has ``F + 2`` columns)."""
        return int(self.features.shape[1])

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(map(str, self.features.columns))

    @property
    def bar_offset(self) -> int:
        """Position in :attr:`bars` of feature row 0 (the feature warm-up)."""
        return len(self.bars) - len(self.features)

    def dataset(self, part: PartName) -> WindowDataset:
        """The window dataset of ``part`` (``ValueError`` if that part is empty)."""
        if part not in PART_NAMES:
            raise ValueError(f"split must be one of {PART_NAMES}, got {part!r}")
        ds = getattr(self, part)
        if ds is None:
            raise ValueError(
                f"the {part!r} split is empty (split_fractions={self.split_fractions})"
            )
        return ds

    def decision_rows(self, part: PartName) -> np.ndarray:
        """Feature rows the env decides at in ``part``: the part's rows with a full window
        before them and a bar after them (``window - 1 <= t <= T - 2``), labelled or not.

        These are the rows a backtest of ``part`` trades on; for ``"test"`` they equal the
        decision rows of ``TradingEnv(..., split="test")`` on the same data and window.
        """
        rows = self.splits.part(part)
        if rows.size == 0:
            raise ValueError(
                f"the {part!r} split is empty (split_fractions={self.split_fractions})"
            )
        first = max(int(rows[0]), self.first_input_row)
        last = min(int(rows[-1]), len(self.features) - 2)
        if last < first:
            raise ValueError(f"the {part!r} split has no decision row with a full window")
        return np.arange(first, last + 1, dtype=np.int64)

    def windows(self, rows: np.ndarray) -> np.ndarray:
        """Scaled feature windows ``[N, window, F]`` float32 ending at feature ``rows`` ``[N]``."""
        values = self.scaled.to_numpy(dtype=np.float32)
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < self.window - 1 or rows.max() >= len(values)):
            raise ValueError(
                f"rows must be in [{self.window - 1}, {len(values) - 1}] (a full window), got "
                f"{int(rows.min())}..{int(rows.max())}"
            )
        offsets = np.arange(-self.window + 1, 1, dtype=np.int64)
        return values[rows[:, None] + offsets]

    def observation_space(self) -> spaces.Box | spaces.Dict:
        """The env's observation space for this data's inputs: Box ``[window, F + 2]``, or
        the dict of :attr:`timeframe_windows` and the account vector."""
        return observation_space(self.window, self.n_features, self.scaler.clip,
                                 self.timeframe_windows)

    @property
    def bar_seconds(self) -> float:
        """Nominal bar length in seconds (the liquid networks' default ``time_unit``)."""
        return nominal_seconds(self.interval)

    def elapsed(self) -> np.ndarray:
        """:attr:`dt_seconds`, or for data built by hand without them the seconds between the
        feature rows' open times (float32 ``[T]``)."""
        if self.dt_seconds is not None:
            return self.dt_seconds
        return elapsed_seconds(pd.DatetimeIndex(self.features.index), self.interval)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description (rows and timestamps of each part, class balance)."""
        out: dict[str, Any] = {
            "name": self.name,
            "bars": len(self.bars),
            "feature_rows": len(self.features),
            "n_features": self.n_features,
            "window": self.window,
            "embargo": self.splits.embargo,
            "label_spec": self.label_spec.to_dict(),
        }
        for part in PART_NAMES:
            ds = getattr(self, part)
            if ds is None:
                continue
            first, last = self.boundaries[part]
            out[part] = {
                "items": len(ds),
                "start": first.isoformat(),
                "end": last.isoformat(),
            }
            if self.label_spec.task != "volatility":
                out[part]["class_counts"] = ds.class_counts().tolist()
        return out


_TASK_HEADS = {"volatility": "one volatility forecast",
               "multi_horizon": "one 3-class head per horizon"}


def check_warm_start_task(task: str, what: str) -> None:
    """PPO warm start is defined for ``direction`` only (docs/tasks.md).

    Raises:
        ConfigError: ``task`` is another task; the message names ``what`` and says why.
    """
    if task != "direction":
        raise ConfigError(
            f"{what}: PPO warm start is defined for task 'direction' only, got task {task!r}. "
            "The warm-started policy's action head is the classifier's Linear(features_dim, 3) "
            "over sell, hold, buy, which are the env's actions; a "
            f"{task} model's head ({_TASK_HEADS.get(task, 'another output')}) is not an "
            "action distribution. Train PPO without a warm start, or warm-start it from a "
            "direction model")


def make_task_labels(bars: pd.DataFrame, spec: LabelSpec) -> pd.Series | pd.DataFrame:
    """The labels of ``spec.task`` on ``bars`` (``spec.cost_bps`` resolved to a number):
    float64 Series ``[T]`` of classes (``direction``) or of realised volatility per bar
    (``volatility``), or DataFrame ``[T, H]`` of classes, columns ``spec.horizon_names``
    (``multi_horizon``); NaN where a row has no complete horizon."""
    if spec.task == "volatility":
        return realised_volatility(bars, spec.horizon).rename("label")
    common = {"threshold": spec.threshold, "vol_k": spec.vol_k, "vol_window": spec.vol_window,
              "cost_bps": spec.cost_bps or 0.0}
    if spec.task == "multi_horizon":
        return make_multi_horizon_labels(bars, horizons=spec.horizons, **common)
    return make_labels(bars, horizon=spec.horizon, **common)


def observation_space(
    window: int,
    n_features: int,
    clip: float | None = 5.0,
    timeframes: Mapping[str, int] | None = None,
) -> spaces.Box | spaces.Dict:
    """The env's observation space, float32: Box ``[window, n_features + 2]``, or with
    ``timeframes`` (name -> window) the dict of ``[window_tf, n_features]`` windows plus
    ``"account"`` ``[4]``.

    Feature columns are bounded by the scaler's clip (unbounded without clipping), the
    account values are unbounded, as in :meth:`tradezoo.envs.market.Market.observation_space`.
    """
    from gymnasium import spaces

    bound = float("inf") if clip is None else float(clip)
    if timeframes:
        parts: dict[str, spaces.Space] = {
            name: spaces.Box(-bound, bound, (int(tf_window), n_features), np.float32)
            for name, tf_window in timeframes.items()
        }
        parts[ACCOUNT_KEY] = spaces.Box(-np.inf, np.inf, (N_ACCOUNT_FEATURES,), np.float32)
        return spaces.Dict(parts)
    low = np.full((window, n_features + N_ACCOUNT_COLUMNS), -np.inf, np.float32)
    low[:, :n_features] = -bound
    return spaces.Box(low=low, high=-low, dtype=np.float32)


def with_dt_space(space: spaces.Box | spaces.Dict) -> spaces.Dict:
    """``space`` as the envs' ``include_dt=True`` gives it: a Box window becomes the Dict of
    ``"window"`` (the Box) and ``"dt"`` ``[window]``; a Dict gains ``"dt_<key>"`` ``[window]``
    beside each window ``<key>`` (2-D entry). Elapsed seconds are unscaled, >= 0."""
    from gymnasium import spaces

    def dt_space(window: int) -> spaces.Box:
        return spaces.Box(0.0, np.inf, (window,), np.float32)

    if isinstance(space, spaces.Box):
        return spaces.Dict({WINDOW_KEY: space, DT_KEY: dt_space(int(space.shape[0]))})
    parts = dict(space.spaces)
    for key, sub in space.spaces.items():
        if len(sub.shape) == 2:
            parts[dt_key(key)] = dt_space(int(sub.shape[0]))
    return spaces.Dict(parts)


def flat_account_observation(x: torch.Tensor) -> torch.Tensor:
    """``[..., L, F]`` scaled features -> the env's Box layout ``[..., L, F + 2]``.

    The two account columns (position held, equity log-return) are 0: the observation of a
    flat account, which is what the env shows at the first decision of an episode.
    """
    import torch.nn.functional as functional

    return functional.pad(x, (0, N_ACCOUNT_COLUMNS))  # [..., L, F + 2]


def flat_account_vector(like: torch.Tensor) -> torch.Tensor:
    """The dict observation's account vector of a flat account, zeros ``[B, 4]`` on the
    device and dtype of ``like`` ``[B, ...]`` (exposure, unrealised P&L, bars in position and
    drawdown are all 0 at an episode's first decision)."""
    return like.new_zeros((like.shape[0], N_ACCOUNT_FEATURES))


# ------------------------------------------------------------------------------- building


def _with_zero_funding(data: DataSource) -> DataSource:
    """The validated bars of ``data`` with a ``funding_rate`` column of zeros when they have
    none (an instrument without funding pays none), named as ``data`` would be."""
    from tradezoo.data.prepare import dataset_name, load_source

    bars = load_source(data)
    if "funding_rate" in bars.columns:
        return data
    name = dataset_name(data, bars)
    funded = bars.assign(funding_rate=0.0)
    funded.attrs = {**bars.attrs, "dataset": name}
    return funded


def prepare_data(
    data: DataSource,
    *,
    window: int = 64,
    feature_spec: FeatureSpec | Mapping[str, Any] | None = None,
    label_spec: LabelSpec | Mapping[str, Any] | None = None,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    embargo: int | None = None,
    costs: CostModel | None = None,
    walk_forward: WalkForward | None = None,
    fold: int | None = None,
    zero_funding: bool = False,
) -> PreparedData:
    """Load, featurise, label, split and scale one dataset (see the module docstring).

    Args:
        data: a bundled dataset name (``"bybit-btcusdt-1h"``), a CSV/Parquet path, or a bars
            frame; everything goes through :func:`tradezoo.data.load_bars` (validation).
        window: bars per input window, >= 1 (the env's ``window``).
        feature_spec: :class:`FeatureSpec` or its dict; default ``FeatureSpec()``.
        label_spec: :class:`LabelSpec` or its dict; default ``LabelSpec()``.
        split_fractions: ``(train, val, test)`` fractions (the env's ``split_fractions``).
        embargo: rows between parts; default and minimum ``window + label_spec.label_horizon``.
        costs: cost model for the labels' ``cost_bps`` (and the later backtests); default
            :meth:`CostModel.for_source` of ``bars.attrs["source"]`` (a user file with another
            source must pass one).
        walk_forward, fold: take the parts from fold ``fold`` of these walk-forward folds
            instead of ``split_fractions`` (the scaler is fitted on that fold's train part).
        zero_funding: give bars without a ``funding_rate`` column one of zeros (features and
            bars), so the dataset shares its feature columns with perpetuals trained beside
            it (:mod:`tradezoo.agents.multi`).

    Returns:
        :class:`PreparedData`.

    Raises:
        TypeError, ValueError: a bad argument (the message names it and the rule), too little
            data for the window and splits.
        tradezoo.data.DataError: bars that fail validation or yield non-finite features.
    """

    if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}")
    window = int(window)
    fractions = check_split_fractions(split_fractions)
    spec = FeatureSpec.coerce(feature_spec)
    labels_cfg = coerce_config(LabelSpec, label_spec, "label_spec") or LabelSpec()
    if costs is not None and not isinstance(costs, CostModel):
        raise TypeError(f"costs must be a CostModel or None, got {type(costs).__name__}")
    if zero_funding:
        data = _with_zero_funding(data)
    if walk_forward is None:
        prepared = prepare(data, window=window, feature_spec=spec, split_fractions=fractions)
    else:
        prepared = prepare(data, window=window, feature_spec=spec, walk_forward=walk_forward,
                           fold=fold)
    name, bars, features = prepared.name, prepared.bars, prepared.features
    if costs is None:
        costs = CostModel.for_source(bars.attrs.get("source"), what=f"dataset {name!r}: source")
    cost_bps = (
        float(costs.one_way_cost_bps) if labels_cfg.cost_bps is None else labels_cfg.cost_bps
    )
    labels_cfg = LabelSpec(**{**labels_cfg.to_dict(), "cost_bps": float(cost_bps)})

    index = prepared.index
    horizon = labels_cfg.label_horizon
    try:
        splits = prepared.splits_for(horizon=horizon, embargo=embargo)
    except ValueError as exc:
        raise ValueError(
            f"dataset {name!r}: cannot split its {len(index)} feature rows with window={window} "
            f"and label horizon={horizon}: {exc}"
        ) from None
    scaler, scaled = prepared.scaler, prepared.scaled  # [T, F] float32 DataFrame

    labels = make_task_labels(bars, labels_cfg).reindex(index)
    # Seconds since the previous bar's open, from the open times (never the scaled column).
    dt = prepared.dt_seconds
    datasets = _window_datasets(scaled, labels, dt, splits, window, name, window - 1,
                                labels_cfg.task)
    boundaries = {part: (index[int(rows[0])], index[int(rows[-1])])
                  for part in PART_NAMES if (rows := splits.part(part)).size}
    assert datasets["train"] is not None  # time_splits requires train > 0
    return PreparedData(
        name=name,
        bars=bars,
        features=features,
        scaled=scaled,
        labels=labels,
        splits=splits,
        boundaries=boundaries,
        scaler=scaler,
        feature_spec=spec,
        label_spec=labels_cfg,
        costs=costs,
        window=window,
        split_fractions=fractions,
        walk_forward=prepared.walk_forward,
        fold=prepared.fold,
        env_splits=prepared.splits,
        prepared=prepared,
        **datasets,  # type: ignore[arg-type]
        dt_seconds=dt,
    )


def _window_datasets(scaled: pd.DataFrame, labels: pd.Series | pd.DataFrame,
                     dt: np.ndarray, splits: Splits, window: int, name: str,
                     first_row: int, task: str) -> dict[str, WindowDataset | None]:
    """``{"train", "val", "test"}`` window datasets of the label parts (``None`` for an empty
    part) for ``task``'s labels, their decision rows limited to ``first_row`` on (the first
    full input); ``dt`` float32 ``[T]``, unscaled seconds per feature row."""
    from tradezoo.data.windows import WindowDataset

    datasets: dict[str, WindowDataset | None] = {}
    for part in PART_NAMES:
        rows = splits.part(part)
        if rows.size == 0:
            datasets[part] = None
            continue
        try:
            datasets[part] = WindowDataset(
                scaled, labels.to_numpy(), window=window, dt=dt, indices=rows[rows >= first_row],
                target="regression" if task == "volatility" else "class",
            )
        except ValueError as exc:
            raise ValueError(
                f"dataset {name!r}: the {part!r} split ({rows.size} rows) has no usable "
                f"window of {window} bars with a label: {exc}"
            ) from None
    return datasets

