import warnings

import numpy as np
import pytest

from features.build import build_features
from features.denoise import denoise
from features.settings import DenoiseSettings, FeatureSettings, WindowSettings, held_dates
from features.windows import Scaler, date_splits, make_panel, training_rows
from nightcast.errors import ConfigError, InsufficientDataError
from tests.conftest import synthetic_prices


@pytest.fixture(scope="module")
def panel():
    prices = synthetic_prices(["AAA", "BBB", "CCC"], 400, seed=1)
    ff = build_features(denoise(prices, DenoiseSettings()), FeatureSettings())
    return make_panel(ff, max_horizon=5)


def test_windows_are_views_not_copies(panel):
    view = panel.windows(lookback=20)
    assert np.shares_memory(view, panel.X)
    end = panel.offsets[1] + 30
    np.testing.assert_array_equal(view[end - 19], panel.X[end - 19 : end + 1])
    assert view.shape == (len(panel.X) - 19, 20, panel.X.shape[1])


def test_no_window_mixes_tickers(panel):
    ends = panel.ends(lookback=20)
    starts = ends - 19
    assert np.array_equal(panel.ticker_id[starts], panel.ticker_id[ends])
    # the first sample of each ticker starts exactly at its first row
    for i in range(len(panel.tickers)):
        first = ends[panel.ticker_id[ends] == i].min()
        assert first == panel.offsets[i] + 19


def test_splits_are_purged_and_ordered(panel):
    s = date_splits(panel, WindowSettings(lookback=20, test_days=50, val_days=60))
    assert panel.target_end[s.train].max() < s.val_start  # no train target reaches validation
    assert panel.target_end[s.val].max() < s.test_start  # no validation target reaches test
    assert panel.dates[s.train].max() < panel.dates[s.val].min() < panel.dates[s.test].min()
    assert len(np.unique(panel.dates[s.test])) == 50
    assert not np.isnan(panel.Y[s.test]).any()
    # the gap between the spans is the longest horizon (5 trading days)
    train_last = np.unique(panel.dates[s.train]).max()
    grid = np.unique(panel.dates)
    assert np.searchsorted(grid, s.val_start) - np.searchsorted(grid, train_last) == 6


def test_the_held_share_of_the_validation_span_is_kept_out_of_early_stopping_and_purged(panel):
    """`Splits.held`: the latest dates of the validation span, for the combination's weights; the early-stopping
    samples' targets end before them, and together with training they are every realised sample."""
    w = WindowSettings(lookback=20, test_days=50, val_days=60)
    whole = date_splits(panel, w)
    s = date_splits(panel, w, held_share=0.5)
    grid = np.unique(panel.dates[whole.val])
    assert np.array_equal(np.unique(panel.dates[s.held]), grid[-30:])  # the last 30 of the 60 dates
    assert panel.target_end[s.val].max() < panel.dates[s.held].min()  # purged: no early-stopping label reaches them
    assert np.array_equal(np.unique(panel.dates[s.val]), grid[: 30 - 5])  # less the longest horizon's 5 dates
    assert panel.target_end[s.held].max() < s.test_start
    np.testing.assert_array_equal(s.train, whole.train)
    np.testing.assert_array_equal(s.test, whole.test)
    first_held = panel.dates[s.held].min()
    purged = whole.val[(panel.dates[whole.val] < first_held) & (panel.target_end[whole.val] >= first_held)]
    np.testing.assert_array_equal(s.purged, purged)  # realised: still seen by the mean and the ridge
    np.testing.assert_array_equal(s.seen, whole.seen)
    np.testing.assert_array_equal(s.validation, whole.val)
    assert not set(s.val) & set(s.held) and purged.size > 0
    assert whole.held.size == 0 and np.array_equal(whole.validation, whole.val)  # none held by default
    with pytest.raises(InsufficientDataError, match="publish.combination_holdout"):
        date_splits(panel, WindowSettings(lookback=20, test_days=50, val_days=8), held_share=0.5)
    with pytest.raises(ConfigError, match="holdout 0.01 of windows.val_days 60 holds no date"):
        date_splits(panel, w, held_share=0.01)  # a share that holds nothing would fit the weights elsewhere
    assert held_dates(100, 0.29) == 29 and held_dates(100, 0.57) == 57  # int(100 * 0.29) is 28


def test_scaler_fits_on_the_training_span_only(panel):
    s = date_splits(panel, WindowSettings(lookback=20, test_days=50, val_days=60))
    rows = training_rows(panel, s)
    assert panel.dates[rows].max() < s.val_start
    before = Scaler.fit(panel.X[rows])
    X = panel.X.copy()
    X[panel.dates >= s.val_start] *= 1000  # wild values after the training span
    after = Scaler.fit(X[training_rows(panel, s)])
    np.testing.assert_array_equal(before.mean, after.mean)
    np.testing.assert_array_equal(before.std, after.std)


def test_scaler_standardises_and_survives_constant_columns():
    values = np.array([[1.0, 5.0], [3.0, 5.0]], dtype=np.float32)
    scaler = Scaler.fit(values)
    np.testing.assert_allclose(scaler.transform(values), [[-1.0, 0.0], [1.0, 0.0]])
    assert Scaler.from_dict(scaler.to_dict()).std.tolist() == scaler.std.tolist()


def test_too_little_history_is_a_clear_error(panel):
    with pytest.raises(InsufficientDataError, match="test_days"):
        date_splits(panel, WindowSettings(lookback=20, test_days=200, val_days=200))


def test_distinct_dates_equal_numpy_unique(panel):
    from features.windows import distinct_dates

    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(panel.dates), 500, replace=False))
    np.testing.assert_array_equal(distinct_dates(panel.dates, rows), np.unique(panel.dates[rows]))
    assert distinct_dates(panel.dates, rows[:0]).size == 0


def test_ends_and_target_dates_with_a_ticker_shorter_than_the_lookback():
    """Brute force: a sample end needs `lookback` rows of its own ticker; target_end is max_horizon rows ahead
    in the same ticker, NaT past its last row."""
    import polars as pl

    from tests.conftest import synthetic_prices

    prices = pl.concat([synthetic_prices(["AAA"], 200, seed=1), synthetic_prices(["BBB"], 68, seed=2)])
    ff = build_features(denoise(prices, DenoiseSettings()), FeatureSettings(), chunk_rows=50)
    p = make_panel(ff, max_horizon=5)
    assert [int(n) for n in np.diff(p.offsets)] == [200 - 63, 68 - 63]  # BBB keeps 5 rows: fewer than 20
    ends = p.ends(lookback=20)
    position = np.arange(len(p.dates)) - p.offsets[p.ticker_id]
    np.testing.assert_array_equal(ends, np.flatnonzero(position >= 19))
    assert not (p.ticker_id[ends] == 1).any()
    for row in range(len(p.dates)):
        same = row + 5 < p.offsets[p.ticker_id[row] + 1]
        assert (p.target_end[row] == p.dates[row + 5]) if same else np.isnat(p.target_end[row])


def test_scaler_transform_is_standardised_float32_without_touching_its_input():
    from features.windows import Scaler

    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        values = rng.normal(3.0, 2.0, (500, 4)).astype(dtype)
        values[rng.random(values.shape) < 0.1] = np.nan
        before = values.copy()
        scaler = Scaler.fit(values)
        out = scaler.transform(values)
        expected = np.nan_to_num((values - scaler.mean) / scaler.std, nan=0.0).astype(np.float32)
        assert out.dtype == np.float32 and np.array_equal(out, expected)
        np.testing.assert_array_equal(values, before)  # worked on in place, but on its own copy


def test_column_moments_equal_float64_numpy_across_blocks(monkeypatch):
    """Blocks of rows merged (Chan's update) give numpy's float64 NaN-ignoring mean and std, with a row subset,
    a column missing in whole blocks, one with no value at all, and a constant one."""
    import features.windows as windows

    rng = np.random.default_rng(3)
    values = (rng.normal(size=(1000, 5)) * [1, 10, 1e3, 1, 1] + [0, 50, -1e4, 0, 7]).astype(np.float32)
    values[rng.random(values.shape) < 0.1] = np.nan
    values[:400, 0] = np.nan  # missing from the first blocks
    values[:, 3] = np.nan  # never seen
    values[:, 4] = 7.0  # constant
    rows = np.sort(rng.choice(1000, 700, replace=False))
    monkeypatch.setattr(windows, "_BLOCK_ROWS", 64)  # many blocks, some with no value of column 0
    n, mean, std = windows.column_moments(values, rows)
    reference = values[rows].astype(np.float64)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_allclose(mean, np.nanmean(reference, axis=0), rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(std, np.nanstd(reference, axis=0), rtol=1e-10, atol=1e-12)
    assert n.tolist() == (~np.isnan(reference)).sum(axis=0).tolist()
    scaler = windows.Scaler.fit(values, rows)
    assert scaler.mean[3] == 0.0 and scaler.std[3] == 1.0 and scaler.std[4] == 1.0  # unseen / constant
    whole = windows.column_moments(values)
    np.testing.assert_allclose(whole[1][[1, 2]], np.nanmean(values[:, [1, 2]].astype(np.float64), axis=0))


def test_column_moments_take_a_boolean_mask_and_survive_infinite_values(monkeypatch):
    import features.windows as windows

    monkeypatch.setattr(windows, "_BLOCK_ROWS", 16)
    rng = np.random.default_rng(5)
    values = rng.normal(size=(100, 3)).astype(np.float32)
    values[7, 1] = np.inf
    mask = rng.random(100) < 0.6
    mask[7] = True  # the infinite value is among the rows
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning either
        by_mask, by_index = windows.column_moments(values, mask), windows.column_moments(values, np.flatnonzero(mask))
        scaler = windows.Scaler.fit(values, mask)
    for a, b in zip(by_mask, by_index, strict=True):
        np.testing.assert_array_equal(a, b)
    assert scaler.mean[1] == 0.0 and scaler.std[1] == 1.0  # a non-finite column: neutral
    np.testing.assert_allclose(scaler.mean[[0, 2]], values[mask][:, [0, 2]].mean(axis=0), rtol=1e-6)


def test_features_in_the_panels_precision_give_the_same_panel_in_less_memory():
    """The nightly's chunks wait in float32 (`in_panel_precision`): the panel stacked from them is bit for bit
    the one from the float64 frame (nulls still NaN), and the prices the forecasts are based on stay float64."""
    import polars as pl

    from features.windows import in_panel_precision

    prices = synthetic_prices(["AAA", "BBB"], 300, seed=3)
    ff = build_features(denoise(prices, DenoiseSettings()), FeatureSettings())
    values = [*ff.features, *ff.targets]
    assert ff.frame.select(pl.col(values).null_count().sum()).sum_horizontal().item() > 0  # targets at the end
    slim = in_panel_precision(ff)
    assert {slim.frame[c].dtype for c in values} == {pl.Float32}
    assert slim.frame["adj_close"].dtype == pl.Float64 and slim.frame["close"].dtype == pl.Float64
    saved = ff.frame.select(ff.targets).estimated_size() - slim.frame.select(ff.targets).estimated_size()
    assert saved == 4 * len(ff.targets) * ff.frame.height  # float64 targets -> float32
    a, b = make_panel(ff, max_horizon=5), make_panel(slim, max_horizon=5)
    for name in ("X", "Y", "price", "dates", "target_end", "ticker_id", "offsets"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert np.isnan(b.Y).any() and a.price.dtype == b.price.dtype == np.float64


def test_dates_short_is_exactly_what_the_evaluation_needs(panel):
    """`dates_short` (the nightly's refusal of a night too early, before training) is 0 exactly when the
    evaluation's splits can be made: the test span, a purge, the validation span, a purge and a training date."""
    from features.windows import dates_short, distinct_dates, known_ends
    from forecasting.backtest import Schedule
    from forecasting.settings import BacktestSettings, PublishSettings, held_share

    have = distinct_dates(panel.dates, known_ends(panel, 20)).size
    test_days = 100
    enough = WindowSettings(lookback=20, test_days=test_days, val_days=have - test_days - 2 * 5 - 1)
    over = enough.model_copy(update={"val_days": enough.val_days + 1})
    assert dates_short(panel, enough) == 0 and dates_short(panel, over) == 1
    bt = BacktestSettings(refit_every=0)  # the nightly's evaluation: one fit before the last test_days origins
    for w, works in ((enough, True), (over, False)):
        try:
            split = date_splits(panel, w)
            held = held_share(bt.models, PublishSettings())
            fold = next(
                Schedule.from_settings(panel, bt, w.lookback, w.val_days, w.test_days, held_share=held).folds(panel)
            )
        except InsufficientDataError:
            assert not works, w
        else:
            assert works and split.train.size and fold.split.train.size, w
