"""The base of every tradezoo error, and the errors shared by several layers.

:class:`TradezooError` is the base of every exception tradezoo raises on purpose about what a
user gave it: bad data, a bad config, a checkpoint that does not fit, a run directory in use,
a file that cannot be written. The ``tradezoo`` command prints these as one line
(``tradezoo: error: <message>``); any other exception is a defect and shows its traceback.
The concrete classes live next to the code that raises them and stay importable from there:

- ``ConfigError`` (here, and ``tradezoo.agents.config``): also a ``ValueError``;
  ``RunDirectoryError`` and ``RunDirectoryLocked`` (``tradezoo.agents.rundir``) and
  ``ModelTooLargeError`` (``tradezoo.policies.size``) subclass ``ConfigError``;
- ``DataError`` (``tradezoo.data.errors``): also a ``ValueError``;
- ``SourceError``, ``BybitAPIError``, ``RateLimitedError``, ``YahooDataError``
  (``tradezoo.data.errors``): also ``RuntimeError``;
- ``CheckpointError`` (``tradezoo.agents.checkpoint``): also a ``ValueError``;
- ``NonFiniteLossError`` (``tradezoo.agents.supervised``): also a ``RuntimeError``;
- ``OutputError`` (``tradezoo.agents.rundir``) and ``CacheCorruptError``
  (``tradezoo.data.cache``): also ``OSError``;
- ``MissingExtraError`` (``tradezoo.data.decompositions``): also an ``ImportError``;
- ``NativeBuildError`` (``tradezoo.policies.native``): also a ``RuntimeError``.

Each keeps its built-in base, so ``except ValueError`` (and ``pytest.raises(ValueError)``)
still catches a ``ConfigError``. Argument checks of public functions and constructors
(environments, backtests, model configs) raise plain ``ValueError``/``TypeError`` as Python and
Gymnasium do; the command line turns those raised while it checks a configuration into
:class:`ConfigError` (see ``docs/design.md``, Errors).

This module imports only the standard library: every layer may import it.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["ConfigError", "TradezooError"]


class TradezooError(Exception):
    """Base of the errors tradezoo raises about its input (data, config, files, checkpoints);
    the message names the input and the rule it breaks."""

    exit_code: ClassVar[int] = 2
    """Exit status of the ``tradezoo`` command for this error: 2 bad input, 3 a file or folder
    that cannot be written or read, 1 a training that diverged."""


class ConfigError(TradezooError, ValueError):
    """A config file or option that cannot be used (names the source, the key, the rule)."""
