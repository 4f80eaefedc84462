import math
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from scipy import stats

from forecasting.metrics import (
    diebold_mariano,
    direction_scores,
    hit_rate,
    mae,
    metrics_table,
    mse,
)
from forecasting.policy import horizon_sources


def test_point_metrics_by_hand():
    assert mse([0.01, -0.02], [0.0, 0.0]) == pytest.approx((0.0001 + 0.0004) / 2)
    assert mae([0.01, -0.02], [0.0, 0.01]) == pytest.approx((0.01 + 0.03) / 2)
    assert hit_rate([0.01, -0.02, 0.03, -0.01], [0.5, 0.1, -0.2, -0.3]) == pytest.approx(0.5)
    # up calls at 0, 1; true ups at 0, 2 -> precision 1/2, recall 1/2, F1 1/2
    assert direction_scores([0.01, -0.02, 0.03, -0.01], [0.5, 0.1, -0.2, -0.3]) == pytest.approx((0.5, 0.5, 0.5))


def test_diebold_mariano_textbook_case_by_hand():
    # d = [1, -1, 2, 0, 3, 1]: mean 1, gamma0 = 10/6, V = gamma0 / 6, DM = 1 / sqrt(10/36) = 1.8974;
    # HLN factor sqrt((6 + 1 - 2) / 6) -> 1.7321; two-sided p from t(5)
    stat, p = diebold_mariano(np.array([1.0, -1, 2, 0, 3, 1]), np.zeros(6), horizon=1)
    assert stat == pytest.approx(1.0 / math.sqrt(10 / 36) * math.sqrt(5 / 6))
    assert stat == pytest.approx(1.7320508, abs=1e-6)
    assert p == pytest.approx(2 * stats.t.sf(1.7320508, df=5), abs=1e-6) and p == pytest.approx(0.1438, abs=1e-4)


def test_diebold_mariano_uses_autocovariances_up_to_h_minus_1():
    rng = np.random.default_rng(0)
    d = np.convolve(rng.normal(0.3, 1, 200), [1, 1, 1], mode="valid")  # an MA(2) loss differential
    n = d.size
    dev = d - d.mean()
    gammas = [dev[k:] @ dev[: n - k] / n for k in range(3)]
    expected = d.mean() / math.sqrt((gammas[0] + 2 * (gammas[1] + gammas[2])) / n)
    expected *= math.sqrt((n + 1 - 6 + 3 * 2 / n) / n)
    stat, p = diebold_mariano(d, np.zeros(n), horizon=3)
    assert stat == pytest.approx(expected)
    assert p < 0.01  # a real difference is found


def test_diebold_mariano_equal_forecasts_and_symmetry():
    a = np.random.default_rng(1).normal(size=50) ** 2
    assert diebold_mariano(a, a, 1) == (0.0, 1.0)
    b = a * 1.5
    s1, p1 = diebold_mariano(a, b, 2)
    s2, p2 = diebold_mariano(b, a, 2)
    assert s1 == pytest.approx(-s2) and p1 == pytest.approx(p2)


def frame(models: dict[str, list[float]], truth: list[float], tickers=("A",), lower=None) -> pl.DataFrame:
    rows = []
    days = [date(2020, 1, 1) + timedelta(days=i) for i in range(len(truth))]
    for model, preds in models.items():
        for t in tickers:
            for d, y, p in zip(days, truth, preds, strict=True):
                row = {
                    "model": model,
                    "ticker": t,
                    "asof_date": d,
                    "horizon": 1,
                    "target_date": d + timedelta(days=1),
                    "y_true": y,
                    "y_pred": p,
                    "last_price": 100.0,
                }
                if lower is not None:
                    row |= {"y_lower": p - lower, "y_upper": p + lower}
                rows.append(row)
    return pl.DataFrame(rows)


def test_metrics_table_by_hand():
    truth = [0.02, -0.01, -0.02, 0.01]
    table = metrics_table(frame({"m": [0.01, 0.0, -0.01, 0.02], "random_walk": [0.0] * 4}, truth, lower=0.015))
    r = table.filter((pl.col("model") == "m") & (pl.col("scope") == "pooled")).row(0, named=True)
    assert r["ticker"] is None
    assert r["mse"] == pytest.approx(0.0001)  # every error is 0.01
    assert r["baseline_mse"] == pytest.approx((0.0004 + 0.0001 + 0.0004 + 0.0001) / 4)
    assert r["mse_ratio"] == pytest.approx(0.4)
    assert r["hit_rate"] == pytest.approx(0.75)  # 0.0 counts as 'up': wrong once
    assert r["up_rate"] == pytest.approx(0.5)
    assert r["coverage"] == pytest.approx(1.0) and r["interval_width"] == pytest.approx(0.03)
    assert r["price_mae"] == pytest.approx(
        np.mean(np.abs(100 * np.exp(truth) - 100 * np.exp([0.01, 0.0, -0.01, 0.02])))
    )
    assert r["dm_stat"] < 0
    assert table.filter(pl.col("ticker") == "A").height == 2  # per-ticker rows too


def test_the_mse_ratio_compares_the_rows_both_forecast_and_rows_without_an_outcome_are_not_scored():
    truth = [0.01, -0.02, 0.10, float("nan")]  # the last outcome is not known yet
    predictions = frame({"m": [0.0, 0.0, -0.10, 0.5], "random_walk": [0.0] * 4}, truth)
    # the random walk has no forecast on the third day: the model's bad miss there is not in the ratio
    predictions = predictions.filter(~((pl.col("model") == "random_walk") & (pl.col("y_true") == 0.10)))
    r = metrics_table(predictions).filter((pl.col("model") == "m") & (pl.col("scope") == "pooled")).row(0, named=True)
    assert r["n"] == 3
    assert r["mse"] == pytest.approx((0.0001 + 0.0004 + 0.04) / 3)
    assert r["mse_ratio"] == pytest.approx(1.0)  # on the two shared rows both forecast 0
    assert r["hit_rate"] == pytest.approx(1 / 3)  # a zero forecast is "up": right on day 1 only


def test_a_missing_forecast_is_a_failure_not_a_row_left_out():
    """A model that forecasts NaN where it is hard must not be scored on the rows it chose (a reviewer's case:
    ratio 0.49, p 4e-15 on the rest): its MSE, ratio and test are NaN, and no horizon has skill."""
    rng = np.random.default_rng(0)
    truth = list(rng.normal(0, 0.01, 60))
    chosen = [y if abs(y) < 0.01 else float("nan") for y in truth]  # perfect where easy, silent where hard
    table = metrics_table(frame({"m": chosen, "random_walk": [0.0] * 60}, truth))
    r = table.filter((pl.col("model") == "m") & (pl.col("scope") == "pooled")).row(0, named=True)
    assert r["n"] == 60 and math.isnan(r["mse"]) and math.isnan(r["mse_ratio"]) and math.isnan(r["dm_pvalue"])
    assert not horizon_sources(table, "m", ("random_walk",), 0.05, "baseline_if_worse")[1].skill


def test_a_constant_gap_in_losses_is_decisive_not_no_evidence():
    assert diebold_mariano(np.zeros(10), np.full(10, 0.5), 1) == (-math.inf, 0.0)
    assert diebold_mariano(np.full(10, 0.5), np.zeros(10), 3) == (math.inf, 0.0)


def test_skill_needs_a_lower_ratio_and_significance():
    rng = np.random.default_rng(3)
    truth = rng.normal(0, 0.01, 300)
    good = truth + rng.normal(0, 0.002, 300)
    table = metrics_table(frame({"m": list(good), "bad": list(-truth), "random_walk": [0.0] * 300}, list(truth)))
    sources = {m: horizon_sources(table, m, ("random_walk",), 0.05, "flag")[1] for m in ("m", "bad")}
    assert sources["m"].skill and not sources["m"].worse
    assert not sources["bad"].skill and sources["bad"].worse


def test_diebold_mariano_needs_more_periods_than_the_horizon():
    """The first nights of a live record (or a horizon the data cannot hold) have fewer origins than the
    horizon's overlapping errors need: no test, never a crash."""
    d = np.array([0.5, -0.2, 0.3, 0.1])
    assert all(math.isnan(v) for v in diebold_mariano(d, np.zeros(4), horizon=5))
    assert all(math.isnan(v) for v in diebold_mariano(d[:2], np.zeros(2), horizon=5))
    assert all(math.isnan(v) for v in diebold_mariano(d, np.zeros(4), horizon=4))
    stat, p = diebold_mariano(d, np.zeros(4), horizon=2)
    assert stat > 0 and 0 < p < 1


def test_the_pooled_diebold_mariano_statistic_does_not_depend_on_the_order_of_the_rows():
    """The same predictions in another row order give the same pooled DM statistic to the last bit (its
    per-date means once summed in an order that changed from run to run)."""
    rng = np.random.default_rng(3)
    tickers, dates = [f"T{i:02d}" for i in range(40)], [date(2020, 1, 1) + timedelta(days=d) for d in range(120)]
    grid = pl.DataFrame({"ticker": tickers}).join(pl.DataFrame({"asof_date": dates}), how="cross")
    y = rng.normal(0, 0.02, grid.height)
    frames = [
        grid.with_columns(model=pl.lit(m), horizon=pl.lit(1), y_true=pl.Series(y), y_pred=pl.Series(pred))
        for m, pred in (("random_walk", np.zeros_like(y)), ("model", y * 0.1 + rng.normal(0, 0.02, grid.height)))
    ]
    predictions = pl.concat(frames)

    def pooled(frame):
        return metrics_table(frame).filter((pl.col("scope") == "pooled") & (pl.col("model") == "model"))["dm_stat"]

    reference = pooled(predictions)[0]
    assert math.isfinite(reference)
    for seed in range(5):
        assert pooled(predictions.sample(fraction=1.0, shuffle=True, seed=seed))[0] == reference


def test_a_tickers_row_is_the_pooled_row_of_that_ticker_alone():
    """The per-ticker rows come from one sorted pass over each (model, horizon) (a filter and join per ticker was
    quadratic in tickers): each equals the pooled row of a table of that ticker's predictions alone, on shuffled
    rows with missing forecasts, rows without a band and a ticker the baseline forecast only in part or not at
    all."""
    rng = np.random.default_rng(5)
    tickers, dates = ["A", "B", "C", "D"], [date(2021, 3, 1) + timedelta(days=d) for d in range(50)]
    grid = pl.DataFrame({"ticker": tickers}).join(pl.DataFrame({"asof_date": dates}), how="cross")
    y = rng.normal(0, 0.02, grid.height)
    frames = []
    for h in (1, 3):
        for m, pred in (("random_walk", np.zeros_like(y)), ("model", y * 0.2 + rng.normal(0, 0.02, grid.height))):
            pred = np.where(rng.random(grid.height) < 0.05, np.nan, pred) if m == "model" else pred
            band = rng.random(grid.height) < 0.7
            frames.append(
                grid.with_columns(
                    model=pl.lit(m),
                    horizon=pl.lit(h),
                    y_true=pl.Series(y),
                    y_pred=pl.Series(pred),
                    last_price=pl.Series(rng.uniform(10, 50, grid.height)),
                    y_lower=pl.Series(np.where(band, -0.03, np.nan)).fill_nan(None),
                    y_upper=pl.Series(np.where(band, 0.03, np.nan)).fill_nan(None),
                )
            )
    predictions = pl.concat(frames).with_columns(pl.col("y_pred").fill_nan(None))
    late = (pl.col("ticker") == "C") & (pl.col("asof_date") > date(2021, 4, 1))
    predictions = predictions.filter(~((pl.col("model") == "random_walk") & (late | (pl.col("ticker") == "D"))))
    predictions = predictions.sample(fraction=1.0, shuffle=True, seed=1)  # (sums run in the rows' order)
    table = metrics_table(predictions)
    for ticker in tickers:
        alone = metrics_table(predictions.filter(pl.col("ticker") == ticker)).filter(pl.col("scope") == "pooled")
        mine = table.filter(pl.col("ticker") == ticker).drop("scope", "ticker").sort("model", "horizon")
        expected = alone.drop("scope", "ticker").sort("model", "horizon")
        assert mine.height == (2 if ticker == "D" else 4)  # D: the baseline has no rows of it
        for column in expected.columns:
            a, b = mine[column], expected[column]
            assert a.dtype == b.dtype and a.is_null().equals(b.is_null()), (ticker, column)
            if a.dtype.is_float():
                np.testing.assert_array_equal(a.to_numpy(), b.to_numpy(), err_msg=f"{ticker} {column}")
            else:
                assert a.equals(b), (ticker, column)
    d = table.filter((pl.col("ticker") == "D") & (pl.col("model") == "model"))
    assert d["mse_ratio"].is_nan().all() and d["dm_pvalue"].is_nan().all()  # nothing to compare with


def test_per_ticker_rows_by_hand_with_duplicated_baseline_rows_and_a_missing_ticker_name():
    """Figures of a ticker computed here with numpy alone; a baseline row given twice counts twice in the
    baseline's figures only (as a join of the two does), never in the model's own; a row without a ticker name
    is scored as its own group, not an error."""
    rng = np.random.default_rng(8)
    days = [date(2022, 1, 3) + timedelta(days=d) for d in range(30)]
    y, pred = rng.normal(0, 0.02, 60), rng.normal(0, 0.01, 60)
    tickers = ["A"] * 30 + ["B"] * 30
    model = pl.DataFrame({"ticker": tickers, "asof_date": days * 2, "y_true": y, "y_pred": pred}).with_columns(
        model=pl.lit("m"), horizon=pl.lit(1)
    )
    walk = model.with_columns(model=pl.lit("random_walk"), y_pred=pl.lit(0.0))
    twice = walk.filter(pl.col("ticker") == "B").head(3)
    nameless = model.head(2).with_columns(ticker=pl.lit(None, pl.String), asof_date=pl.lit(date(2023, 1, 2)))
    table = metrics_table(pl.concat([model, walk, twice, nameless]))

    def row(ticker):
        mine = (pl.col("model") == "m") & (pl.col("scope") == "ticker") & pl.col("ticker").eq_missing(ticker)
        return table.filter(mine).row(0, named=True)

    b, yb, pb = row("B"), y[30:], pred[30:]
    assert b["n"] == 30 and b["mse"] == pytest.approx(np.mean((yb - pb) ** 2), rel=1e-12)
    # the baseline's 3 doubled rows: their pairs count twice in the ratio
    yy, pp = np.r_[yb, yb[:3]], np.r_[pb, pb[:3]]
    assert b["mse_ratio"] == pytest.approx(np.mean((yy - pp) ** 2) / np.mean(yy**2), rel=1e-12)
    a = row("A")
    assert a["n"] == 30 and a["mse_ratio"] == pytest.approx(np.mean((y[:30] - pred[:30]) ** 2) / np.mean(y[:30] ** 2))
    none = row(None)
    assert none["n"] == 2 and math.isnan(none["mse_ratio"])  # the baseline has no row of it
