"""Sequence backbones (one file per architecture), the SB3 extractor wrapper and the registry.

Example::

    from stable_baselines3 import PPO
    from tradezoo.policies import ARCHITECTURES, CfCPolicy, make_backbone, policy_kwargs_for

    sorted(ARCHITECTURES)                       # every architecture name
    net = make_backbone("gru", n_features=16)   # x [B, L, 16] -> [B, 64]
    PPO(CfCPolicy, env)                         # or PPO("MlpPolicy", env,
                                                #        policy_kwargs=policy_kwargs_for("cfc"))

Importing this package imports torch and Stable-Baselines3 (``import tradezoo`` does not
import it). Each architecture's module is imported on first use through the registry.
"""

from tradezoo.policies.base import Backbone, BackboneConfig
from tradezoo.policies.explain import explain
from tradezoo.policies.extractor import SequenceExtractor
from tradezoo.policies.registry import ARCHITECTURES, Architecture, make_backbone, make_config
from tradezoo.policies.sb3 import (
    POLICY_CLASSES,
    CfCPolicy,
    GRUPolicy,
    LSTMPolicy,
    LTCPolicy,
    MambaPolicy,
    MambaTSPolicy,
    MLPPolicy,
    MSAPolicy,
    SequencePolicy,
    TimeParticlePolicy,
    TransformerPolicy,
    policy_kwargs_for,
)

__all__ = [
    "ARCHITECTURES",
    "POLICY_CLASSES",
    "Architecture",
    "Backbone",
    "BackboneConfig",
    "CfCPolicy",
    "GRUPolicy",
    "LSTMPolicy",
    "LTCPolicy",
    "MLPPolicy",
    "MSAPolicy",
    "MambaPolicy",
    "MambaTSPolicy",
    "SequenceExtractor",
    "SequencePolicy",
    "TimeParticlePolicy",
    "TransformerPolicy",
    "explain",
    "make_backbone",
    "make_config",
    "policy_kwargs_for",
]
