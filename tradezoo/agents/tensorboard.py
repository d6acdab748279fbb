"""A small TensorBoard writer shared by the supervised and the PPO trainers.

:class:`TBLogger` wraps :class:`torch.utils.tensorboard.SummaryWriter` with what the trainers
log: scalars (one or a dict under a prefix), images and matplotlib figures, a confusion-matrix
image, text, and hyperparameters written **into the same run directory** (``add_hparams``
would open a timestamped sub-run; the HParams plugin's summaries go through this writer
instead, so the hparams table links to the run's own scalars).

Tags used by the supervised trainer (:mod:`tradezoo.agents.supervised`):

- every ``log_every`` steps: ``train/loss``, ``train/lr``, ``train/grad_norm``,
  ``train/samples_per_s``;
- every epoch: ``train/epoch_loss``, ``train/accuracy``, ``val/loss``, ``val/accuracy``,
  ``val/macro_f1``, ``val/recall_sell``, ``val/recall_hold``, ``val/recall_buy`` and the
  image ``val/confusion_matrix``.

Read them back with ``tensorboard.backend.event_processing.event_accumulator
.EventAccumulator(log_dir).Reload().Tags()``; look at them with the command
:func:`tensorboard_command` prints.

matplotlib is used with the Agg backend (no display needed) and imported lazily, like
``tensorboard`` itself, so importing this module is cheap.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "TBLogger",
    "confusion_matrix_figure",
    "print_tensorboard_hint",
    "tensorboard_command",
]

CLASS_NAMES: tuple[str, str, str] = ("sell", "hold", "buy")


def tensorboard_command(log_dir: str | Path) -> str:
    """The shell command that shows ``log_dir`` in TensorBoard."""
    return f"tensorboard --logdir {Path(log_dir)}"


def print_tensorboard_hint(log_dir: str | Path, file: IO[str] | None = None) -> None:
    """Print where the logs are and how to look at them."""
    out = sys.stdout if file is None else file
    print(f"TensorBoard logs: {Path(log_dir)}", file=out)
    print(f"  view with: {tensorboard_command(log_dir)}", file=out)


def confusion_matrix_figure(
    matrix: np.ndarray | Sequence[Sequence[int]],
    class_names: Sequence[str] = CLASS_NAMES,
    *,
    title: str = "confusion matrix",
    normalize: bool = True,
) -> Figure:
    """A confusion-matrix heat map (rows: true class, columns: predicted class).

    Args:
        matrix: ``[K, K]`` counts, ``matrix[i, j]`` = items of class ``i`` predicted ``j``.
        class_names: ``K`` labels.
        title: figure title.
        normalize: colour by the row fraction (recall); cells show counts and fractions.

    Returns:
        A matplotlib ``Figure`` (Agg canvas; close it when done).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=np.float64)
    k = len(class_names)
    if counts.shape != (k, k):
        raise ValueError(
            f"confusion matrix must be [{k}, {k}] for classes {list(class_names)}, got shape "
            f"{counts.shape}"
        )
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    figure = Figure(figsize=(3.6, 3.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(fractions if normalize else counts, cmap="Blues", vmin=0.0,
                        vmax=1.0 if normalize else None)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(k), labels=list(class_names))
    axes.set_yticks(range(k), labels=list(class_names))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=9)
    for i in range(k):
        for j in range(k):
            colour = "white" if fractions[i, j] > 0.5 else "black"
            axes.text(j, i, f"{int(counts[i, j])}\n{fractions[i, j]:.0%}", ha="center",
                      va="center", fontsize=7, color=colour)
    figure.tight_layout()
    return figure


def _figure_rgb(figure: Figure) -> np.ndarray:
    """``[H, W, 3]`` uint8 pixels of a figure (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = figure.canvas
    if not isinstance(canvas, FigureCanvasAgg):
        canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def hparam_value(value: Any) -> bool | int | float | str:
    """HParams accept bool, int, float and str only; anything else is shown as text."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return "None" if value is None else str(value)


class TBLogger:
    """TensorBoard event writer for one run directory (see the module docstring).

    Args:
        log_dir: directory of the event files (created).
        enabled: ``False`` makes every method a no-op (nothing is written, tensorboard is not
            imported): tests and quick runs.
        flush_secs: how often pending events are flushed to disk.
    """

    def __init__(self, log_dir: str | Path, *, enabled: bool = True, flush_secs: int = 10) -> None:
        self.log_dir = Path(log_dir)
        self.enabled = bool(enabled)
        self._writer: Any = None
        if self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=flush_secs)

    # -- writing ----------------------------------------------------------------------------

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One scalar; non-finite values are written as they are (TensorBoard shows them)."""
        if self._writer is not None:
            self._writer.add_scalar(tag, float(value), global_step=int(step))

    def scalars(self, values: Mapping[str, float | None], step: int, prefix: str = "") -> None:
        """Each ``values[name]`` as ``prefix/name`` (``None`` entries are skipped)."""
        for name, value in values.items():
            if value is None:
                continue
            self.scalar(f"{prefix}/{name}" if prefix else name, float(value), step)

    def image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        """An ``[H, W, 3]`` uint8 image."""
        if self._writer is not None:
            self._writer.add_image(tag, rgb, global_step=int(step), dataformats="HWC")

    def figure(self, tag: str, figure: Figure, step: int, *, close: bool = True) -> None:
        """A matplotlib figure as an image (rendered with Agg)."""
        if self._writer is not None:
            self.image(tag, _figure_rgb(figure), step)
        if close:
            figure.clear()

    def confusion_matrix(
        self,
        tag: str,
        matrix: np.ndarray | Sequence[Sequence[int]],
        step: int,
        class_names: Sequence[str] = CLASS_NAMES,
        title: str | None = None,
    ) -> None:
        """The confusion-matrix image of :func:`confusion_matrix_figure`."""
        if self._writer is None:
            return
        figure = confusion_matrix_figure(matrix, class_names, title=title or f"{tag} @ {step}")
        self.figure(tag, figure, step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        if self._writer is not None:
            self._writer.add_text(tag, text, global_step=int(step))

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Hyperparameters and their final metrics in the HParams tab, in this run directory.

        ``hparams`` values other than bool/int/float/str are written as strings; ``metrics``
        are also written as scalars (tag = key) so the table has values to show.
        """
        if self._writer is None:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        clean = {str(k): hparam_value(v) for k, v in hparams.items()}
        finite = {
            str(k): float(v) for k, v in metrics.items()
            if v is not None and math.isfinite(float(v))
        }
        experiment, session_start, session_end = hparams_summary(clean, finite)
        file_writer = self._writer._get_file_writer()
        for summary in (experiment, session_start, session_end):
            file_writer.add_summary(summary)
        for key, value in finite.items():
            self._writer.add_scalar(key, value)

    # -- lifetime -------------------------------------------------------------------------

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def command(self) -> str:
        """``tensorboard --logdir <log_dir>``."""
        return tensorboard_command(self.log_dir)

    def __enter__(self) -> TBLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "enabled" if self.enabled else "disabled"
        return f"TBLogger({str(self.log_dir)!r}, {state})"
