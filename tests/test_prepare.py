"""The one data preparation (tradezoo.data.prepare): the env and the trainers get the same
features, scaler and splits from it; walk-forward folds; the import graph it untangled."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tradezoo.agents.data import prepare_data
from tradezoo.data import FeatureScaler, load_dataset, walk_forward
from tradezoo.data.prepare import WalkForward, prepare
from tradezoo.envs.market import prepare_market

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 16
FRACTIONS = (0.6, 0.2, 0.2)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_dataset("bybit-btcusdt-1h").iloc[:2500]


# ------------------------------------------------------------------- one result for all


def test_env_and_trainers_get_the_same_features_scaler_and_splits(bars: pd.DataFrame) -> None:
    prepared = prepare(bars, window=WINDOW, split_fractions=FRACTIONS)
    data = prepare_data(bars, window=WINDOW, split_fractions=FRACTIONS,
                        label_spec={"horizon": 3})
    market = prepare_market(bars, window=WINDOW, split_fractions=FRACTIONS)
    dataset = market.datasets[0]
    env_scaler = dataset.scalers[dataset.interval]
    for scaler in (data.scaler, env_scaler):
        np.testing.assert_array_equal(scaler.mean, prepared.scaler.mean)
        np.testing.assert_array_equal(scaler.std, prepared.scaler.std)
    values = prepared.scaled.to_numpy()
    np.testing.assert_array_equal(data.scaled.to_numpy(), values)
    np.testing.assert_array_equal(market.features, values)
    pd.testing.assert_frame_equal(data.features, prepared.features)
    assert market.feature_names == data.feature_names == prepared.feature_names
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(dataset.splits.part(part), prepared.splits.part(part))
        # The trainers' label splits are the same scheme with their horizon: same test rows.
        np.testing.assert_array_equal(data.splits.part(part),
                                      prepared.splits_for(horizon=3).part(part))
    np.testing.assert_array_equal(data.splits.test, prepared.splits.test)
    assert prepared.fit_rows == (0, int(prepared.splits.train[-1]))


def _calls(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.id if isinstance(func, ast.Name) else
                      func.attr if isinstance(func, ast.Attribute) else "")
    return names


def test_agents_and_envs_have_no_second_pipeline() -> None:
    # Featurising, splitting and fitting scalers happen in tradezoo.data.prepare only; the
    # trainers' preparation and the market call it.
    pipeline = {"compute_features", "time_splits", "walk_forward", "FeatureScaler", "load_bars"}
    for package in ("agents", "envs"):
        for path in sorted((ROOT / "tradezoo" / package).glob("*.py")):
            assert not _calls(path) & pipeline, (path.name, _calls(path) & pipeline)
    assert "prepare" in _calls(ROOT / "tradezoo" / "agents" / "data.py")
    assert "prepare_loaded" in _calls(ROOT / "tradezoo" / "envs" / "market.py")


# ----------------------------------------------------------------------- walk-forward


@pytest.mark.parametrize("train_size", [None, 600])
def test_a_fold_is_scaled_on_its_own_train_part_only(
    bars: pd.DataFrame, train_size: int | None
) -> None:
    scheme = WalkForward(n_folds=3, test_size=250, val_size=150, train_size=train_size)
    features = prepare(bars, window=WINDOW).features.astype(np.float64)
    for fold in range(3):
        prepared = prepare(bars, window=WINDOW, features=features, walk_forward=scheme,
                           fold=fold)
        expected = walk_forward(features.index, n_folds=3, test_size=250, val_size=150,
                                train_size=train_size, lookback=WINDOW, horizon=1)[fold]
        for part in ("train", "val", "test"):
            np.testing.assert_array_equal(prepared.splits.part(part), expected.part(part))
        assert prepared.splits.fold == prepared.fold == fold
        train = prepared.splits.train
        assert prepared.fit_rows == (int(train[0]), int(train[-1]))
        refit = FeatureScaler().fit(features.iloc[train[0] : train[-1] + 1])
        np.testing.assert_array_equal(prepared.scaler.mean, refit.mean)
        np.testing.assert_array_equal(prepared.scaler.std, refit.std)
        # Features outside the train part do not move the scaler; one inside does.
        outside = features.copy()
        outside.iloc[train[-1] + 1 :] *= 3.0
        outside.iloc[: train[0]] *= 3.0
        moved = prepare(bars, window=WINDOW, features=outside, walk_forward=scheme, fold=fold)
        np.testing.assert_array_equal(moved.scaler.mean, prepared.scaler.mean)
        inside = features.copy()
        inside.iloc[train[-1]] *= 3.0
        moved = prepare(bars, window=WINDOW, features=inside, walk_forward=scheme, fold=fold)
        assert not np.array_equal(moved.scaler.mean, prepared.scaler.mean)
        # A label horizon keeps the fold's test rows.
        np.testing.assert_array_equal(prepared.splits_for(horizon=4).test, prepared.splits.test)


def test_a_rolling_fold_scales_coarser_timeframes_on_its_train_bins(bars: pd.DataFrame) -> None:
    scheme = WalkForward(n_folds=2, test_size=300, train_size=800)
    prepared = prepare(bars, window=WINDOW, walk_forward=scheme, fold=1, timeframes=["4h"])
    (tf,) = prepared.timeframes
    train = prepared.splits.train
    index = prepared.index
    train_open, train_close = index[train[0]], index[train[-1]] + pd.Timedelta("1h")
    from tradezoo.data.features import compute_features
    from tradezoo.data.prepare import resample_bars

    tf_features = compute_features(resample_bars(bars, tf.interval))
    bin_end = tf_features.index + pd.Timedelta("4h")
    inside = (tf_features.index >= train_open) & (bin_end <= train_close)
    refit = FeatureScaler().fit(tf_features[inside])
    np.testing.assert_array_equal(tf.scaler.mean, refit.mean)
    assert 0 < inside.sum() < len(tf_features)


def test_fold_arguments_are_checked(bars: pd.DataFrame) -> None:
    scheme = WalkForward(n_folds=2, test_size=200)
    with pytest.raises(ValueError, match="walk_forward needs fold="):
        prepare(bars, window=WINDOW, walk_forward=scheme)
    with pytest.raises(ValueError, match=r"fold=1 needs walk_forward="):
        prepare(bars, window=WINDOW, fold=1)
    with pytest.raises(ValueError, match="not both"):
        prepare(bars, window=WINDOW, walk_forward=scheme, fold=0, split_fractions=FRACTIONS)
    with pytest.raises(ValueError, match=r"fold must be an integer in \[0, 2\), got 2"):
        prepare(bars, window=WINDOW, walk_forward=scheme, fold=2)
    with pytest.raises(ValueError, match=r"WalkForward\.test_size must be an integer >= 1"):
        WalkForward(n_folds=2, test_size=0)
    with pytest.raises(ValueError, match=r"cannot split .* too few rows for walk_forward"):
        prepare(bars, window=WINDOW, walk_forward=WalkForward(n_folds=20, test_size=200), fold=0)


# ----------------------------------------------------------------------- import graph


def _imports(path: Path, module: str) -> set[str]:
    """Modules ``path`` imports anywhere (top level or inside functions), outside
    ``if TYPE_CHECKING:`` blocks; ``from a import b`` counts as ``a.b`` and ``a``."""
    tree = ast.parse(path.read_text())
    type_only = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for sub in ast.walk(node)
    }
    package = module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1],
                                 *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _module_imports(module: str) -> set[str]:
    path = ROOT / Path(*module.split(".")).with_suffix(".py")
    return _imports(path, module)


def test_agents_import_nothing_from_the_env_market() -> None:
    for path in sorted((ROOT / "tradezoo" / "agents").glob("*.py")):
        module = f"tradezoo.agents.{path.stem}"
        assert "tradezoo.envs.market" not in _imports(path, module), module
    code = (
        "import importlib, pkgutil, sys, tradezoo.agents as agents\n"
        "for info in pkgutil.iter_modules(agents.__path__):\n"
        "    importlib.import_module(f'tradezoo.agents.{info.name}')\n"
        "print('tradezoo.envs.market' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT, timeout=300)
    assert out.stdout.split()[-1] == "False"


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ("tradezoo.envs.vector_env", "tradezoo.envs.sb3_vec_env"),
        ("tradezoo.agents.checkpoint", "tradezoo.agents.supervised"),
    ],
)
def test_no_import_circle(low: str, high: str) -> None:
    """``high`` builds on ``low``; ``low`` imports nothing of ``high``, at any level."""
    assert low in _module_imports(high)
    assert high not in _module_imports(low)


def test_moved_functions_live_beside_what_they_build() -> None:
    import tradezoo.agents as agents
    import tradezoo.envs as envs
    from tradezoo.agents.supervised import model_from_checkpoint
    from tradezoo.envs.sb3_vec_env import make_sb3_vec_env

    assert agents.model_from_checkpoint is model_from_checkpoint
    assert envs.make_sb3_vec_env.__name__ == make_sb3_vec_env.__name__
