"""Sequence backbones (one file per architecture), the SB3 extractor wrapper and the registry.

Example::

    from stable_baselines3 import PPO
    from tradezoo.policies import ARCHITECTURES, CfCPolicy, make_backbone, policy_kwargs_for

    sorted(ARCHITECTURES)                       # every architecture name
    net = make_backbone("gru", n_features=16)   # x [B, L, 16] -> [B, 64]
    PPO(CfCPolicy, env)                         # or PPO("MlpPolicy", env,
                                                #        policy_kwargs=policy_kwargs_for("cfc"))

Importing this package imports torch and Stable-Baselines3 (``import tradezoo`` does not
import it). Each architecture's module is imported on first use through the registry, and the
policy classes exported here (``CfCPolicy``, ...) are those its entries name.
"""

from typing import Any

from tradezoo.policies.base import Backbone, BackboneConfig
from tradezoo.policies.explain import explain
from tradezoo.policies.extractor import SequenceExtractor
from tradezoo.policies.registry import (
    ARCHITECTURES,
    Architecture,
    make_backbone,
    make_config,
    register_architecture,
    unregister_architecture,
)
from tradezoo.policies.sb3 import POLICY_CLASSES, SequencePolicy, policy_kwargs_for

__all__ = [
    "ARCHITECTURES",
    "POLICY_CLASSES",
    "Architecture",
    "Backbone",
    "BackboneConfig",
    "SequenceExtractor",
    "SequencePolicy",
    "explain",
    "make_backbone",
    "make_config",
    "policy_kwargs_for",
    "register_architecture",
    "unregister_architecture",
    # every registered architecture's policy class (CfCPolicy, ...), from the registry
    *(entry.policy_name for entry in ARCHITECTURES.values()),
]


def __getattr__(name: str) -> Any:
    """A registered architecture's policy class by its class name (``CfCPolicy``)."""
    for entry in ARCHITECTURES.values():
        if entry.policy_name == name:
            return entry.policy_cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__,
                   *(entry.policy_name for entry in ARCHITECTURES.values())})
