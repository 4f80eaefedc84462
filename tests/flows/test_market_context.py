"""The market family through the pipeline: ingest (context series fetched beside the universe, held apart),
features built over every ticker of a date (one task or chunks alike), the model's inputs, and the nightly
forecasting and publishing the universe only."""

import numpy as np
import polars as pl
import pytest
from prefect import flow

from flows.settings import load_settings

pytestmark = pytest.mark.slow


MARKET_ON = {"families": ["returns", "lags", "volatility", "calendar", "market"]}


def _panel(settings, **runner):
    """The pipeline up to the model's inputs, as the nightly runs it: ingest, history, features, panel."""
    from flows.ingest import ingest_flow

    report = ingest_flow(settings)
    return report, _features(report.prices, settings, **runner)


def _features(prices, settings, **runner):
    from features.prices import lake
    from flows.tasks import features_by_chunk, require_history

    prices, _ = require_history(prices, settings)
    run = settings.model_copy(update={"runner": settings.runner.model_copy(update={"cache_features": False, **runner})})

    @flow
    def features():  # chunks are submitted to a flow's task runner
        return features_by_chunk(prices, run, lake.fingerprint(prices))[1]

    return features()


def test_the_sample_gives_the_model_its_columns_and_a_missing_market_day_is_never_filled(
    prefect_harness, tmp_path, monkeypatch, sample
):
    """The bundled sample holds ^GSPC (the market, and still forecast) but no ^VIX (its columns neutral); built
    in one task or in chunks of two tickers, the cross-sectional values are the same. Without one ^GSPC day,
    that day's market columns are null and nothing before it changes."""
    from features.market import MARKET_FEATURES
    from features.windows import Scaler

    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, environ={}, overrides={"features": MARKET_ON, "paths": {"data_dir": tmp_path}})
    report, full = _panel(settings)
    assert full.features[-len(MARKET_FEATURES) :] == MARKET_FEATURES
    assert full.tickers == ["NVDA", "ORCL", "YHOO", "^GSPC", "^IXIC"]  # the index tickers are forecast as before
    col = {name: full.features.index(name) for name in MARKET_FEATURES}
    nvda = full.ticker_id == full.tickers.index("NVDA")
    assert np.isnan(full.X[:, col["vix_level"]]).all() and np.isnan(full.X[:, col["vix_chg_1"]]).all()
    assert (Scaler.fit(full.X).transform(full.X)[:, col["vix_level"]] == 0).all()  # neutral
    for name in ("mkt_ret_1", "beta_63", "cs_ret_rank", "mom_12m_rank"):
        assert np.isfinite(full.X[nvda, col[name]]).mean() > 0.8, name
    chunked = _features(report.prices, settings, chunk_size=2)
    assert chunked.tickers == full.tickers and np.array_equal(chunked.X, full.X, equal_nan=True)

    days = sample.filter(ticker="^GSPC")["date"]
    hole = days[days.len() - 40]
    holed = report.prices.filter(~((pl.col("ticker") == "^GSPC") & (pl.col("date") == hole)))
    panel = _features(holed, settings)
    col = panel.features.index("mkt_ret_1")
    nvda = (panel.ticker_id == panel.tickers.index("NVDA")) & (panel.dates == np.datetime64(hole))
    assert nvda.sum() == 1 and np.isnan(panel.X[nvda, col]).all()  # not the next day's return, nor any value
    later = panel.dates > np.datetime64(hole)
    nxt = panel.dates[later].min()
    gspc = sample.filter(ticker="^GSPC").sort("date")
    price = dict(zip(gspc["date"].to_list(), gspc["adj_close"].to_list(), strict=True))
    before = gspc.filter(pl.col("date") < hole)["date"][-1]
    at_next = (panel.ticker_id == panel.tickers.index("NVDA")) & (panel.dates == nxt)
    # the next day's market return spans the hole, from the last price before it: nothing was invented
    assert panel.X[at_next, col][0] == pytest.approx(np.log(price[nxt.astype(object)] / price[before]), rel=1e-6)
    earlier = panel.dates < np.datetime64(hole)
    assert np.array_equal(panel.X[earlier], full.X[full.dates < np.datetime64(hole)], equal_nan=True)


def test_yfinance_fetches_the_context_beside_the_universe_and_forecasts_only_the_universe(
    prefect_harness, tmp_path, monkeypatch
):
    from datetime import date as day

    from features.prices import lake
    from tests.fake_yahoo import FakeYahoo

    listed = {t: (day(2022, 1, 3), day(2024, 3, 28)) for t in ("AAPL", "MSFT", "^GSPC", "^VIX")}
    FakeYahoo(listed).install(monkeypatch, tmp_path / "yf-cache")
    settings = load_settings(
        None,
        environ={},
        overrides={
            "source": {"kind": "yfinance", "tickers": ["AAPL", "MSFT"], "start": "2022-01-01"},
            "ingest": {"retries": 0},
            "features": MARKET_ON,
            "paths": {"data_dir": tmp_path / "data"},
        },
    )
    report, panel = _panel(settings)
    assert sorted(lake.read_manifest(settings.paths.lake)) == ["AAPL", "MSFT", "^GSPC", "^VIX"]  # all stored
    assert report.summary["ticker"].to_list() == ["AAPL", "MSFT"]  # the universe: what is checked and published
    assert sorted(report.context["ticker"]) == ["^GSPC", "^VIX"]
    assert panel.tickers == ["AAPL", "MSFT"]  # the context series are inputs, never rows to forecast
    for name in ("vix_level", "mkt_ret_1", "beta_63"):
        assert np.isfinite(panel.X[:, panel.features.index(name)]).any(), name

    # a replayed night reads the lake as stored, for the universe: the context comes from the lake, up to the night
    from features.prices.ingest import stored_report

    night = day(2023, 11, 15)
    replayed = _features(stored_report(settings.paths.lake, ["AAPL", "MSFT"]).as_of(night, 5).prices, settings)
    assert replayed.dates.max() == np.datetime64(night) and replayed.tickers == ["AAPL", "MSFT"]
    then = panel.dates <= np.datetime64(night)
    assert np.isfinite(replayed.X[:, panel.features.index("vix_level")]).all()
    assert np.array_equal(replayed.X, panel.X[then], equal_nan=True)  # as the live run saw those days


def test_a_nightly_with_context_series_publishes_the_universe_only(prefect_harness, tmp_path, monkeypatch):
    """yfinance, the market family on: ^GSPC and ^VIX are the model's inputs, never a forecast, never reported as
    'not forecast' (they were never asked for), and the published model lists the market columns."""
    import json
    from datetime import date as day

    from features.market import MARKET_FEATURES
    from flows.nightly import nightly
    from tests.fake_yahoo import FakeYahoo

    monkeypatch.chdir(tmp_path)
    listed = {t: (day(2023, 1, 3), day.today()) for t in ("NVDA", "ORCL", "^GSPC", "^VIX")}
    FakeYahoo(listed).install(monkeypatch, tmp_path / "yf-cache")
    settings = load_settings(
        None,
        environ={},
        overrides={
            "source": {"kind": "yfinance", "tickers": ["NVDA", "ORCL"], "start": "2023-01-01"},
            "ingest": {"retries": 0},
            "features": MARKET_ON,
            "windows": {"lookback": 20, "test_days": 60, "val_days": 60},
            "model": {"hidden_size": 8, "attention_size": 4},
            "train": {"epochs": 2, "batch_size": 128, "progress": False, "threads": 1},
            "schedule": {"skip_closed_days": False},
            "paths": {"data_dir": tmp_path / "data", "out_dir": tmp_path / "outputs"},
        },
    )
    result = nightly(settings)
    assert sorted(result.forecasts["ticker"].unique().to_list()) == ["NVDA", "ORCL"]
    (run,) = (tmp_path / "outputs").rglob("run.json")
    assert not any(t.startswith("^") for t in json.loads(run.read_text())["not_forecast"])
    from forecasting.train import load_checkpoint

    assert load_checkpoint(result.checkpoint, device="cpu").features[-len(MARKET_FEATURES) :] == MARKET_FEATURES
