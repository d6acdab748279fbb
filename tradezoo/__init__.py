"""tradezoo: Gymnasium trading environments with honest execution, and a zoo of sequence models.

Importing the package is cheap on purpose: it never imports torch. Subpackages:

- :mod:`tradezoo.data`: bars from Bybit, Yahoo and files; validation; cache; bundled datasets;
  causal features, buy/hold/sell labels, leak-free splits and windowed datasets.
- :mod:`tradezoo.envs`, :mod:`tradezoo.backtest`, :mod:`tradezoo.policies`,
  :mod:`tradezoo.agents`: environments, the accounting engine, models and trainers.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
