"""A fake Bybit v5 market-data server on 127.0.0.1, for offline tests of the Bybit client.

:class:`FakeBybit` runs a stdlib ``ThreadingHTTPServer`` in a daemon thread on an ephemeral
port and serves, from real data:

- ``GET /v5/market/kline`` over the bundled BTCUSDT 1h linear bars
  (``tradezoo/data/bundled/bybit_linear_BTCUSDT_1h.csv.gz``). The file has no turnover, so it
  is **derived** as ``volume * (open + high + low + close) / 4`` rounded to 4 decimals (the
  typical price as the shared pagination fixtures define it). Semantics follow the docs:
  ``category`` (default linear), ``symbol``, ``interval`` (Bybit codes), ``start``/``end`` in
  ms (inclusive bounds on the open time), ``limit`` 1..1000 (default 200); rows are strings,
  newest first. With more than ``limit`` candles in range it returns the newest ``limit``
  (``long_range="newest"``) or the oldest (``"oldest"``): the real behaviour is undocumented
  and a correct client works with either.
- a still-open candle: the server has a fixed, settable ``now``; no candle opening after it
  exists, and the candle containing it is served with partial values (close moved towards
  the open, volume scaled by the elapsed fraction), exactly as a client must not keep it.
- ``GET /v5/market/funding/history`` over the bundled funding file
  (``tradezoo/data/bundled/bybit_linear_funding_8h.csv.gz``, BTCUSDT and ETHUSDT):
  ``startTime``/``endTime``/``limit`` (max 200, default 200), newest first, ``startTime``
  without ``endTime`` is an error (as documented).
- ``GET /v5/market/instruments-info``: the recorded fixtures in ``tests/fixtures/bybit``.
- ``GET /v5/market/time``: the server's ``now``.

Every request is recorded (path and query parameters) in :attr:`FakeBybit.requests`.
:class:`Fault` rules injected with :meth:`FakeBybit.add_fault` replace matching answers with
another status, body, headers, or a delay (to provoke client timeouts).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd

from tradezoo.data.bars import read_bars

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "tradezoo" / "data" / "bundled"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bybit"

KLINE = "/v5/market/kline"
FUNDING = "/v5/market/funding/history"
INSTRUMENTS = "/v5/market/instruments-info"
TIME = "/v5/market/time"

BYBIT_INTERVAL_MINUTES: dict[str, int] = {
    "1": 1, "3": 3, "5": 5, "15": 15, "30": 30, "60": 60, "120": 120, "240": 240, "360": 360,
    "720": 720, "D": 1440, "W": 10080,
}

DEFAULT_NOW = pd.Timestamp("2026-02-08 12:20", tz="UTC")
"""20 minutes into the last bundled bar (12:00), which is therefore still open."""


def fixture_text(name: str) -> str:
    """A file of ``tests/fixtures/bybit`` as text."""
    return (FIXTURES / name).read_text()


def fixture_json(name: str) -> dict[str, Any]:
    """A JSON file of ``tests/fixtures/bybit``."""
    return json.loads(fixture_text(name))


@lru_cache(maxsize=1)
def bundled_klines() -> pd.DataFrame:
    """The bundled BTCUSDT 1h bars (19,261 rows) with the derived ``turnover`` column.

    Do not mutate: the frame is shared between tests.
    """
    bars = read_bars(BUNDLED / "bybit_linear_BTCUSDT_1h.csv.gz", symbol="BTCUSDT")
    typical = (bars["open"] + bars["high"] + bars["low"] + bars["close"]) / 4.0
    bars["turnover"] = (bars["volume"] * typical).round(4)
    return bars


@lru_cache(maxsize=1)
def bundled_funding() -> pd.DataFrame:
    """The bundled funding history: columns ``timestamp`` (ms), ``symbol``, ``fundingRate``."""
    return pd.read_csv(BUNDLED / "bybit_linear_funding_8h.csv.gz")


def funding_series(symbol: str = "BTCUSDT") -> pd.Series:
    """Bundled funding of ``symbol`` as ``funding_rate`` indexed by UTC time."""
    table = bundled_funding()
    rows = table[table["symbol"] == symbol]
    stamps = pd.to_datetime(rows["timestamp"], unit="ms", utc=True)
    index = pd.DatetimeIndex(stamps, name="timestamp")
    return pd.Series(rows["fundingRate"].to_numpy(), index=index, name="funding_rate")


def _ms(stamp: pd.Timestamp) -> int:
    return int(stamp.value // 1_000_000)


def _fmt(value: float) -> str:
    # repr is the shortest string that round-trips, so the client can recover the exact float.
    return repr(float(value))


@dataclass
class Fault:
    """A rule replacing the server's answer to matching requests.

    Attributes:
        path: endpoint path the rule applies to (``"*"`` for any).
        status: HTTP status to answer with.
        body: response body: bytes/str sent as is, a dict sent as JSON; ``None`` serves the
            normal answer (useful with ``delay_s`` or ``headers`` only).
        headers: extra response headers.
        delay_s: seconds to wait before answering (longer than the client timeout provokes
            a read timeout).
        after: let this many matching requests through before the rule starts to apply.
        times: how many requests the rule answers once active; ``None`` means forever.
        match: optional predicate on the query parameters.
    """

    path: str
    status: int = 200
    body: bytes | str | dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    after: int = 0
    times: int | None = 1
    match: Callable[[dict[str, str]], bool] | None = None
    seen: int = 0
    used: int = 0

    def claim(self, path: str, params: dict[str, str]) -> bool:
        """Count a request; True if this rule answers it."""
        if self.path not in ("*", path) or (self.match is not None and not self.match(params)):
            return False
        self.seen += 1
        if self.seen <= self.after or (self.times is not None and self.used >= self.times):
            return False
        self.used += 1
        return True


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received: path and query parameters (single values)."""

    path: str
    params: dict[str, str]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm and
        # delayed ACKs add ~40 ms to every request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        fake = self.server.fake
        status, body, headers, delay = fake.answer(parts.path, params)
        if delay:
            time.sleep(delay)
        try:
            self.send_response(status)
            content_type = "application/json" if body[:1] in (b"{", b"[") else "text/plain"
            self.send_header("Content-Type", headers.pop("Content-Type", content_type))
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test); nothing to answer

    def log_message(self, format: str, *args: Any) -> None:  # silence per-request logging
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeBybit


class FakeBybit:
    """The fake Bybit v5 server (see the module docstring).

    Use as a context manager, or call :meth:`start` and :meth:`stop`.

    Args:
        now: the server's clock (fixed; assign :attr:`now` to move it).
        long_range: which candles to return when ``start..end`` holds more than ``limit``.
        klines: ``{(category, symbol, interval code): bars frame with turnover}``; defaults
            to the bundled BTCUSDT 1h linear bars.
        funding: ``{(category, symbol): funding_rate series}``; defaults to the bundled
            BTCUSDT and ETHUSDT linear funding.
    """

    def __init__(
        self,
        *,
        now: pd.Timestamp = DEFAULT_NOW,
        long_range: Literal["newest", "oldest"] = "newest",
        klines: Mapping[tuple[str, str, str], pd.DataFrame] | None = None,
        funding: Mapping[tuple[str, str], pd.Series] | None = None,
    ) -> None:
        self.now = pd.Timestamp(now)
        self.long_range = long_range
        frames = klines if klines is not None else {("linear", "BTCUSDT", "60"): bundled_klines()}
        # Precomputed arrays: slicing 19k rows per request stays cheap.
        self._klines = {
            key: (
                frame.index.as_unit("ms").asi8,
                frame[["open", "high", "low", "close", "volume", "turnover"]].to_numpy(),
            )
            for key, frame in frames.items()
        }
        series = funding if funding is not None else {
            ("linear", "BTCUSDT"): funding_series("BTCUSDT"),
            ("linear", "ETHUSDT"): funding_series("ETHUSDT"),
        }
        self._funding = {
            key: (s.index.as_unit("ms").asi8, s.to_numpy(dtype=float)) for key, s in series.items()
        }
        self.instruments: dict[tuple[str, str], dict[str, Any]] = {}
        for name in (
            "instruments_info_linear_BTCUSDT.json",
            "instruments_info_spot_BTCUSDT.json",
            "instruments_info_option.json",
            "instruments_info_linear_prelisting_BIOUSDT.json",
        ):
            body = fixture_json(name)
            for entry in body["result"]["list"]:
                self.instruments[(body["result"]["category"], entry["symbol"])] = body
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeBybit:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.fake = self
        # A short poll interval makes stop() (shutdown) return quickly.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeBybit:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def now_ms(self) -> int:
        return _ms(self.now)

    # -- faults and records ------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> Fault:
        """Install a rule; rules are tried in the order added."""
        with self._lock:
            self.faults.append(fault)
        return fault

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """The recorded requests to ``path``, in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def clear(self) -> None:
        """Forget recorded requests (faults stay)."""
        with self._lock:
            self.requests.clear()

    def answer(
        self, path: str, params: dict[str, str]
    ) -> tuple[int, bytes, dict[str, str], float]:
        """(status, body, headers, delay) for one request; records it first."""
        with self._lock:
            self.requests.append(RecordedRequest(path, dict(params)))
            fault = next((f for f in self.faults if f.claim(path, params)), None)
        status, body, headers = self._route(path, params)
        if fault is None:
            return status, body, headers, 0.0
        if fault.body is not None:
            status = fault.status
            raw = fault.body
            body = json.dumps(raw).encode() if isinstance(raw, dict) else (
                raw.encode() if isinstance(raw, str) else raw
            )
        elif fault.status != 200:
            status = fault.status
        return status, body, {**headers, **fault.headers}, fault.delay_s

    # -- endpoints ---------------------------------------------------------------------------

    def envelope(self, result: dict[str, Any], code: int = 0, msg: str = "OK") -> bytes:
        """A v5 envelope stamped with the server's time."""
        return json.dumps(
            {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {},
             "time": self.now_ms}
        ).encode()

    def _error(self, code: int, msg: str) -> tuple[int, bytes, dict[str, str]]:
        return 200, self.envelope({}, code, msg), {}

    def _route(self, path: str, params: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        if path == KLINE:
            return self._kline(params)
        if path == FUNDING:
            return self._funding_history(params)
        if path == INSTRUMENTS:
            return self._instruments(params)
        if path == TIME:
            result = {"timeSecond": str(self.now_ms // 1000), "timeNano": str(self.now.value)}
            return 200, self.envelope(result), {}
        return 404, b"404 page not found", {}

    @staticmethod
    def _int(params: dict[str, str], name: str) -> int | None:
        value = params.get(name)
        return None if value is None else int(value)

    def _kline(self, params: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        category = params.get("category", "linear")
        symbol, interval = params.get("symbol"), params.get("interval")
        if category not in ("spot", "linear", "inverse"):
            return self._error(10001, "Illegal category")
        if not symbol or not interval:
            return self._error(10001, "params error: symbol and interval are required")
        if interval not in BYBIT_INTERVAL_MINUTES and interval != "M":
            return self._error(10001, "Invalid period!")
        if not any(key[:2] == (category, symbol) for key in self._klines):
            return 200, fixture_text("error_10001_not_supported_symbols.json").encode(), {}
        data = self._klines.get((category, symbol, interval))
        if data is None:
            return self._error(10001, f"fake server has no {interval} klines for {symbol}")
        try:
            start, end = self._int(params, "start"), self._int(params, "end")
            limit = self._int(params, "limit") or 200
        except ValueError:
            return self._error(10001, "params error: start/end/limit must be integers")
        if not 1 <= limit <= 1000:
            return self._error(10001, "params error: limit must be in [1, 1000]")
        opens, values = data
        step = BYBIT_INTERVAL_MINUTES[interval] * 60_000
        now = self.now_ms
        upper = now if end is None else min(end, now)
        lower = start if start is not None else np.iinfo(np.int64).min
        mask = (opens >= lower) & (opens <= upper)
        chosen = np.flatnonzero(mask)
        if len(chosen) > limit:
            chosen = chosen[-limit:] if self.long_range == "newest" else chosen[:limit]
        rows = []
        for i in chosen[::-1]:  # newest first, as Bybit sends them
            o, h, lo, c, v, t = values[i]
            if opens[i] + step > now:  # the candle containing "now" is still forming
                elapsed = (now - opens[i]) / step
                c = round(o + (c - o) * elapsed, 1)
                h, lo, v = max(o, c), min(o, c), round(v * elapsed, 3)
                t = round(v * (o + h + lo + c) / 4.0, 4)
            rows.append([str(opens[i]), *(_fmt(x) for x in (o, h, lo, c, v, t))])
        result = {"symbol": symbol, "category": category, "list": rows}
        return 200, self.envelope(result), {}

    def _funding_history(self, params: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        category, symbol = params.get("category"), params.get("symbol")
        if category not in ("linear", "inverse"):
            return self._error(10001, "Illegal category")
        data = self._funding.get((category, symbol or ""))
        if data is None:
            return self._error(10001, "Not supported symbols")
        try:
            start, end = self._int(params, "startTime"), self._int(params, "endTime")
            limit = self._int(params, "limit") or 200
        except ValueError:
            return self._error(10001, "params error: startTime/endTime/limit must be integers")
        if start is not None and end is None:
            return self._error(10001, "params error: endTime is required with startTime")
        if not 1 <= limit <= 200:
            return self._error(10001, "params error: limit must be in [1, 200]")
        stamps, rates = data
        upper = self.now_ms if end is None else min(end, self.now_ms)
        lower = start if start is not None else np.iinfo(np.int64).min
        chosen = np.flatnonzero((stamps >= lower) & (stamps <= upper))[-limit:]
        rows = [
            {
                "symbol": symbol,
                "fundingRate": _fmt(rates[i]),
                "fundingRateTimestamp": str(stamps[i]),
            }
            for i in chosen[::-1]
        ]
        return 200, self.envelope({"category": category, "list": rows}), {}

    def _instruments(self, params: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        category, symbol = params.get("category"), params.get("symbol")
        if category not in ("spot", "linear", "inverse", "option"):
            return self._error(10001, "Illegal category")
        body = self.instruments.get((category, symbol or ""))
        if body is None:
            result = {"category": category, "list": [], "nextPageCursor": ""}
            return 200, self.envelope(result), {}
        return 200, json.dumps(body).encode(), {}
