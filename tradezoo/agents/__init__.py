"""Supervised and PPO trainers, callbacks and tuning."""
