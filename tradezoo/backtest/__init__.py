"""Execution and accounting shared by the envs and the backtester; metrics; reports."""
