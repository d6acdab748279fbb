"""The account part of the env's observations, shared by the envs and the trainers.

The market (:mod:`tradezoo.envs.market`) builds observations with these columns and keys; the
trainers (:mod:`tradezoo.agents.data`) build the observation of a flat account with the same
ones without importing the market (the agents build on the data preparation, not on the env's
tables). No imports: any layer may use it.
"""

from __future__ import annotations

__all__ = ["ACCOUNT_KEY", "N_ACCOUNT_COLUMNS", "N_ACCOUNT_FEATURES"]

N_ACCOUNT_COLUMNS = 2
"""Account columns appended to every row of a box observation: exposure, equity log-return."""
N_ACCOUNT_FEATURES = 4
"""Length of the dict observation's ``"account"`` vector."""
ACCOUNT_KEY = "account"
"""The dict observation's key of the account vector."""
