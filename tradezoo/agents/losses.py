"""Training objectives of the supervised trainer beyond plain cross-entropy.

:attr:`SupervisedConfig.loss <tradezoo.agents.supervised.SupervisedConfig>` names one of
:data:`LOSSES`: a classification term (``ce``, ``focal``, ``scale_aware``, ``multi_horizon``),
the differentiable Sharpe term alone (``sharpe``), or a classification term plus
``sharpe_weight`` times the Sharpe term (``ce+sharpe``, ...). docs/training.md ("Losses")
gives the formulas, conventions and references; this module holds the tensor functions.

**Position.** A classifier's expected exposure: with class probabilities
``p = softmax(logits)`` in the label order (0 sell, 1 hold, 2 buy)::

    position = p_buy - p_sell            # in [-1, 1], the env's target scheme with L = 1

**Sharpe term.** For chunks of consecutive decisions ``[K, C]`` (time order along ``C``),
``r_t`` the next bar's return as the backtest books it (filled at ``open[t+1]``, held to
``open[t+2]``: :func:`tradezoo.data.labels.forward_returns` with horizon 1) and ``c`` the
one-way cost as a fraction (a multi-horizon model's position is its horizons' mean, the
rule it is backtested with)::

    net_t = position_t * r_t - c * |position_t - position_{t-1}|      t = 1 .. C-1
    loss  = -mean(net) / sqrt(var(net) + eps)                         (over all K (C-1) terms)

``var`` is the population variance (no Bessel correction); the Sharpe is per bar, not
annualised. A chunk's first decision only provides ``position_0`` for the turnover of the
next one, and a term whose decision does not follow its predecessor by exactly one bar (a
gap in the labelled rows) is left out, as is one with a non-finite return.

References: Moody & Saffell, "Learning to trade via direct reinforcement", IEEE Trans. Neural
Networks 12(4), 2001 (Sharpe ratio as a differentiable training objective with transaction
costs on position changes); Zhang, Zohren & Roberts, "Deep learning for portfolio
optimization", J. Financial Data Science 2(4), 2020 (negative Sharpe over a batch of model
positions as the loss).

**Multi-horizon term.** Cross-entropy averaged over the horizon heads of multi-horizon labels
(``LabelSpec.task="multi_horizon"``); it is what ``ce`` trains on that task, and naming it
makes a config that expects several horizons fail on single-horizon labels.

**Scale-aware term.** Cross-entropy in which each decision counts in proportion to the size
of the move its label judges, ``|forward return over the label horizon|``, in units of the
train split's mean absolute move and capped (:func:`magnitude_weights`), following the
return-attribution sample weights of M. Lopez de Prado, *Advances in Financial Machine
Learning* (Wiley, 2018), section 4.6.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "CLASSIFICATION_LOSSES",
    "LOSSES",
    "SHARPE_EPS",
    "classification_term",
    "expected_position",
    "has_sharpe_term",
    "magnitude_weights",
    "sharpe_loss",
]

CLASSIFICATION_LOSSES: tuple[str, ...] = ("ce", "focal", "scale_aware", "multi_horizon")
"""The classification terms a loss can start with (``multi_horizon``: cross-entropy averaged
over the horizon heads of multi-horizon labels, ``LabelSpec.task="multi_horizon"``)."""

LOSSES: tuple[str, ...] = (
    *CLASSIFICATION_LOSSES, "sharpe", *(f"{name}+sharpe" for name in CLASSIFICATION_LOSSES)
)
"""Valid values of ``SupervisedConfig.loss``."""

SHARPE_EPS = 1e-12
"""Added to the variance of the net per-bar returns (returns are fractions, so a per-bar
standard deviation of 1e-6 is already far below any real strategy's)."""


def classification_term(loss: str) -> str | None:
    """The classification term of ``loss`` (``"ce"``, ``"focal"``, ``"scale_aware"``), or
    ``None`` for the Sharpe term alone."""
    head = loss.split("+", 1)[0]
    return head if head in CLASSIFICATION_LOSSES else None


def has_sharpe_term(loss: str) -> bool:
    """Whether ``loss`` has the Sharpe term."""
    return loss == "sharpe" or loss.endswith("+sharpe")


def expected_position(logits: Tensor) -> Tensor:
    """``logits [..., 3]`` (sell, hold, buy) -> expected exposure ``P(buy) - P(sell)`` ``[...]``
    in ``[-1, 1]``, computed in float32."""
    probabilities = torch.softmax(logits.float(), dim=-1)
    return probabilities[..., 2] - probabilities[..., 0]


def sharpe_loss(position: Tensor, next_return: Tensor, follows: Tensor, cost: float,
                eps: float = SHARPE_EPS) -> Tensor:
    """Negative per-bar Sharpe ratio of the positions' net returns (module docstring).

    Args:
        position: ``[K, C]`` exposures, each row ``C`` consecutive decisions in time order.
        next_return: ``[K, C]`` return of each decision's next bar (a fraction).
        follows: ``[K, C]`` bool, the decision comes exactly one bar after the one before it
            in its row (the first column is not read).
        cost: one-way cost as a fraction of the traded notional (``cost_bps / 1e4``), >= 0.
        eps: added to the variance.

    Returns:
        0-dim float32 loss; 0 (with a gradient of zeros) when no term is valid. Nothing is
        read back from the device.
    """
    position = position.float()
    turnover = (position[:, 1:] - position[:, :-1]).abs()  # [K, C-1]
    returns = next_return[:, 1:].float()
    valid = follows[:, 1:] & torch.isfinite(returns)  # [K, C-1]
    net = position[:, 1:] * torch.where(valid, returns, 0.0) - cost * turnover
    weight = valid.float()
    n = weight.sum().clamp_min(1.0)  # no valid term: mean and variance 0, so the loss is 0
    mean = (net * weight).sum() / n
    var = (((net - mean) ** 2) * weight).sum() / n
    return -mean / torch.sqrt(var + eps)


def magnitude_weights(abs_move: Tensor, scale: float | Tensor, cap: float) -> Tensor:
    """Scale-aware sample weights ``min(|move| / scale, cap)`` (0 for a NaN move).

    Args:
        abs_move: ``[B]`` absolute forward return over the label horizon (``[B, H]``: one
            column per horizon).
        scale: the train split's mean absolute forward return (> 0), ``[]`` or ``[H]``.
        cap: the largest weight, > 0 (bounds the pull of a few extreme bars).

    Returns:
        float32 weights, the shape of ``abs_move``.
    """
    weights = (abs_move.float() / scale).clamp(max=cap)
    return torch.nan_to_num(weights, nan=0.0)
