"""Trading environments: ``TradingEnv``, the batched vector env, the SB3 VecEnv, registration."""
