"""Baselines for the comparison tables: LSTM, GRU, a causal Transformer and an MLP.

All four follow :class:`~tradezoo.policies.base.Backbone`: ``x [B, L, F] -> [B, d_model]``;
``dt`` is accepted and ignored (they assume uniform spacing).

``lstm`` (Hochreiter & Schmidhuber 1997; ``torch.nn.LSTM``), per layer and step::

    i, f, g, o = sigma(W_i x_t + U_i h_{t-1} + b_i), sigma(...), tanh(...), sigma(...)
    c_t = f * c_{t-1} + i * g          h_t = o * tanh(c_t)

``gru`` (Cho et al. 2014; ``torch.nn.GRU``)::

    r, z = sigma(W_r x_t + U_r h_{t-1}), sigma(W_z x_t + U_z h_{t-1})
    n = tanh(W_n x_t + r * (U_n h_{t-1}))      h_t = (1 - z) * n + z * h_{t-1}

Both emit the top layer's ``h_t`` for every step (``forward_sequence``, causal by
construction) and ``h_L`` as the window's vector.

``transformer`` (Vaswani et al. 2017, pre-norm as in Xiong et al. 2020)::

    e_t = W_in x_t + p_t                                  (input projection + positions)
    u = e + MHA(LN(e), causal mask)   e' = u + FF(LN(u))  (per layer; FF = GELU MLP)
    y_t = LN(e'_t)                    output = y_L (the newest bar's token)

Positions, ``positions="sinusoidal"`` (default): the fixed sin/cos table of Vaswani et al.
indexed from the oldest bar, computed for any ``L`` (no maximum); a prefix of a window gets
the same codes, so ``forward_sequence(x[:, :i+1])[:, -1] == forward_sequence(x)[:, i]``.
``positions="learned"``: a learned table of ``max_len`` rows indexed by the bar's **age**
(0 = newest bar), so the token the output is read from always gets row 0 whatever the window;
bars older than ``max_len - 1`` share the last row, so any ``L`` works.

The causal mask (position ``i`` attends to ``j <= i``) makes ``forward_sequence`` causal; the
output is the last token, which sees the whole window.

``mlp``: the flattened window ``[B, L * F]`` through ``n_layers`` Linear + GELU layers of
width ``hidden`` and a final Linear to ``d_model``. It needs a fixed window:
``MLPConfig.window`` (the extractor fills it from the observation space); any other ``L`` is a
``ValueError`` naming both numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from tradezoo.data.checks import FieldChecks
from tradezoo.policies.base import Backbone, BackboneConfig

__all__ = [
    "GRUBackbone",
    "GRUConfig",
    "LSTMBackbone",
    "LSTMConfig",
    "MLPBackbone",
    "MLPConfig",
    "TransformerBackbone",
    "TransformerConfig",
]


def _check_dropout(check: FieldChecks) -> None:
    check.number("dropout", 0.0, 1.0, open_high=True, rule="in [0, 1)")


# -- recurrent baselines ------------------------------------------------------------------


@dataclass
class LSTMConfig(BackboneConfig):
    """``lstm``: ``d_model`` hidden units per layer.

    Attributes:
        n_layers: stacked LSTM layers.
        dropout: dropout between stacked layers (PyTorch's ``nn.LSTM`` semantics; unused when
            ``n_layers == 1``).
    """

    n_layers: int = 1
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_dropout(FieldChecks(self))


@dataclass
class GRUConfig(LSTMConfig):
    """``gru``: same fields as :class:`LSTMConfig`."""


class _RNNBackbone(Backbone):
    """Shared body of the LSTM and GRU baselines."""

    emits_sequence: ClassVar[bool] = True
    rnn_cls: ClassVar[type[nn.RNNBase]] = nn.LSTM

    def __init__(self, n_features: int, config: LSTMConfig) -> None:
        super().__init__(n_features, config)
        self.rnn = self.rnn_cls(
            input_size=self.n_features,
            hidden_size=self.d_model,
            num_layers=config.n_layers,
            dropout=config.dropout if config.n_layers > 1 else 0.0,
            batch_first=True,
        )

    def forward_sequence(self, x: Tensor, dt: Tensor | None = None) -> Tensor:
        """``[B, L, F] -> [B, L, d_model]``: the top layer's hidden state at every step."""
        self.check_input(x, dt)
        out, _ = self.rnn(x)  # [B, L, D]
        return out

    def forward(self, x: Tensor, dt: Tensor | None = None) -> Tensor:
        """``[B, L, F] -> [B, d_model]``: the top layer's last hidden state."""
        return self.forward_sequence(x, dt)[:, -1]  # [B, D]

    @torch.no_grad()
    def explain(self, x: Tensor, dt: Tensor | None = None) -> dict[str, Tensor]:
        """``hidden_norm`` ``[B, L]``: L2 norm of the top layer's hidden state per step."""
        return {"hidden_norm": self.forward_sequence(x, dt).norm(dim=-1).detach()}


class LSTMBackbone(_RNNBackbone):
    """LSTM baseline (``torch.nn.LSTM``, batch first)."""

    name: ClassVar[str] = "lstm"
    config_cls: ClassVar[type[BackboneConfig]] = LSTMConfig
    rnn_cls: ClassVar[type[nn.RNNBase]] = nn.LSTM


class GRUBackbone(_RNNBackbone):
    """GRU baseline (``torch.nn.GRU``, batch first)."""

    name: ClassVar[str] = "gru"
    config_cls: ClassVar[type[BackboneConfig]] = GRUConfig
    rnn_cls: ClassVar[type[nn.RNNBase]] = nn.GRU


# -- transformer --------------------------------------------------------------------------


@dataclass
class TransformerConfig(BackboneConfig):
    """``transformer``: causal pre-norm encoder read at the newest bar.

    Attributes:
        n_heads: attention heads (must divide ``d_model``).
        n_layers: encoder layers.
        ff_mult: feed-forward width as a multiple of ``d_model``.
        dropout: dropout in attention and feed-forward (0 suits RL).
        positions: ``"sinusoidal"`` (fixed, indexed from the oldest bar) or ``"learned"``
            (a table indexed by age, newest bar = 0); both take any window length.
        max_len: rows of the learned table (ages beyond share the last row); with sinusoidal
            positions, the length of the precomputed table (longer windows still work).
    """

    n_heads: int = 4
    n_layers: int = 2
    ff_mult: int = 2
    dropout: float = 0.0
    positions: Literal["sinusoidal", "learned"] = "sinusoidal"
    max_len: int = 512

    def __post_init__(self) -> None:
        super().__post_init__()
        check = FieldChecks(self)
        _check_dropout(check)
        check.require(self.d_model % self.n_heads == 0,
                      f"n_heads={self.n_heads} must divide d_model={self.d_model}")
        check.choice("positions", ("sinusoidal", "learned"), rule="'sinusoidal' or 'learned'")


def sinusoidal_positions(length: int, d_model: int, device: torch.device,
                         dtype: torch.dtype) -> Tensor:
    """Vaswani et al.'s table ``[length, d_model]``: ``sin(p / 10000^(2i/d))`` on even
    columns and ``cos`` on odd ones (an odd ``d_model`` drops the last cosine column)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]  # [L, 1]
    freq = torch.exp(
        torch.arange(0, d_model, 2, device=device, dtype=torch.float32)
        * (-math.log(10000.0) / d_model)
    )  # [ceil(D/2)]
    angle = position * freq  # [L, ceil(D/2)]
    table = torch.zeros(length, d_model, device=device, dtype=torch.float32)  # [L, D]
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return table.to(dtype)


class TransformerBackbone(Backbone):
    """Causal pre-norm ``nn.TransformerEncoder``; the output is the newest bar's token."""

    name: ClassVar[str] = "transformer"
    config_cls: ClassVar[type[BackboneConfig]] = TransformerConfig
    emits_sequence: ClassVar[bool] = True

    def __init__(self, n_features: int, config: TransformerConfig) -> None:
        super().__init__(n_features, config)
        d = self.d_model
        self.input_proj = nn.Linear(self.n_features, d)
        self.pos_embedding: nn.Parameter | None = None
        # The fixed table for the first max_len positions, computed once (the policy re-encodes
        # the window every env step); longer windows compute theirs on the fly. Not saved.
        self.register_buffer(
            "sinusoid_table",
            sinusoidal_positions(config.max_len, d, torch.device("cpu"), torch.float32),
            persistent=False,
        )
        if config.positions == "learned":
            # Small init (as GPT-2's wpe) so positions do not swamp the projected inputs.
            self.pos_embedding = nn.Parameter(torch.randn(config.max_len, d) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model=d,
            nhead=config.n_heads,
            dim_feedforward=config.ff_mult * d,
            dropout=config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # Nested tensors only help with padding masks; we never pass one.
        self.encoder = nn.TransformerEncoder(
            layer, num_layers=config.n_layers, norm=nn.LayerNorm(d), enable_nested_tensor=False
        )

    def _embed(self, x: Tensor) -> Tensor:
        length = x.shape[1]
        h = self.input_proj(x)  # [B, L, D]
        if self.pos_embedding is None:
            table = self.sinusoid_table  # [max_len, D]
            if length > table.shape[0]:
                table = sinusoidal_positions(length, self.d_model, x.device, torch.float32)
            return h + table[:length].to(h.dtype)  # [B, L, D]
        age = torch.arange(length - 1, -1, -1, device=x.device)  # [L]: newest bar = 0
        age = age.clamp(max=self.pos_embedding.shape[0] - 1)
        return h + self.pos_embedding[age]  # [B, L, D]

    @staticmethod
    def _causal_mask(length: int, x: Tensor) -> Tensor:
        """Additive mask ``[L, L]``: ``-inf`` above the diagonal (future positions)."""
        return nn.Transformer.generate_square_subsequent_mask(length, device=x.device,
                                                              dtype=x.dtype)

    def forward_sequence(self, x: Tensor, dt: Tensor | None = None) -> Tensor:
        """``[B, L, F] -> [B, L, d_model]``, position ``i`` attending to ``<= i`` only."""
        self.check_input(x, dt)
        h = self._embed(x)  # [B, L, D]
        mask = self._causal_mask(x.shape[1], h)  # [L, L]
        return self.encoder(h, mask=mask, is_causal=True)  # [B, L, D]

    def forward(self, x: Tensor, dt: Tensor | None = None) -> Tensor:
        """``[B, L, F] -> [B, d_model]``: the newest bar's token.

        Equal to ``forward_sequence(x)[:, -1]``, but the last layer runs for the newest token
        only (its query sees the whole window, so it needs no mask): about half that layer's
        work, which matters when a policy re-encodes the window at every env step.
        """
        self.check_input(x, dt)
        h = self._embed(x)  # [B, L, D]
        layers = self.encoder.layers
        if len(layers) > 1:
            mask = self._causal_mask(x.shape[1], h)  # [L, L]
            for layer in layers[:-1]:
                h = layer(h, src_mask=mask, is_causal=True)  # [B, L, D]
        last = layers[-1]
        kv = last.norm1(h)  # [B, L, D]
        attended = last.self_attn(kv[:, -1:], kv, kv, need_weights=False)[0]  # [B, 1, D]
        u = h[:, -1:] + last.dropout1(attended)  # [B, 1, D]
        ff = last.linear2(last.dropout(last.activation(last.linear1(last.norm2(u)))))
        u = u + last.dropout2(ff)  # [B, 1, D]
        return self.encoder.norm(u)[:, 0]  # [B, D]

    @torch.no_grad()
    def explain(self, x: Tensor, dt: Tensor | None = None) -> dict[str, Tensor]:
        """``attention`` ``[B, n_layers, L]``: each layer's attention of the newest bar's
        token over the window (averaged over heads; rows sum to 1)."""
        self.check_input(x, dt)
        h = self._embed(x)  # [B, L, D]
        mask = self._causal_mask(x.shape[1], h)  # [L, L]
        maps = []
        for layer in self.encoder.layers:
            normed = layer.norm1(h)  # [B, L, D]
            _, weights = layer.self_attn(
                normed, normed, normed, attn_mask=mask, need_weights=True,
                average_attn_weights=True,
            )  # weights: [B, L, L]
            maps.append(weights[:, -1])  # [B, L]
            h = layer(h, src_mask=mask, is_causal=True)  # [B, L, D]
        return {"attention": torch.stack(maps, dim=1).detach()}  # [B, n_layers, L]


# -- MLP ----------------------------------------------------------------------------------


@dataclass
class MLPConfig(BackboneConfig):
    """``mlp`` over the flattened window.

    Attributes:
        window: the fixed number of bars (required; the SB3 extractor fills it from the
            observation space).
        hidden: width of the hidden layers.
        n_layers: hidden Linear + GELU layers before the output Linear (>= 1).
        dropout: dropout after each hidden layer.
    """

    window: int | None = None
    hidden: int = 128
    n_layers: int = 2
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check = FieldChecks(self)
        _check_dropout(check)
        check.integer("window", 1, optional=True, rule="a positive integer")


class MLPBackbone(Backbone):
    """MLP over the flattened window ``[B, window * F]``; needs ``config.window``."""

    name: ClassVar[str] = "mlp"
    config_cls: ClassVar[type[BackboneConfig]] = MLPConfig

    def __init__(self, n_features: int, config: MLPConfig) -> None:
        super().__init__(n_features, config)
        if config.window is None:
            raise ValueError(
                "architecture 'mlp' needs a fixed window: set MLPConfig.window (bars); the SB3 "
                "SequenceExtractor fills it from the observation space"
            )
        self.window = int(config.window)
        layers: list[nn.Module] = []
        width = self.window * self.n_features
        for _ in range(config.n_layers):
            layers += [nn.Linear(width, config.hidden), nn.GELU()]
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            width = config.hidden
        layers.append(nn.Linear(width, self.d_model))
        self.net = nn.Sequential(*layers)

    @classmethod
    def min_window(cls, config: BackboneConfig) -> int:
        window = getattr(config, "window", None)
        return 1 if window is None else int(window)

    @classmethod
    def check_window(cls, config: BackboneConfig, window: int) -> None:
        """The MLP takes exactly ``config.window`` bars: its first layer is sized for them."""
        need = getattr(config, "window", None)
        if need is not None and window != need:
            raise ValueError(
                f"architecture 'mlp' takes exactly window={need} bars (MLPConfig.window), "
                f"got window={window}"
            )

    def forward(self, x: Tensor, dt: Tensor | None = None) -> Tensor:
        """``[B, window, F] -> [B, d_model]``."""
        self.check_input(x, dt)
        return self.net(x.flatten(1))  # [B, D]

    @torch.no_grad()
    def explain(self, x: Tensor, dt: Tensor | None = None) -> dict[str, Tensor]:
        """``lag_contribution`` ``[B, L]``: norm of the first layer's pre-activation
        contribution ``||W[:, bar l] x_l||`` of each bar (which lags the MLP listens to)."""
        self.check_input(x, dt)
        first = self.net[0]
        assert isinstance(first, nn.Linear)
        weight = first.weight.view(first.out_features, self.window, self.n_features)  # [H, L, F]
        contribution = torch.einsum("hlf,blf->blh", weight, x)  # [B, L, H]
        return {"lag_contribution": contribution.norm(dim=-1).detach()}  # [B, L]
