"""tradezoo: Gymnasium trading environments with honest execution, and a zoo of sequence models.

Importing the package is cheap on purpose: it never imports torch. Subpackages:

- :mod:`tradezoo.data`: bars from Bybit, Yahoo and files; validation; cache; bundled datasets;
  causal features, buy/hold/sell labels, leak-free splits and windowed datasets.
- :mod:`tradezoo.envs`, :mod:`tradezoo.backtest`, :mod:`tradezoo.policies`,
  :mod:`tradezoo.agents`: environments, the accounting engine, models and trainers.

Importing it registers the environments with Gymnasium (``tradezoo/Trading-v0``,
``tradezoo/BTCUSDT-1h-v0``, ``tradezoo/SPY-1d-v0``, ``tradezoo/BTCUSDT-MTF-v0``; see
:mod:`tradezoo.envs.registration`), which imports gymnasium and nothing heavier.
"""

from __future__ import annotations

from tradezoo.envs.registration import register_envs as _register_envs

__version__ = "0.1.0"

__all__ = ["__version__"]

_register_envs()
