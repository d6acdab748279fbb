"""The Parquet cache: atomic writes, incremental refresh, interruption, corruption and
concurrent writers (real subprocesses against the local Bybit test server)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
from bybit_server import KLINE, FakeBybit, Fault

from tradezoo.data import load_dataset
from tradezoo.data.bybit import BybitClient, fetch_bybit
from tradezoo.data.cache import (
    BarCache,
    CacheCorruptWarning,
    CacheKey,
    cached_fetch,
    data_dir,
    last_closed_open,
)

KEY = CacheKey("test-source", "BTCUSDT", "1h")
NOW = pd.Timestamp("2030-01-01", tz="UTC")


class RecordingDownloader:
    """Serves the bundled BTCUSDT bars and records each requested range."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.bars = load_dataset("bybit-btcusdt-1h")
        self.calls: list[tuple[pd.Timestamp, pd.Timestamp]] = []
        self.fail_on_call = fail_on_call

    def __call__(self, lo: pd.Timestamp, hi: pd.Timestamp) -> pd.DataFrame:
        self.calls.append((lo, hi))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise ConnectionError("network dropped in the middle of the download")
        return self.bars.loc[lo:hi]


def _t(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def test_data_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRADEZOO_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    monkeypatch.delenv("TRADEZOO_DATA_DIR")
    assert data_dir() == Path.home() / ".cache" / "tradezoo"


def test_first_fetch_writes_and_repeat_downloads_nothing(tmp_path: Path) -> None:
    cache, download = BarCache(tmp_path), RecordingDownloader()
    frame, report = cached_fetch(
        KEY, _t("2024-01-01"), _t("2024-01-10"), download, cache=cache, now=NOW
    )
    assert len(frame) == 9 * 24 + 1 and report.rows_downloaded == len(frame)
    assert cache.path(KEY) == tmp_path / "test-source" / "BTCUSDT_1h.parquet"
    again, report2 = cached_fetch(
        KEY, _t("2024-01-02"), _t("2024-01-05"), download, cache=cache, now=NOW
    )
    assert len(download.calls) == 1 and report2.downloaded == []
    pd.testing.assert_frame_equal(
        again, frame.loc[_t("2024-01-02") : _t("2024-01-05")], check_freq=False
    )
    assert "nothing downloaded" in again.attrs["fetch_summary"]


def test_extension_downloads_only_the_missing_ranges(tmp_path: Path) -> None:
    cache, download = BarCache(tmp_path), RecordingDownloader()
    cached_fetch(KEY, _t("2024-01-05"), _t("2024-01-10"), download, cache=cache, now=NOW)
    frame, report = cached_fetch(
        KEY, _t("2024-01-01"), _t("2024-01-20"), download, cache=cache, now=NOW
    )
    ms = pd.Timedelta(milliseconds=1)
    assert download.calls[1:] == [
        (_t("2024-01-01"), _t("2024-01-05") - ms),
        (_t("2024-01-10") + ms, _t("2024-01-20")),
    ]
    pd.testing.assert_frame_equal(
        frame, download.bars.loc[_t("2024-01-01") : _t("2024-01-20")], check_freq=False
    )
    assert report.rows_in_cache == len(frame)


def test_coverage_remembers_empty_ranges(tmp_path: Path) -> None:
    # Before the listing the source has no bars; asking again must not download again.
    cache, download = BarCache(tmp_path), RecordingDownloader()
    cached_fetch(KEY, _t("2023-11-01"), _t("2023-12-01"), download, cache=cache, now=NOW)
    cached_fetch(KEY, _t("2023-11-01"), _t("2023-12-01"), download, cache=cache, now=NOW)
    assert len(download.calls) == 1


def test_end_is_capped_at_the_last_closed_bar(tmp_path: Path) -> None:
    now = _t("2024-01-02 10:30")
    assert last_closed_open(__import__("tradezoo").data.parse_interval("1h"), now) == _t(
        "2024-01-02 09:00"
    )
    cache, download = BarCache(tmp_path), RecordingDownloader()
    frame, _ = cached_fetch(KEY, _t("2024-01-02"), _t("2024-02-01"), download, cache=cache, now=now)
    assert frame.index[-1] == _t("2024-01-02 09:00")
    assert download.calls == [(_t("2024-01-02"), _t("2024-01-02 09:00"))]


def test_interrupted_download_leaves_cache_byte_identical(tmp_path: Path) -> None:
    cache = BarCache(tmp_path)
    cached_fetch(
        KEY, _t("2024-01-05"), _t("2024-01-10"), RecordingDownloader(), cache=cache, now=NOW
    )
    before = cache.path(KEY).read_bytes()
    failing = RecordingDownloader(fail_on_call=2)  # the second missing range fails
    with pytest.raises(ConnectionError):
        cached_fetch(KEY, _t("2024-01-01"), _t("2024-01-20"), failing, cache=cache, now=NOW)
    assert len(failing.calls) == 2
    assert cache.path(KEY).read_bytes() == before
    assert sorted(p.name for p in cache.path(KEY).parent.iterdir()) == ["BTCUSDT_1h.parquet"]


def test_interrupted_first_download_creates_no_file(tmp_path: Path) -> None:
    cache = BarCache(tmp_path)
    with pytest.raises(ConnectionError):
        cached_fetch(
            KEY, _t("2024-01-01"), _t("2024-01-02"), RecordingDownloader(1), cache=cache, now=NOW
        )
    assert not cache.path(KEY).exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_is_reported_and_refetched(tmp_path: Path, damage: str) -> None:
    cache, download = BarCache(tmp_path), RecordingDownloader()
    first, _ = cached_fetch(KEY, _t("2024-01-01"), _t("2024-01-03"), download, cache=cache, now=NOW)
    path = cache.path(KEY)
    data = path.read_bytes()
    path.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": b"x" * 100, "empty": b""}[damage]
    )
    with pytest.warns(CacheCorruptWarning, match=r"BTCUSDT_1h.parquet is unreadable.*re-fetching"):
        again, report = cached_fetch(
            KEY, _t("2024-01-01"), _t("2024-01-03"), download, cache=cache, now=NOW
        )
    assert report.replaced_corrupt and len(download.calls) == 2
    pd.testing.assert_frame_equal(again.drop(columns=[]), first, check_freq=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cache.read(KEY) is not None


def test_attrs_round_trip_and_entries(tmp_path: Path) -> None:
    cache = BarCache(tmp_path)
    _frame, _ = cached_fetch(
        KEY, _t("2024-01-01"), _t("2024-01-02"), RecordingDownloader(), cache=cache, now=NOW
    )
    stored = cache.read(KEY)
    assert stored.frame.attrs["symbol"] == "BTCUSDT"
    assert stored.coverage_end == _t("2024-01-02")
    assert cache.entries() == [(KEY, cache.path(KEY))]


def test_start_after_end_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty range"):
        cached_fetch(
            KEY,
            _t("2024-02-01"),
            _t("2024-01-01"),
            RecordingDownloader(),
            cache=BarCache(tmp_path),
            now=NOW,
        )


# A child process: waits for the start file, then fetches one range into the shared cache.
_FETCHER = """
import sys, time
from pathlib import Path
import pandas as pd
from tradezoo.data.bybit import BybitClient, fetch_bybit
from tradezoo.data.cache import BarCache

url, root, start, end, now, ready, go = sys.argv[1:]
client = BybitClient(url, timeout=30.0, max_retries=0, clock=lambda: pd.Timestamp(now))
Path(ready).touch()
deadline = time.monotonic() + 60
while not Path(go).exists():
    if time.monotonic() > deadline:
        sys.exit("start file never appeared")
    time.sleep(0.002)
bars = fetch_bybit("BTCUSDT", "1h", start, end, client=client, cache=BarCache(root), now=now)
print(len(bars))
"""


def test_concurrent_fetches_of_different_ranges_both_end_up_in_the_cache(tmp_path: Path) -> None:
    ranges = [
        (_t("2024-01-01"), _t("2024-01-20 23:00")),
        (_t("2024-02-01"), _t("2024-02-20 23:00")),
    ]
    root = tmp_path / "cache"
    with FakeBybit() as server:
        # Every kline answer takes 0.5 s, so both processes have read the (absent) file long
        # before either writes: without a lock the second write would drop the first range.
        server.add_fault(Fault(KLINE, delay_s=0.5, times=None))
        go = tmp_path / "go"
        children, readies = [], []
        for i, (lo, hi) in enumerate(ranges):
            ready = tmp_path / f"ready{i}"
            readies.append(ready)
            args = [server.url, str(root), str(lo), str(hi), str(server.now), str(ready), str(go)]
            children.append(
                subprocess.Popen(
                    [sys.executable, "-c", _FETCHER, *args],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        deadline = time.monotonic() + 60
        while not all(r.exists() for r in readies) and time.monotonic() < deadline:
            time.sleep(0.01)
        go.touch()
        outputs = [child.communicate(timeout=120) for child in children]
        for child, (_out, err) in zip(children, outputs, strict=True):
            assert child.returncode == 0, err
        assert [int(out) for out, _ in outputs] == [20 * 24, 20 * 24]
        server.faults.clear()
        with BybitClient(server.url, clock=lambda: server.now) as client:
            expected = fetch_bybit(
                "BTCUSDT", "1h", ranges[0][0], ranges[1][1], client=client, cache=False,
                now=server.now,
            )
    stored = BarCache(root).read(CacheKey("bybit-linear", "BTCUSDT", "1h"))
    assert stored is not None
    # Both ranges, and the stretch between them (the coverage is one contiguous range).
    assert (stored.coverage_start, stored.coverage_end) == (ranges[0][0], ranges[1][1])
    pd.testing.assert_frame_equal(stored.frame, expected, check_freq=False, check_index_type=False)
    for lo, hi in ranges:
        assert len(stored.frame.loc[lo:hi]) == 20 * 24
    # No temporary file left beside the data.
    assert [p.name for p in (root / "bybit-linear").iterdir()] == ["BTCUSDT_1h.parquet"]


def test_cache_folders_it_creates_are_private(tmp_path: Path) -> None:
    """Every folder the cache creates (the root's missing parents included) is mode 0700,
    whatever the umask: other local users cannot read or plant files in it."""
    root = tmp_path / "shared" / "cache"
    old_umask = os.umask(0o002)
    try:
        cached_fetch(KEY, _t("2024-01-01"), _t("2024-01-02"), RecordingDownloader(),
                     cache=BarCache(root), now=NOW)
    finally:
        os.umask(old_umask)
    created = [tmp_path / "shared", root, root / "test-source", root / ".locks",
               root / ".locks" / "test-source"]
    assert {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in created} == {
        str(p): "0o700" for p in created
    }
