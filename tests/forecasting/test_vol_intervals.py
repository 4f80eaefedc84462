"""Intervals in units of a causal volatility forecast: right in calm and wild markets alike, and published."""

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from forecasting.conformal import conformal_intervals
from forecasting.publish import merge_forecasts
from forecasting.volatility import RISKMETRICS_LAMBDA, panel_sigma
from tests.forecasting.test_backtest import PRICES, panel_of


def _two_regimes(n_days: int = 600, seed: int = 0) -> pl.DataFrame:
    """One model's forecasts for 4 tickers, whose errors have the spread `sigma` says: calm days (1) and wild (3)."""
    rng = np.random.default_rng(seed)
    rows = []
    start = date(2020, 1, 1)
    for day in range(n_days):
        for t in range(4):
            sigma = 3.0 if (day // 50 + t) % 2 else 1.0
            rows.append(
                {
                    "model": "m",
                    "ticker": f"T{t}",
                    "asof_date": start + timedelta(days=day),
                    "horizon": 1,
                    "target_date": start + timedelta(days=day + 1),
                    "y_true": rng.normal(0, sigma),
                    "y_pred": 0.0,
                    "sigma": sigma,
                }
            )
    return pl.DataFrame(rows)


def _coverage(frame: pl.DataFrame, wild: bool) -> float:
    rows = frame.drop_nulls("y_lower").filter((pl.col("sigma") > 2) == wild)
    return float(((rows["y_true"] >= rows["y_lower"]) & (rows["y_true"] <= rows["y_upper"])).mean())


def test_scaled_intervals_cover_calm_and_wild_days_alike():
    frame = _two_regimes()
    plain = conformal_intervals(frame, 0.8, 250, 50)
    scaled = conformal_intervals(frame, 0.8, 250, 50, scaled=True)
    # one width for all: too wide when calm, too narrow when wild
    assert _coverage(plain, wild=False) > 0.95 and _coverage(plain, wild=True) < 0.7
    for wild in (False, True):
        assert abs(_coverage(scaled, wild) - 0.8) < 0.04, wild
    # the half-width is the past scaled residuals' quantile times this origin's sigma
    half = (scaled["y_upper"] - scaled["y_pred"]) / scaled["sigma"]
    per_day = scaled.with_columns(half.round(9).alias("q")).group_by("asof_date").agg(pl.col("q").n_unique())
    assert (per_day["q"] == 1).all()


def test_the_volatility_forecast_uses_no_price_after_its_row():
    panel = panel_of(PRICES)
    sigma = panel_sigma(panel, 1.0)  # the fast EWMA alone
    assert sigma.shape == (len(panel.dates), len(panel.horizons)) and np.isfinite(sigma[-1]).all()
    # the EWMA by hand for the first ticker's last row
    first = slice(panel.offsets[0], panel.offsets[1])
    r = np.diff(np.log(panel.price[first]))
    w = RISKMETRICS_LAMBDA ** np.arange(len(r))[::-1]
    np.testing.assert_allclose(sigma[panel.offsets[1] - 1, 0], np.sqrt(np.sum(w * r**2) / w.sum()), rtol=1e-9)
    np.testing.assert_allclose(sigma[:, 1], sigma[:, 0] * np.sqrt(panel.horizons[1]), rtol=1e-12)
    cut = panel.offsets[0] + 200
    later = panel.price.copy()
    later[cut + 1 : panel.offsets[1]] *= np.exp(np.random.default_rng(1).normal(0, 0.2, panel.offsets[1] - cut - 1))
    perturbed = panel_sigma(type(panel)(**{**panel.__dict__, "price": later}), 1.0)
    np.testing.assert_array_equal(perturbed[: cut + 1], sigma[: cut + 1])
    assert not np.allclose(perturbed[cut + 2 : panel.offsets[1]], sigma[cut + 2 : panel.offsets[1]])


def test_forecasts_stored_by_an_older_version_keep_their_other_tickers(tmp_path):
    row = {
        "run_id": "r",
        "model_version": "v",
        "asof_date": date(2024, 1, 2),
        "ticker": "OLD",
        "horizon": 1,
        "target_date": date(2024, 1, 3),
        "last_price": 10.0,
        "pred_log_return": 0.0,
        "pred_price": 10.0,
        "pred_lower": None,
        "pred_upper": None,
        "skill": False,
        "source_model": "random_walk",
        "trained_through": None,
        "eval_version": None,
        "eval_start": None,
        "eval_end": None,
    }
    pl.DataFrame([row]).write_parquet(tmp_path / "forecasts.parquet")  # no pred_vol: nightcast 0.3
    new = pl.DataFrame([{**row, "ticker": "NEW", "pred_vol": 0.02}]).select(
        [c for c in [*row, "pred_vol"] if c != "pred_vol"][:11] + ["pred_vol"] + list(row)[11:]
    )
    merged = merge_forecasts(tmp_path, "forecasts", new, ["NEW"], ["parquet"])
    assert merged["ticker"].to_list() == ["NEW", "OLD"] and merged["pred_vol"].to_list() == [0.02, None]


def test_the_volatility_reverts_to_the_long_run_by_the_blend():
    panel = panel_of(PRICES)
    fast, slow, blend = panel_sigma(panel, 1.0), panel_sigma(panel, 0.0), panel_sigma(panel, 0.25)
    np.testing.assert_allclose(blend**2, 0.25 * fast**2 + 0.75 * slow**2, rtol=1e-9)
    first = slice(panel.offsets[0], panel.offsets[1])
    r = np.diff(np.log(panel.price[first]))
    w = 0.995 ** np.arange(len(r))[::-1]
    np.testing.assert_allclose(slow[panel.offsets[1] - 1, 0], np.sqrt(np.sum(w * r**2) / w.sum()), rtol=1e-9)


def test_quantile_forecasts_are_symmetric_past_residuals_in_volatility_units_and_scored_against_the_band():
    from forecasting.conformal import conformal_quantiles
    from forecasting.intervals import NORMAL_BAND, quantile_scores

    frame = _two_regimes(n_days=400).with_columns(pl.lit(0.01).alias("y_pred"))
    out = conformal_quantiles(frame, (0.05, 0.1, 0.5, 0.9, 0.95), 250, 50)
    known = out.drop_nulls("q0.95")
    assert known.height > 0.8 * out.height and known["asof_date"].min() > frame["asof_date"].min()
    np.testing.assert_allclose(known["q0.5"], known["y_pred"])  # the median is the forecast itself
    np.testing.assert_allclose(known["q0.95"] - known["y_pred"], known["y_pred"] - known["q0.05"])  # symmetric
    # in units of sigma: the same multiple of sigma on calm and wild rows of a date
    units = known.with_columns(((pl.col("q0.9") - pl.col("y_pred")) / pl.col("sigma")).round(9).alias("u"))
    assert (units.group_by("asof_date").agg(pl.col("u").n_unique())["u"] == 1).all()
    # the first origin with quantiles had min_count residuals realised before it, none after
    first = known["asof_date"].min()
    assert frame.filter(pl.col("target_date") <= first).group_by("model").len()["len"].item() >= 50
    # errors drawn from N(0, sigma): the 90% quantile sits near 1.28 sigma, and the scores match the normal band's
    assert abs(units["u"].median() - 1.2816) < 0.1
    scores = quantile_scores(out, (0.05, 0.1, 0.5, 0.9, 0.95))
    band = scores.filter(pl.col("model") == NORMAL_BAND)
    assert (
        band["pinball_ratio"].to_list() == [1.0]
        and abs(scores.filter(pl.col("model") == "m")["pinball_ratio"].item() - 1) < 0.03
    )


def test_published_quantiles_are_the_backtests_quantiles_of_that_origin():
    """What the nightly publishes around a forecast made at D is what the backtest scored at origin D: the
    same offsets in units of sigma, from the residuals realised by D."""
    from forecasting.conformal import conformal_quantile_offsets, conformal_quantiles

    levels = (0.05, 0.1, 0.5, 0.9, 0.95)
    frame = _two_regimes(n_days=300).with_columns(pl.lit(0.01).alias("y_pred"))
    day = date(2020, 1, 1) + timedelta(days=250)
    scored = conformal_quantiles(frame, levels, 250, 50).filter(pl.col("asof_date") == day).sort("ticker")
    offsets = conformal_quantile_offsets(frame, day, levels, 250, 50)[("m", 1)]
    assert offsets[2] == 0 and (np.diff(offsets) > 0).all() and offsets[0] == pytest.approx(-offsets[-1])
    published = 0.01 + offsets[None, :] * scored["sigma"].to_numpy()[:, None]
    np.testing.assert_allclose(published, scored.select(f"q{q}" for q in levels).to_numpy(), rtol=1e-12)
    # before min_count residuals are realised: none
    assert np.isnan(conformal_quantile_offsets(frame, date(2020, 1, 5), levels, 250, 50)[("m", 1)]).all()


def test_volatility_qlike_scores_the_published_volatility_beside_ewma_and_har():
    from forecasting.backtest import long_predictions
    from forecasting.intervals import qlike
    from forecasting.volatility import volatility_qlike

    panel = panel_of(PRICES)
    sigma = panel_sigma(panel, 0.25)
    ends = np.flatnonzero((panel.dates >= np.datetime64("2011-03-01")) & np.isfinite(panel.Y).all(axis=1))
    zero = np.zeros((len(ends), len(panel.horizons)))
    predictions = pl.concat([long_predictions(panel, ends, zero, m, sigma) for m in ("random_walk", "hist_mean")])
    table = volatility_qlike(panel, predictions)
    assert table["forecast"].unique().sort().to_list() == ["ewma_0.94", "har", "published"]
    assert table.group_by("horizon").agg(pl.col("n").n_unique())["n"].to_list() == [1, 1]  # the same rows
    # one row per origin (the models share its volatility), all known here: the published one by hand
    rows = predictions.filter((pl.col("model") == "hist_mean") & (pl.col("horizon") == 3))
    by_hand = qlike(rows["y_true"].to_numpy() ** 2, rows["sigma"].to_numpy() ** 2).mean()
    mine = table.filter((pl.col("forecast") == "published") & (pl.col("horizon") == 3))
    assert mine["n"].item() == rows.height == len(ends) and mine["qlike"].item() == pytest.approx(by_hand, rel=1e-12)


def _panel_prices(panel) -> pl.DataFrame:
    """`ticker, date, adj_close, row`: the panel's adjusted closes as a long frame with ticker names."""
    return pl.DataFrame(
        {
            "ticker": np.asarray(panel.tickers)[panel.ticker_id],
            "date": panel.dates,
            "adj_close": np.asarray(panel.price, dtype=np.float64),
            "row": np.arange(len(panel.dates)),
        }
    )


def test_panel_sigma_is_the_long_volatility_frame_at_each_row():
    # computed on the panel's rows directly: the same numbers as the long `ticker, date, horizon, sigma` frame
    # (`_to_horizons`) pivoted and joined back, which cost ~20 s and GBs on 3.15M rows
    from forecasting.volatility import _to_horizons, blended_variance, daily_log_returns

    panel = panel_of(PRICES)
    rows = _panel_prices(panel)
    variance = blended_variance(daily_log_returns(rows), 0.25, RISKMETRICS_LAMBDA, 0.995)
    wide = _to_horizons(variance, "variance", panel.horizons).pivot(on="horizon", index=["ticker", "date"])
    joined = rows.join(wide, on=["ticker", "date"], how="left").sort("row")
    expected = joined.select([pl.col(str(h)) for h in panel.horizons]).to_numpy().astype(np.float64)
    np.testing.assert_array_equal(panel_sigma(panel, 0.25), np.where(np.isfinite(expected), expected, np.nan))


def test_har_volatility_at_some_origins_is_the_full_forecast_there():
    from forecasting.volatility import daily_log_returns, fit_har_horizons, har_volatility

    panel = panel_of(PRICES)
    returns = daily_log_returns(_panel_prices(panel))
    fits = fit_har_horizons(returns, [1, 5], end=returns["date"].sort()[returns.height // 2])
    origins = returns.select("ticker", "date").gather_every(7)
    full = har_volatility(returns, fits).join(origins, on=["ticker", "date"], how="semi")
    assert full.height == 2 * origins.height
    assert har_volatility(returns, fits, origins=origins).equals(full)


@pytest.mark.parametrize("block", [1, 2, 50])
def test_volatility_qlike_on_ticker_ids_scores_what_the_long_frames_with_names_give(block, monkeypatch):
    # the QLIKE table runs on the panel's order with integer ids (no names, no sorts), a block of tickers at a
    # time (the HAR's moments merged); the long frames with ticker names, sorted, EWMA and HAR fit up to the
    # first origin, give the same table
    import forecasting.volatility

    monkeypatch.setattr(forecasting.volatility, "TICKERS_PER_BLOCK", block)
    from forecasting.backtest import long_predictions
    from forecasting.intervals import qlike_table
    from forecasting.volatility import (
        attach_volatility,
        daily_log_returns,
        ewma_volatility,
        fit_har_horizons,
        har_volatility,
        volatility_qlike,
    )

    panel = panel_of(PRICES)
    sigma = panel_sigma(panel, 0.25)
    ends = np.flatnonzero((panel.dates >= np.datetime64("2011-03-01")) & np.isfinite(panel.Y).all(axis=1))
    zero = np.zeros((len(ends), len(panel.horizons)))
    # two models (each origin's volatility once), rows in any order, and a ticker the panel does not hold
    predictions = pl.concat([long_predictions(panel, ends, zero, m, sigma) for m in ("hist_mean", "ridge")])
    stranger = predictions.filter(pl.col("ticker") == panel.tickers[0]).with_columns(ticker=pl.lit("NOT_THERE"))
    predictions = pl.concat([predictions, stranger]).sample(fraction=1.0, shuffle=True, seed=3)
    returns = daily_log_returns(_panel_prices(panel))
    first = predictions["asof_date"].min()
    fits = fit_har_horizons(returns, panel.horizons, end=first - timedelta(days=1))
    rows = predictions.filter(pl.col("model") == "hist_mean", pl.col("ticker") != "NOT_THERE")
    rows = rows.select("ticker", "asof_date", pl.col("horizon").cast(pl.Int64), "y_true", "sigma")
    rows = attach_volatility(rows, ewma_volatility(returns, panel.horizons), "ewma_0.94")
    rows = attach_volatility(rows, har_volatility(returns, fits), "har")
    expected = qlike_table(rows.rename({"sigma": "published"}), ["published", "ewma_0.94", "har"])
    mine = volatility_qlike(panel, predictions)
    assert mine["forecast"].to_list() == expected["forecast"].to_list() and mine["n"].equals(expected["n"])
    np.testing.assert_allclose(mine["qlike"].to_numpy(), expected["qlike"].to_numpy(), rtol=1e-12)


def test_panel_rows_finds_each_ticker_ids_date_and_nothing_else():
    from forecasting.volatility import _panel_rows

    panel = panel_of(PRICES)
    rng = np.random.default_rng(0)
    picked = rng.choice(len(panel.dates), 50, replace=False)
    ids = pl.Series(panel.ticker_id[picked].tolist() + [None, 0, len(panel.tickers)], dtype=pl.Int32)
    # a missing id, a date before the first ticker's history, an id past the last ticker
    days = np.concatenate([panel.dates[picked], np.array(["2010-01-01", "1900-01-01", "2010-01-01"], "datetime64[D]")])
    days[-3] = panel.dates[0]
    rows = _panel_rows(panel, ids, pl.Series(days).cast(pl.Date))
    assert rows[:50].to_list() == picked.tolist() and rows[50:].to_list() == [None, None, None]


def test_panel_sigma_held_as_variance_reads_the_same_numbers_at_any_rows(monkeypatch):
    import forecasting.volatility
    from forecasting.backtest import long_predictions
    from forecasting.volatility import PanelSigma

    panel = panel_of(PRICES)
    held, full = PanelSigma(panel, 0.25), panel_sigma(panel, 0.25)
    monkeypatch.setattr(forecasting.volatility, "TICKERS_PER_BLOCK", 1)  # a ticker at a time: the same numbers
    np.testing.assert_array_equal(panel_sigma(panel, 0.25), full)
    rows = np.array([0, 5, len(panel.dates) - 1, 17, 17])
    np.testing.assert_array_equal(held[rows], full[rows])
    np.testing.assert_array_equal(held[rows], panel_sigma(panel, 0.25, rows=rows))
    assert np.isnan(held[np.array([0])]).all()  # a ticker's first row: no return yet
    ends = np.flatnonzero(panel.dates >= np.datetime64("2011-03-01"))
    y = np.zeros((len(ends), len(panel.horizons)))
    assert long_predictions(panel, ends, y, "m", held).equals(long_predictions(panel, ends, y, "m", full))


def test_volatility_qlike_without_the_har_when_returns_are_not_finite(caplog):
    """A price of zero before the scored span: its returns are not finite, the HAR cannot be fit; the table
    compares the published volatility with the EWMA alone and says why, rather than failing the night."""
    import dataclasses

    from forecasting.backtest import long_predictions
    from forecasting.volatility import volatility_qlike

    panel = panel_of(PRICES)
    price = np.asarray(panel.price, dtype=np.float64).copy()
    price[panel.offsets[1] + 30] = 0.0  # the second ticker, long before the origins
    broken = dataclasses.replace(panel, price=price)
    sigma = panel_sigma(panel, 0.25)
    ends = np.flatnonzero((panel.dates >= np.datetime64("2011-03-01")) & np.isfinite(panel.Y).all(axis=1))
    predictions = long_predictions(panel, ends, np.zeros((len(ends), len(panel.horizons))), "m", sigma)
    with caplog.at_level("WARNING"):
        table = volatility_qlike(broken, predictions)
    assert sorted(table["forecast"].unique().to_list()) == ["ewma_0.94", "published"]
    assert "without the HAR" in caplog.text and "not all finite" in caplog.text
