"""Market-relative (cross-sectionally demeaned) targets: the labels the network learns, the market forecast
added back, and no label from after the training cutoff."""

import numpy as np
import pytest

from features.windows import Panel, Splits, splits_before
from forecasting.relative import RelativeForecaster, cross_sectional_mean, demeaned
from tests.forecasting.test_backtest import PRICES, panel_of


def _two_tickers() -> Panel:
    """AAA on days 0-3, BBB on days 1-4 (one shared calendar), two horizons, one unknown label."""
    days = np.datetime64("2020-01-06") + np.arange(5).astype("timedelta64[D]")
    dates = np.concatenate([days[:4], days[1:]])
    Y = np.array([[1, 10], [2, 20], [3, np.nan], [4, 40], [6, 60], [7, 70], [8, 80], [9, 90]], dtype=np.float32)
    n = len(dates)
    return Panel(
        np.zeros((n, 1), np.float32),
        Y,
        dates,
        np.ones(n),
        dates + 2,
        np.repeat(np.array([0, 1], np.int32), 4),
        np.array([0, 4, 8]),
        ["AAA", "BBB"],
        ["f"],
        [1, 2],
    )


def test_the_cross_sectional_mean_by_hand():
    mean = cross_sectional_mean(_two_tickers())
    # day 0: AAA alone; days 1-3: both; day 4: BBB alone; AAA's unknown h2 label on day 2 is left out
    np.testing.assert_array_equal(mean[:, 0], [1, 4, 5, 6, 4, 5, 6, 9])
    np.testing.assert_array_equal(mean[:, 1], [10, 40, 70, 60, 40, 70, 60, 90])
    relative = demeaned(_two_tickers())
    assert np.isnan(relative.Y[2, 1])  # an unknown label stays unknown
    both = np.array([1, 3, 4, 6])  # AAA and BBB on days 1 and 3: the relative labels cancel
    np.testing.assert_array_equal(relative.Y[both[:2], 0] + relative.Y[both[2:], 0], [0, 0])


class _Recorder:
    """A stand-in network: remembers the labels it was fit on, forecasts a constant."""

    name = "recorder"

    def fit(self, panel, splits):
        self.seen = panel.Y[splits.train].copy()

    def predict(self, panel, ends):
        return np.full((len(ends), len(panel.horizons)), 0.5, np.float32)


def test_the_fit_reads_no_label_from_after_its_cutoff_and_adds_the_market_back():
    panel = panel_of(PRICES)
    split = splits_before(panel, 10, np.datetime64("2011-03-01"), val_days=40)
    model = RelativeForecaster("demeaned", _Recorder())
    model.fit(panel, split)
    # what it learns is relative: per date, the labels it saw average to 0 across the tickers
    relative = demeaned(panel, (split.train, split.val))
    np.testing.assert_array_equal(model.inner.seen, relative.Y[split.train])
    assert np.nanmax(np.abs(cross_sectional_mean(relative))) < 1e-7 < np.nanmax(np.abs(model.inner.seen))
    future = panel.target_end >= split.val_start  # not realised when the training labels were
    perturbed = Panel(**{**panel.__dict__, "Y": np.where(future[:, None], panel.Y * 7 + 0.03, panel.Y)})
    again = RelativeForecaster("demeaned", _Recorder())
    again.fit(perturbed, split)
    np.testing.assert_array_equal(again.inner.seen, model.inner.seen)
    # the market forecast is the mean label over train and validation, per horizon
    seen = np.concatenate([split.train, split.val])
    np.testing.assert_allclose(model.market, np.nanmean(panel.Y[seen].astype(np.float64), axis=0), rtol=1e-12)
    ends = panel.ends(10)[-7:]
    np.testing.assert_allclose(model.predict(panel, ends), np.tile(0.5 + model.market, (7, 1)), rtol=1e-6)
    assert model.market[0] != pytest.approx(0.0, abs=1e-9)


def test_a_halted_tickers_later_label_never_demeans_a_training_label():
    """AAA trades on days 0-3; BBB on day 0, then halted until day 10: its day-0 label is realised on day 10,
    long after AAA's training label of day 0 (realised on day 1, before the cutoff of day 2)."""
    d0 = np.datetime64("2020-01-06")
    dates = np.concatenate([d0 + np.arange(4), d0 + np.array([0, 10, 11, 12])]).astype("datetime64[D]")
    target_end = np.concatenate([dates[1:4], [dates[3] + 1], dates[5:8], [dates[7] + 1]])
    split = Splits(np.array([0]), np.array([1]), np.empty(0, np.int64), d0 + 2, d0 + 2, d0 + 2)
    seen = []
    for bbb_day_0 in (0.05, 0.50):
        Y = np.array([[0.01], [0.02], [0.03], [0.04], [bbb_day_0], [0.06], [0.07], [0.08]], np.float32)
        n = len(dates)
        panel = Panel(
            np.zeros((n, 1), np.float32), Y, dates, np.ones(n), target_end,
            np.repeat(np.array([0, 1], np.int32), 4), np.array([0, 4, 8]), ["AAA", "BBB"], ["f"], [1],
        )  # fmt: skip
        model = RelativeForecaster("demeaned", _Recorder())
        model.fit(panel, split)
        seen.append(model.inner.seen.copy())
    np.testing.assert_array_equal(seen[0], seen[1])  # BBB's later label changed nothing AAA trained on
    assert seen[0][0, 0] == 0.0  # alone among the training rows of its date: relative to itself
