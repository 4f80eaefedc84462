"""The conformal window counts target dates, every ticker's residuals of each (issue 14's intervals at scale)."""

from datetime import date, timedelta

import numpy as np
import polars as pl

from forecasting.conformal import conformal_intervals, conformal_quantile_offsets, conformal_widths

START = date(2021, 3, 1)


def _frame(n_tickers: int, n_days: int, seed: int = 0) -> pl.DataFrame:
    """Horizon-1 predictions of y_pred = 0: on the last two target dates ticker i's residual is i / 100, on every
    earlier one 1000; sigma 1 (scaled and plain residuals agree)."""
    rows = []
    for d in range(n_days):
        target = START + timedelta(days=d + 1)
        for i in range(n_tickers):
            late = d >= n_days - 2
            rows.append(
                {
                    "model": "m",
                    "ticker": f"T{i:03d}",
                    "asof_date": START + timedelta(days=d),
                    "horizon": 1,
                    "target_date": target,
                    "y_true": i / 100 if late else 1000.0,
                    "y_pred": 0.0,
                    "sigma": 1.0,
                }
            )
    frame = pl.DataFrame(rows)
    return frame.sample(fraction=1.0, shuffle=True, seed=seed)  # row order must not matter


def test_the_window_holds_every_tickers_residuals_of_its_last_dates():
    frame = _frame(n_tickers=300, n_days=6)
    last_target = START + timedelta(days=6)
    # two target dates of 300 tickers: 600 residuals, the largest 2.99; 250 residuals would have held part of one
    # date's cross-section (whichever tickers sorted last)
    width = conformal_widths(frame, last_target, coverage=1.0, window=2, min_count=5)[("m", 1)]
    assert width == 2.99
    # three dates reach back to the 1000s
    assert conformal_widths(frame, last_target, coverage=1.0, window=3, min_count=5)[("m", 1)] == 1000.0
    # the conformal median of 0.00 .. 2.99, each twice: the ceil(601 x 0.5) = 301st smallest, 1.50
    offsets = conformal_quantile_offsets(frame, last_target, (0.25, 0.5, 0.75), window=2, min_count=5)[("m", 1)]
    assert np.allclose(offsets, [-1.5, 0.0, 1.5])


def test_row_order_does_not_move_the_band():
    a = conformal_intervals(_frame(40, 8, seed=1), 0.8, window=1, min_count=5, scaled=True)
    b = conformal_intervals(_frame(40, 8, seed=2), 0.8, window=1, min_count=5, scaled=True)
    key = ["ticker", "asof_date"]
    assert a.sort(key)["y_upper"].to_list() == b.sort(key)["y_upper"].to_list()
    # at the last origin one target date is realised with small residuals 0.00 .. 0.39: the conformal 0.8-quantile
    # is the ceil(41 x 0.8) = 33rd smallest, 0.32 (linear interpolation would give 0.312, covering less than 0.8)
    last = a.filter(pl.col("asof_date") == START + timedelta(days=7))["y_upper"].unique().to_list()
    assert last == [0.32]


def test_too_few_residuals_give_no_band():
    frame = _frame(n_tickers=3, n_days=4)
    assert np.isnan(conformal_widths(frame, START + timedelta(days=4), 0.8, window=1, min_count=4)[("m", 1)])
    assert conformal_widths(frame, START + timedelta(days=4), 0.8, window=2, min_count=4)[("m", 1)] > 0
