from datetime import date

import polars as pl
import pytest

from features.errors import ValidationError
from features.settings import ValidationSettings
from features.validate import validate_prices
from tests.conftest import synthetic_prices

SETTINGS = ValidationSettings(min_rows=50, max_fill=2)
TODAY = date(2024, 1, 1)


def base() -> pl.DataFrame:
    return synthetic_prices(["AAA", "BBB"], 100, seed=5)


def rules(report, ticker):
    return {(f.rule, f.action) for f in report.findings if f.ticker == ticker}


def test_the_real_sample_is_clean(sample):
    report = validate_prices(sample, ValidationSettings(), today=date(2026, 1, 1))
    assert report.quarantined == {}
    assert report.frame.height == sample.height
    assert report.tickers == ["NVDA", "ORCL", "YHOO", "^GSPC", "^IXIC"]


def test_lone_nan_close_is_carried_forward():
    frame = base().with_row_index()
    frame = frame.with_columns(
        pl.when(pl.col("index") == 10).then(float("nan")).otherwise(pl.col("close")).alias("close")
    ).drop("index")
    report = validate_prices(frame, SETTINGS, today=TODAY)
    aaa = report.frame.filter(pl.col("ticker") == "AAA")
    assert aaa["close"][10] == aaa["close"][9]
    assert ("bad_price", "repaired") in rules(report, "AAA")
    assert aaa.height == 100


def test_long_run_of_bad_prices_quarantines_only_that_ticker():
    frame = base().with_row_index()
    frame = frame.with_columns(
        pl.when(pl.col("index").is_between(10, 14)).then(-1.0).otherwise(pl.col("close")).alias("close")
    ).drop("index")
    report = validate_prices(frame, SETTINGS, today=TODAY)
    assert list(report.quarantined) == ["AAA"]
    assert (
        "AAA" in report.quarantined and "5 invalid closes in runs longer than max_fill=2" in report.quarantined["AAA"]
    )
    assert report.tickers == ["BBB"]


def test_duplicates_future_dates_bounds_and_volume():
    frame = base()
    aaa = frame.filter(pl.col("ticker") == "AAA")
    future = aaa.tail(1).with_columns(pl.lit(date(2030, 1, 1)).alias("date"))
    swapped = aaa.head(1).with_columns(
        pl.col("low").alias("high"), pl.col("high").alias("low"), pl.lit(-5.0).alias("volume")
    )
    frame = pl.concat(
        [
            frame.filter(~((pl.col("ticker") == "AAA") & (pl.col("date") == aaa["date"][0]))),
            swapped,
            aaa.slice(3, 1),
            future,
        ]
    )
    report = validate_prices(frame, SETTINGS, today=TODAY)
    got = rules(report, "AAA")
    assert {
        ("future_date", "dropped"),
        ("duplicate_day", "repaired"),
        ("ohlc_bounds", "repaired"),
        ("bad_volume", "repaired"),
    } <= got
    out = report.frame.filter(pl.col("ticker") == "AAA")
    assert out.height == 100 and out["date"].is_unique().all() and out["date"].max() < TODAY
    first = out.row(0, named=True)
    assert first["high"] >= max(first["open"], first["close"]) and first["low"] <= min(first["open"], first["close"])
    assert first["volume"] is None


def test_a_conflicting_day_is_dropped_not_the_ticker():
    frame = base()
    bbb = frame.filter(pl.col("ticker") == "BBB")
    dup = bbb.slice(5, 1).with_columns(pl.col("close") * 2, pl.col("adj_close") * 2)
    report = validate_prices(pl.concat([frame, dup]), SETTINGS, today=TODAY)
    assert report.quarantined == {}
    kept = report.frame.filter(pl.col("ticker") == "BBB")
    assert kept.height == bbb.height - 1 and bbb["date"][5] not in kept["date"].to_list()
    (finding,) = [f for f in report.findings if f.rule == "conflicting_day"]
    assert (finding.ticker, finding.date, finding.action, finding.count) == ("BBB", bbb["date"][5], "dropped", 1)


@pytest.mark.parametrize("ticker", ["../x", "a/b", "", "BAD\x00", "TOOLONGTICKER12345", "lower"])
def test_junk_ticker_is_quarantined(ticker):
    frame = pl.concat([base(), synthetic_prices([ticker], 60, seed=9)])
    report = validate_prices(frame, SETTINGS, today=TODAY)
    assert ticker in report.quarantined and "ticker_symbol" in report.quarantined[ticker]
    assert report.tickers == ["AAA", "BBB"]


def test_nothing_valid_left_fails_with_reasons():
    with pytest.raises(ValidationError, match="too_short"):
        validate_prices(synthetic_prices(["AAA"], 20), SETTINGS, today=TODAY)
