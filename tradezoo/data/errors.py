"""Exceptions raised by the data layer.

Every error names the input (file, source, endpoint or dataset), the offending rows or
parameters where there are any, and the rule that was broken, so a user can act on it
without reading the code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tradezoo.errors import TradezooError


class DataError(TradezooError, ValueError):
    """Bars or a data file break a rule of the data model (see ``validate_bars``)."""


class SourceError(TradezooError, RuntimeError):
    """A data source (Bybit, Yahoo) failed or answered with something unusable."""


class BybitAPIError(SourceError):
    """Bybit answered with ``retCode != 0`` (and it is not a retryable rate-limit code)."""

    def __init__(
        self, code: int, message: str, endpoint: str, params: Mapping[str, Any] | None = None
    ) -> None:
        self.code = int(code)
        self.message = message
        self.endpoint = endpoint
        self.params = dict(params or {})
        super().__init__(
            f"Bybit {endpoint} returned retCode {self.code} ({message!r}) for params {self.params}"
        )


class RateLimitedError(SourceError):
    """The source refused further requests (Bybit HTTP 403 ban; retries exhausted on 429/10006)."""


class YahooDataError(SourceError):
    """yfinance returned no usable data (unknown ticker, rate limit, out-of-range intraday)."""


class FundingAlignmentWarning(UserWarning):
    """Funding stamps fell on no bar open; each is charged at the next bar's open instead."""
