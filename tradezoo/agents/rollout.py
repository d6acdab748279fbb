"""PPO whose rollouts and evaluations run on their own device: :class:`SplitDevicePPO`.

Why. A rollout step runs one policy forward on a batch of ``n_envs`` observations (8 by
default). The recurrent backbones issue hundreds to thousands of small ops per forward (ltc
about 2,700, cfc about 400, timeparticle about 240 without ``message_feedback`` and about six
times that with it, its default; chunked mamba about 220; the mlp 6). On a
GPU each op is one kernel launch, so a rollout forward costs milliseconds of launch overhead
whatever the batch, while the CPU runs the same forward in about 1-2 ms at batch 8 (the native
kernels included). The update (``n_epochs`` passes over minibatches of ``batch_size``
windows, with a backward) is where a GPU pays off.

Design (SB3's own recommendation for small policies is "use the CPU"; its check for it,
``_maybe_recommend_cpu``, looks only for the class name ``ActorCriticPolicy`` and never
fires for the zoo's policy classes)::

    model.policy          the update copy, on the update device (``device=``): PPO.train()
    model.rollout_policy  the rollout copy, on the rollout device: collect_rollouts, the
                          validation episodes (TradingEvalCallback), evaluate_ppo of a model
                          (the same object as model.policy when both devices are one)

The rollout copy is a deep copy of the update copy moved to the rollout device; it gets the
update copy's weights (``load_state_dict``, an exact copy) and ``requires_grad`` flags (they
select kernels, :meth:`SplitDevicePPO.sync_rollout_policy`) at the start of every rollout, after
the ``on_rollout_start`` callbacks and so after every update, and before every evaluation. The
rollout loop is SB3's own ``collect_rollouts``, run with ``policy`` and ``device`` pointing at
the rollout copy; the callbacks it calls see the update copy (so checkpoints save the update
copy and its optimiser, and backbone freezing acts on the parameters the optimiser steps).
The rollout buffer holds numpy arrays and yields tensors on the update device, as in SB3.
Sampling draws from the rollout device's generator; on CPU the split run equals the unsplit
one bit for bit (tested).

Rule (:func:`choose_rollout_device`): with ``rollout_device="auto"``, rollouts run on the CPU
when the update device is not the CPU and ``n_envs <= CPU_ROLLOUT_MAX_ENVS``; otherwise on the
update device. With updates on the CPU nothing changes (one policy, SB3's loop). The threshold
is an estimate from the launch counts above (a CPU forward grows with the batch, a
launch-bound GPU forward does not), not a measurement: ``benchmarks/gpu_check.py`` measures
rollout steps/s both ways per architecture and batch, and reports whether this rule picks the
faster device.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from stable_baselines3 import PPO

if TYPE_CHECKING:
    from stable_baselines3.common.buffers import RolloutBuffer
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.policies import BasePolicy
    from stable_baselines3.common.vec_env import VecEnv

__all__ = [
    "CPU_ROLLOUT_MAX_ENVS",
    "SplitDevicePPO",
    "acting_policy",
    "choose_rollout_device",
]

CPU_ROLLOUT_MAX_ENVS = 64
"""With updates on a GPU and ``rollout_device="auto"``, rollouts of at most this many envs
run on the CPU (an estimate; module docstring)."""


def choose_rollout_device(update_device: str | torch.device, n_envs: int,
                          rollout_device: str | torch.device = "auto") -> torch.device:
    """The device rollouts and evaluations run on.

    Args:
        update_device: where PPO's updates run (the model's ``device``; a resolved device
            such as ``"cpu"`` or ``"cuda:0"``, not ``"auto"``).
        n_envs: the batch of a rollout forward (envs stepped together).
        rollout_device: ``"auto"`` (the rule in the module docstring), ``"update"`` (the
            update device) or a device (``"cpu"``, ``"cuda:0"``, a ``torch.device``).

    Raises:
        ValueError: an unknown device string, or CUDA asked for where there is none.
    """
    update_device = torch.device(update_device)
    if rollout_device == "update":
        return update_device
    if rollout_device == "auto":
        if update_device.type != "cpu" and n_envs <= CPU_ROLLOUT_MAX_ENVS:
            return torch.device("cpu")
        return update_device
    from tradezoo.agents.devices import resolve_device

    try:
        return resolve_device(rollout_device)
    except ValueError as exc:
        raise ValueError(f"rollout_device must be 'auto', 'update', 'cpu' or 'cuda[:n]': "
                         f"{exc}") from exc


class _UpdateCopyCallback:
    """The rollout's callback, run with the model's ``policy`` and ``device`` set back to the
    update copy (SB3's loop runs with them set to the rollout copy in between). The weights
    are synced after ``on_rollout_start``, so a callback that changes them there is seen."""

    def __init__(self, model: SplitDevicePPO, inner: BaseCallback) -> None:
        self.model, self.inner = model, inner

    def _as_update(self, call: Callable[[], Any]) -> Any:
        model = self.model
        rollout_policy, rollout_device = model.policy, model.device
        model.policy, model.device = model._update_policy, model._update_device
        try:
            return call()
        finally:
            model.policy, model.device = rollout_policy, rollout_device

    def on_rollout_start(self) -> None:
        def start() -> None:
            self.inner.on_rollout_start()
            self.model.sync_rollout_policy()

        self._as_update(start)

    def update_locals(self, locals_: dict[str, Any]) -> None:
        self._as_update(lambda: self.inner.update_locals(locals_))

    def on_step(self) -> bool:
        return bool(self._as_update(self.inner.on_step))

    def on_rollout_end(self) -> None:
        self._as_update(self.inner.on_rollout_end)


class SplitDevicePPO(PPO):
    """SB3 ``PPO`` with rollouts and evaluations on ``rollout_device`` and updates on
    ``device`` (module docstring). Everything else is SB3's ``PPO``.

    Args:
        *args, **kwargs: SB3 ``PPO``'s.
        rollout_device: ``"auto"`` (:func:`choose_rollout_device`), ``"update"`` or a device.

    Attributes:
        rollout_policy: the policy rollouts and evaluations run (``policy`` itself when the
            two devices are one and no separate copy was asked for).
        rollout_device: its device.
    """

    def __init__(self, *args: Any, rollout_device: str | torch.device = "auto",
                 **kwargs: Any) -> None:
        self._rollout_request: str | torch.device = rollout_device
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        self.rollout_policy: BasePolicy = self.policy
        self.rollout_device: torch.device = self.device
        self.set_rollout_device(self._rollout_request)

    def _maybe_recommend_cpu(self, mlp_class_name: str = "ActorCriticPolicy") -> None:
        """SB3 warns when an ``ActorCriticPolicy`` runs on a GPU because its rollouts would run
        there; this class places rollouts itself (module docstring), so that warning would be
        wrong here and is not given."""

    def _excluded_save_params(self) -> list[str]:
        # the rollout copy is the update copy's weights on another device: not saved twice
        return [*super()._excluded_save_params(), "rollout_policy", "rollout_device",
                "_rollout_request", "_update_policy", "_update_device"]

    @property
    def separate_rollout_policy(self) -> bool:
        """Whether rollouts run a separate copy of the policy."""
        return self.rollout_policy is not self.policy

    def set_rollout_device(self, rollout_device: str | torch.device = "auto", *,
                           separate: bool | None = None) -> torch.device:
        """Choose where rollouts and evaluations run, and make the rollout copy.

        Args:
            rollout_device: ``"auto"``, ``"update"`` or a device (:func:`choose_rollout_device`).
            separate: keep a separate rollout copy even on the update device (``None``: only
                when the devices differ). A separate copy on the same device computes the same
                numbers as the update copy; it exists to test the mechanism without a GPU.

        Returns:
            The rollout device.
        """
        device = choose_rollout_device(self.device, self.n_envs, rollout_device)
        self._rollout_request = rollout_device
        if separate is None:
            separate = device != self.device
        if separate == self.separate_rollout_policy and device == self.rollout_device:
            return device  # as it is (a separate copy is synced before it acts)
        if separate:
            # the copy keeps the update copy's requires_grad flags (sync_rollout_policy)
            self.rollout_policy = copy.deepcopy(self.policy).to(device)
            self.rollout_policy.optimizer = None  # type: ignore[assignment]  # never steps
            self.rollout_policy.set_training_mode(False)
        else:
            self.rollout_policy = self.policy
        self.rollout_device = device
        return device

    def sync_rollout_policy(self) -> None:
        """Copy the update copy's weights and ``requires_grad`` flags into the rollout copy
        (exact; no-op without one).

        The flags are part of what a forward computes, even under ``torch.no_grad``: torch
        picks some kernels by them (``matmul`` of a 3-d input folds it into one ``mm`` when
        the weight requires grad and runs a ``bmm`` otherwise, as the GRU's input projection
        does), and the two kernels may round differently. Backbone freezing changes the
        update copy's flags, so they are copied with the weights; the rollout copy runs under
        ``no_grad`` and has no optimiser, so its flags never make it train."""
        if self.separate_rollout_policy:
            with torch.no_grad():
                self.rollout_policy.load_state_dict(self.policy.state_dict())
            for mine, theirs in zip(self.rollout_policy.parameters(), self.policy.parameters(),
                                    strict=True):
                mine.requires_grad_(theirs.requires_grad)

    def acting_policy(self) -> BasePolicy:
        """The rollout copy, synced: the policy to act with (evaluations)."""
        self.sync_rollout_policy()
        return self.rollout_policy

    def collect_rollouts(self, env: VecEnv, callback: BaseCallback,
                         rollout_buffer: RolloutBuffer, n_rollout_steps: int) -> bool:
        """SB3's ``collect_rollouts`` on the rollout copy (module docstring)."""
        if not self.separate_rollout_policy:
            return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps)
        self._update_policy, self._update_device = self.policy, self.device
        self._update_policy.set_training_mode(False)  # as SB3's loop leaves the policy
        self.policy, self.device = self.rollout_policy, self.rollout_device
        try:
            return super().collect_rollouts(env, _UpdateCopyCallback(self, callback),  # type: ignore[arg-type]
                                            rollout_buffer, n_rollout_steps)
        finally:
            self.policy, self.device = self._update_policy, self._update_device


def acting_policy(model: Any) -> Any:
    """What acts for ``model`` in an evaluation: a :class:`SplitDevicePPO`'s synced rollout
    copy, another SB3 algorithm's ``policy``, or ``model`` itself (a policy)."""
    if isinstance(model, SplitDevicePPO):
        return model.acting_policy()
    return getattr(model, "policy", model)
