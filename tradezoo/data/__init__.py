"""The data layer: bars from Bybit, Yahoo and files; validation; cache; bundled datasets;
causal features, buy/hold/sell labels (0 sell, 1 hold, 2 buy), leak-free splits, windows.

Names are imported lazily on first use, so ``import tradezoo.data`` stays cheap and only
:class:`~tradezoo.data.windows.WindowDataset` ever imports torch.

Example::

    from tradezoo.data import load_dataset, compute_features, make_labels, time_splits

    bars = load_dataset("bybit-btcusdt-1h")          # validated, funding merged
    features = compute_features(bars)                # causal, float32, warm-up dropped
    labels = make_labels(bars, horizon=1, threshold=0.005, cost_bps=11.0)
"""

from __future__ import annotations

from tradezoo._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    # errors
    "DataError": "errors",
    "SourceError": "errors",
    "BybitAPIError": "errors",
    "RateLimitedError": "errors",
    "YahooDataError": "errors",
    "FundingAlignmentWarning": "errors",
    # bars, intervals, validation
    "read_bars": "bars",
    "bars_from_frame": "bars",
    "merge_funding": "bars",
    "OHLCV": "bars",
    "Interval": "intervals",
    "parse_interval": "intervals",
    "validate_bars": "validation",
    "ValidationReport": "validation",
    "Finding": "validation",
    # sources and cache
    "BybitClient": "bybit",
    "fetch_bybit": "bybit",
    "fetch_yahoo": "yahoo",
    "yahoo_frame_to_bars": "yahoo",
    "BarCache": "cache",
    "CacheKey": "cache",
    "data_dir": "cache",
    # bundled datasets
    "list_datasets": "datasets",
    "load_dataset": "datasets",
    "DatasetInfo": "datasets",
    # features, labels, splits, windows
    "FeatureSpec": "features",
    "compute_features": "features",
    "FeatureScaler": "features",
    "describe_features": "features",
    "feature_names": "features",
    "make_labels": "labels",
    "label_balance": "labels",
    "forward_returns": "labels",
    "vol_threshold": "labels",
    "Splits": "splits",
    "time_splits": "splits",
    "walk_forward": "splits",
    "WindowDataset": "windows",
    # the one data preparation (bars -> features -> splits -> fitted scaler)
    "PreparedDataset": "prepare",
    "WalkForward": "prepare",
    "resample_bars": "prepare",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
