"""The supervised model: a zoo architecture's extractor and a task head on the env's observation,
warm-startable into SB3 PPO (:class:`SupervisedModel`, :func:`model_from_checkpoint`).

Model (:class:`SupervisedModel`)::

    obs [B, window, F + 2]  -> SequenceExtractor(Box(window, F + 2), arch, features_dim, **cfg)
                            -> [B, features_dim] -> head = Linear(features_dim, 3) -> logits

The input is the env's Box observation layout (:mod:`tradezoo.envs.market`): the scaled
features plus the two account columns (position held, equity log-return), which are **0** in
training (a flat account: the observation the env shows at an episode's first decision;
:func:`~tradezoo.agents.data.flat_account_observation`). The classes are 0 sell, 1 hold, 2 buy:
the env's action order. So the classifier runs unchanged on env observations, and its weights
map one to one onto an SB3 ``ActorCriticPolicy`` built with ``features_extractor_class=
SequenceExtractor`` (same ``arch``, ``features_dim`` and config, ``share_features_extractor=
True``) and ``net_arch=dict(pi=[], vf=[64])``::

    policy.features_extractor.load_state_dict(model.extractor.state_dict())
    policy.action_net.load_state_dict(model.head.state_dict())     # Linear(features_dim, 3)

after which the policy's deterministic action is the classifier's argmax on every
observation (the PPO trainer tests this). A model whose backbone takes timeframes as its
scales (``msa`` on intraday bars) takes the env's dict observation instead: the last
``window`` closed bars of each timeframe and a zero account vector ``[4]``
(:meth:`~tradezoo.agents.data.PreparedData.for_model`, cut by the env's own rule), and its
policy is built on the dict env of the same timeframes. During PPO the account values are no
longer 0; the classifier never saw them, which is what fine-tuning is for.

Elapsed time: for an architecture whose backbone uses ``dt`` (``ltc``, ``cfc``;
:func:`~tradezoo.policies.registry.uses_dt`) the observation is the env's ``include_dt=True``
one, a Dict of ``"window"`` ``[B, window, F + 2]`` and ``"dt"`` ``[B, window]`` (seconds since
the previous bar's open, unscaled, :attr:`~tradezoo.agents.data.PreparedData.dt_seconds`),
and the extractor hands ``dt`` to the backbone; ``time_unit`` defaults to the data's bar interval
(:func:`~tradezoo.policies.registry.with_time_unit`, saved in the checkpoint's
``arch_config``). Batches get them beside each window, as the env does, from
:class:`~tradezoo.agents.supervised_inputs.ModelInputs`, the one builder of supervised
observations (multi-timeframe windows too).
The checkpoint records ``include_dt`` (absent: ``False``, a model that never saw ``dt``).

Tasks (:attr:`~tradezoo.agents.data.LabelSpec.task`, docs/tasks.md): every architecture
learns every task through the same extractor and a task head on its ``[B, features_dim]``
output: ``direction`` (the classifier above), ``volatility`` (one output, the log realised
volatility per bar in units of the train split's mean and std; MSE on the log) and
``multi_horizon`` (one 3-class head per horizon, output ``[B, H, 3]``; the horizons' losses,
each the direction loss, averaged). Only a ``direction`` model maps onto a PPO policy.

Auxiliary heads (every architecture): when ``SupervisedConfig.aux_horizons`` is set, the model
adds ``aux = Heads(d_model, horizons)`` on the backbone output ``[B, d_model]``, ``Heads``
being the class the architecture's registry entry names (its ``aux_heads``, listed in
:data:`~tradezoo.policies.registry.AUX_HEADS`: ``MambaTSHeads``, ``MSAHeads``) or
:class:`AuxHeads`, built as ``Heads(d_model, horizons=("h4", "h24", ...), regression=True)``
(the interface of :class:`tradezoo.policies.msa.MSAHeads`); its ``forward`` returns a dict
with ``"regression"`` ``[B, H]`` (trained on the forward returns over each horizon, in units of
their train-split std: MSE) and the direction logits of "the price rises over the horizon"
(one ``[B]`` entry per horizon name, or ``"direction"`` ``[B, H]``; BCE with logits). Other
outputs (the heads' own class logits) are not trained: :attr:`SupervisedModel.head` is the
task head. Their loss is added with weight ``aux_weight``. A registered class with another
constructor trains without them and a warning says so. The auxiliary heads are not part of
the PPO policy.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

import torch
import torch.nn.functional as functional
from torch import Tensor, nn

from tradezoo.agents.checkpoint import (
    CheckpointError,
    check_payload,
    checkpoint_dataset_names,
    input_timeframes,
    load_checkpoint,
    load_weights,
    saved_arch_config,
)
from tradezoo.agents.data import TASKS, LabelSpec, observation_space, with_dt_space
from tradezoo.agents.supervised_inputs import flat_observation, with_dt_observation
from tradezoo.agents.supervised_reports import N_CLASSES
from tradezoo.data.checks import check_choice
from tradezoo.data.elapsed import WINDOW_KEY
from tradezoo.errors import ConfigError
from tradezoo.policies.extractor import SequenceExtractor
from tradezoo.policies.registry import get_architecture, portable_config, uses_dt

__all__ = [
    "AuxHeads",
    "SupervisedModel",
    "aux_heads_class",
    "model_from_checkpoint",
    "task_output_width",
]


class AuxHeads(nn.Module):
    """The auxiliary heads of an architecture whose registry entry names none: per horizon,
    a linear forward-return regression and a linear "the price rises" logit on the backbone
    output.

    ``AuxHeads(d_model, horizons=("h4", "h24"), regression=True)``; ``forward(z [B, d_model])``
    returns ``{"regression": [B, H], "direction": [B, H]}`` (module docstring).
    """

    def __init__(self, d_model: int, horizons: Sequence[str], regression: bool = True) -> None:
        super().__init__()
        self.horizons = tuple(horizons)
        self.direction = nn.Linear(d_model, len(self.horizons))
        self.regressor = nn.Linear(d_model, len(self.horizons)) if regression else None

    def forward(self, z: Tensor) -> dict[str, Tensor]:
        """``z [B, d_model]`` -> ``{"direction": [B, H], "regression": [B, H]}`` (logits and
        standardised forward returns)."""
        out = {"direction": self.direction(z)}
        if self.regressor is not None:
            out["regression"] = self.regressor(z)
        return out


def aux_heads_class(arch: str) -> type[nn.Module]:
    """The auxiliary-heads class of ``arch``: its registry entry's (``MambaTSHeads``,
    ``MSAHeads``) or :class:`AuxHeads` (see the module docstring)."""
    return get_architecture(arch).aux_heads_cls or AuxHeads


def task_output_width(task: str, n_horizons: int) -> int:
    """Outputs of the task head: 3 class logits (``direction``), 1 log-volatility
    (``volatility``), 3 logits per horizon (``multi_horizon``)."""
    return {"direction": N_CLASSES, "volatility": 1,
            "multi_horizon": N_CLASSES * n_horizons}[task]


class SupervisedModel(nn.Module):
    """Zoo backbone + task head on the env's Box observation (see the module docstring).

    Args:
        arch: a registry name (:data:`~tradezoo.policies.registry.ARCHITECTURES`).
        n_features: ``F``, scaled feature columns (the observation has ``F + 2``).
        window: bars per observation.
        features_dim: extractor output width (the PPO policy's ``features_dim``).
        clip: the scaler's clip (bounds of the observation space, as the env's).
        aux_horizons: horizons of the optional auxiliary heads (``()``: none).
        task: what the head predicts (:attr:`~tradezoo.agents.data.LabelSpec.task`).
        horizons: the horizons (bars) of a ``multi_horizon`` head, one 3-class head each.
        asset_names: the datasets the model is trained on (its assets, in order).
        asset_embedding: learn a vector ``[F]`` per asset of ``asset_names``, added to the
            feature columns of every row of the input (:meth:`forward`'s ``asset``).
        arch_config: the architecture's config fields as a dict (use it for a field whose
            name clashes with an argument here, e.g. ``mlp``'s ``window``).
        timeframes: timeframe name -> bars per window of a multi-timeframe model (it then
            takes the env's dict observation; :func:`~tradezoo.agents.data.model_timeframes`);
            ``None`` or empty: the Box observation.
        include_dt: the observation carries each window's elapsed seconds (the envs'
            ``include_dt=True``; module docstring); ``None``: whether the architecture uses
            ``dt``.
        **cfg: more config fields (``d_model``, ``n_layers``, ...); they override
            ``arch_config``.

    Attributes:
        extractor: the :class:`~tradezoo.policies.extractor.SequenceExtractor`.
        head: the task head: ``Linear(features_dim, 3)``, logits of sell, hold, buy
            (``direction``); ``Linear(features_dim, 1)``, the standardised log volatility
            (``volatility``); ``Linear(features_dim, 3 H)``, the ``H`` heads' logits
            (``multi_horizon``).
        target_loc, target_scale: buffers of a ``volatility`` model: the train split's mean
            and std of the log realised volatility the head's output is in units of.
        aux: the auxiliary heads or ``None``.
        assets: ``Embedding(len(asset_names), F)`` (zero-initialised) or ``None``.
    """

    def __init__(
        self,
        arch: str,
        n_features: int,
        window: int,
        *,
        features_dim: int = 64,
        clip: float | None = 5.0,
        aux_horizons: Sequence[int] = (),
        task: str = "direction",
        horizons: Sequence[int] = (),
        asset_names: Sequence[str] = (),
        asset_embedding: bool = False,
        arch_config: Mapping[str, Any] | None = None,
        timeframes: Mapping[str, int] | None = None,
        include_dt: bool | None = None,
        **cfg: Any,
    ) -> None:
        super().__init__()
        self.task = check_choice("task", task, TASKS)
        self.horizons: tuple[int, ...] = tuple(int(h) for h in horizons)
        if task == "multi_horizon" and not self.horizons:
            raise ConfigError("horizons must name the horizons of a multi_horizon model, got ()")
        cfg = {**dict(arch_config or {}), **cfg}
        self.arch = arch
        self.n_features = int(n_features)
        self.window = int(window)
        self.features_dim = int(features_dim)
        self.timeframes: dict[str, int] = {str(k): int(v) for k, v in (timeframes or {}).items()}
        space = observation_space(self.window, self.n_features, clip, self.timeframes)
        self.include_dt = uses_dt(arch) if include_dt is None else bool(include_dt)
        if self.include_dt:
            space = with_dt_space(space)
        self.observation_space = space
        self.extractor = SequenceExtractor(space, arch=arch, features_dim=features_dim, **cfg)
        self.head = nn.Linear(self.features_dim, task_output_width(task, len(self.horizons)))
        if task == "volatility":
            self.register_buffer("target_loc", torch.zeros(()))
            self.register_buffer("target_scale", torch.ones(()))
        self.asset_names: tuple[str, ...] = tuple(str(n) for n in asset_names)
        self.assets: nn.Embedding | None = None
        if asset_embedding:
            if not self.asset_names:
                raise ValueError("asset_embedding needs the asset names (asset_names)")
            # Zero at the start: the shared model first sees every asset alike and the
            # vectors move apart only as far as the loss asks.
            self.assets = nn.Embedding(len(self.asset_names), self.n_features)
            nn.init.zeros_(self.assets.weight)
        self.aux_horizons: tuple[int, ...] = tuple(int(h) for h in aux_horizons)
        self.aux: nn.Module | None = None
        if self.aux_horizons:
            heads_cls = aux_heads_class(arch)
            try:
                self.aux = heads_cls(
                    self.backbone.d_model, horizons=self.aux_names, regression=True
                )
            except TypeError as exc:
                warnings.warn(
                    f"{heads_cls.__name__} of architecture {arch!r} does not take "
                    f"(d_model, horizons=..., regression=True) ({exc}); aux_horizons "
                    "ignored",
                    stacklevel=2,
                )
                self.aux_horizons = ()

    @property
    def aux_names(self) -> tuple[str, ...]:
        """Names of the auxiliary horizons: ``"h<bars>"``."""
        return tuple(f"h{h}" for h in self.aux_horizons)

    @property
    def backbone(self) -> nn.Module:
        assert self.extractor.backbone is not None
        return self.extractor.backbone

    def backbone_config(self) -> dict[str, Any]:
        """The backbone's full config as constructor keywords (``init`` fields only)."""
        config = self.extractor.backbone.config  # type: ignore[union-attr]
        return {f.name: getattr(config, f.name) for f in fields(config) if f.init}

    @property
    def horizon_names(self) -> tuple[str, ...]:
        """Names of a ``multi_horizon`` model's heads: ``"h<bars>"``."""
        return tuple(f"h{h}" for h in self.horizons)

    def set_target_scale(self, loc: float, scale: float) -> None:
        """Set a ``volatility`` model's output units: log volatility = ``loc + scale * head``."""
        self.target_loc.fill_(float(loc))  # type: ignore[operator]
        self.target_scale.fill_(float(scale))  # type: ignore[operator]

    def _task_output(self, features: Tensor) -> Tensor:
        """Extractor output ``[B, features_dim]`` -> the task's output (:meth:`forward`)."""
        out = self.head(features)
        if self.task == "volatility":
            return self.target_loc + self.target_scale * out[:, 0]  # [B] log volatility
        if self.task == "multi_horizon":
            return out.reshape(out.shape[0], len(self.horizons), N_CLASSES)  # [B, H, 3]
        return out  # [B, 3]

    def with_asset(self, obs: Tensor | Mapping[str, Tensor], asset: Tensor | None
                   ) -> Tensor | Mapping[str, Tensor]:
        """``obs [B, window, F + 2]`` (or its dict with elapsed times, the window under
        ``"window"``) plus the asset vectors of ``asset [B]`` (int64 ids into
        :attr:`asset_names`) on the feature columns; ``obs`` itself without an embedding.

        Raises:
            ValueError: an embedding and no ``asset``, or a multi-timeframe observation.
        """
        if self.assets is None:
            return obs
        box = obs.get(WINDOW_KEY) if isinstance(obs, Mapping) else obs
        if asset is None or not isinstance(box, Tensor):
            raise ValueError(f"this model has an asset embedding: pass the asset ids of the "
                             f"batch with Box observations (assets {list(self.asset_names)})")
        vectors = functional.pad(self.assets(asset), (0, box.shape[-1] - self.n_features))
        moved = box + vectors[:, None, :].to(box.dtype)  # [B, 1, F + 2] over the window
        return {**obs, WINDOW_KEY: moved} if isinstance(obs, Mapping) else moved

    def forward_all(self, obs: Tensor | Mapping[str, Tensor], asset: Tensor | None = None
                    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``obs`` (as :meth:`forward`) -> ``(task output (see forward), aux outputs)``."""
        encoded = self.extractor.encode(self.with_asset(obs, asset))  # [B, d_model]
        output = self._task_output(self.extractor.head(encoded))
        aux: dict[str, Tensor] = self.aux(encoded) if self.aux is not None else {}
        return output, aux

    def forward(self, obs: Tensor | Mapping[str, Tensor], asset: Tensor | None = None
                ) -> Tensor:
        """The env's observation (Box ``[B, window, F + 2]``, or the dict of timeframe
        windows ``[B, window_tf, F]`` and ``"account"`` ``[B, 4]``; ``asset [B]``: ids, with
        an asset embedding) -> ``direction``: logits ``[B, 3]`` (sell, hold, buy);
        ``volatility``: log volatility per bar ``[B]``; ``multi_horizon``: logits
        ``[B, H, 3]``."""
        return self._task_output(self.extractor(self.with_asset(obs, asset)))

    def forward_features(self, x: Tensor | Mapping[str, Tensor],
                         dt: Tensor | Mapping[str, Tensor] | None = None,
                         asset: Tensor | None = None) -> Tensor:
        """Scaled features of a flat account (``[B, window, F]``, or timeframe name ->
        ``[B, window_tf, F]`` for a multi-timeframe model) and, for a model with
        :attr:`include_dt`, their elapsed seconds (``[B, window]``, or timeframe name ->
        ``[B, window_tf]``; ``None``: regular bars) -> :meth:`forward`'s output (``asset``:
        ids, with an asset embedding)."""
        return self(with_dt_observation(flat_observation(x), dt) if self.include_dt
                    else flat_observation(x), asset)

    def no_weight_decay(self) -> set[str]:
        """Parameter names (relative to this model) AdamW must not decay: the backbone's
        ``no_weight_decay()``, every bias and every parameter with fewer than 2 dimensions
        (norm scales, per-channel gains)."""
        prefix = "extractor.backbone."
        names = {prefix + n for n in self.backbone.no_weight_decay()}  # type: ignore[operator]
        for name, param in self.named_parameters():
            if param.ndim < 2 or name.endswith(".bias"):
                names.add(name)
        return names


def model_from_checkpoint(
    checkpoint: Mapping[str, Any] | str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
) -> SupervisedModel:
    """Rebuild the :class:`SupervisedModel` of a ``"supervised"`` checkpoint, in eval mode,
    with its weights loaded (strictly: every tensor must fit).

    A dict is checked as a loaded file is
    (:func:`~tradezoo.agents.checkpoint.check_payload`: fields, size bound) before anything is
    built. A backend saved in the config that cannot run on ``map_location`` here (a CUDA
    ``mamba_ssm`` scan on the CPU or without the package, a ``"native"`` CPU kernel on CUDA or
    where it does not build) becomes ``"auto"`` with a warning
    (:func:`~tradezoo.policies.registry.portable_config`); the weights do not depend on it.

    Raises:
        CheckpointError: another kind of checkpoint, a malformed one, a model above the size
            bound, or weights that do not fit the model (the message names the missing/
            unexpected keys).
    """
    ckpt = (
        checkpoint
        if isinstance(checkpoint, Mapping)
        else load_checkpoint(checkpoint, map_location=map_location)
    )
    where = str(ckpt.get("path", "<in memory>"))
    if ckpt.get("kind") != "supervised":
        raise CheckpointError(
            f"checkpoint {where}: kind {ckpt.get('kind')!r}; model_from_checkpoint rebuilds "
            "'supervised' checkpoints"
        )
    check_payload(ckpt, where)
    scaler = ckpt["scaler"]
    spec = LabelSpec.from_dict(ckpt.get("label_spec") or {})
    model = SupervisedModel(
        ckpt["arch"],
        n_features=int(ckpt["n_features"]),
        window=int(ckpt["window"]),
        features_dim=int(ckpt.get("features_dim", 64)),
        clip=scaler.get("clip"),
        aux_horizons=tuple(ckpt.get("aux_horizons", ()) or ()),
        task=spec.task,
        horizons=spec.horizons if spec.task == "multi_horizon" else (),
        asset_names=checkpoint_dataset_names(ckpt),
        asset_embedding=bool(ckpt.get("asset_embedding", False)),
        arch_config=portable_config(ckpt["arch"], saved_arch_config(ckpt),
                                    torch.device(map_location), what=f"checkpoint {where}"),
        timeframes=input_timeframes(ckpt),
        include_dt=bool(ckpt.get("include_dt", False)),
    )
    load_weights(model, ckpt["state_dict"], where=where, what=f"architecture {ckpt['arch']!r}")
    model.to(map_location)
    model.eval()
    return model
