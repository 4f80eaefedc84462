from datetime import date

import polars as pl
import pytest

from features.prices.validate import check_bounds, check_prices, rows_repaired, validate_prices
from features.settings import ValidationSettings
from nightcast.errors import ValidationError
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
    (finding,) = report.findings
    assert (finding.ticker, finding.date, finding.rule, finding.action, finding.count) == (
        "AAA",
        aaa["date"][10],
        "bad_price",
        "repaired",
        1,
    )
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
    assert got == {
        ("future_date", "dropped"),
        ("duplicate_day", "repaired"),
        ("ohlc_bounds", "repaired"),
        ("bad_volume", "repaired"),
    }
    assert rules(report, "BBB") == set()
    out = report.frame.filter(pl.col("ticker") == "AAA")
    assert out.height == 100 and out["date"].is_unique().all() and out["date"].max() < TODAY
    first, bar = out.row(0, named=True), swapped.row(0, named=True)
    # high and low were swapped, so the high lies below open and close and the low above: widened to them
    assert first["high"] == max(bar["open"], bar["close"]) and first["low"] == min(bar["open"], bar["close"])
    assert first["volume"] is None
    assert rows_repaired(report.findings) == {"AAA": 4}  # future, duplicate, bounds, volume: one row each


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
    # every price invalid: the rows were dropped, which is the reason (it said "the source had no rows")
    bad = synthetic_prices(["AAA"], 3).with_columns(close=pl.lit(-1.0), adj_close=pl.lit(-1.0))
    with pytest.raises(ValidationError, match=r"left after validation: AAA \S+ \[bad_price\] dropped: 3 leading rows"):
        validate_prices(bad, SETTINGS.model_copy(update={"min_rows": 1}), today=TODAY)
    # a bad symbol beside a valid one whose every day conflicted: both reasons (it named the bad symbol only)
    good = synthetic_prices(["MSFT"], 3)
    both = pl.concat([good, good.with_columns(pl.col("close") * 2), synthetic_prices(["../x"], 3)])
    with pytest.raises(ValidationError, match=r"'../x' \[ticker_symbol\] quarantined.*MSFT \S+ \[conflicting_day\]"):
        validate_prices(both, SETTINGS.model_copy(update={"min_rows": 1}), today=TODAY)


def test_a_symbol_of_fifteen_characters_is_valid_as_documented():
    from features.prices.schema import is_valid_ticker

    assert is_valid_ticker("ABCDEFGHIJKLMNO") and is_valid_ticker("^ABCDEFGHIJKLMN")
    assert not is_valid_ticker("ABCDEFGHIJKLMNOP") and not is_valid_ticker("^ABCDEFGHIJKLMNO")


def test_check_prices_drops_leading_carries_short_runs_quarantines_long_ones():
    dates = [date(2024, 1, d) for d in range(1, 9)]
    closes = {
        "LEAD": [None, -1.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0],  # two leading invalid rows: dropped
        "GAPS": [10.0, float("nan"), 0.0, 13.0, 14.0, float("inf"), 16.0, 17.0],  # runs of 2 and 1: carried
        "LONG": [10.0, 11.0, None, None, None, 15.0, 16.0, 17.0],  # a run of 3 > max_fill=2: quarantined
    }
    frame = pl.DataFrame(
        {
            "ticker": [t for t in closes for _ in dates],
            "date": dates * len(closes),
            "close": [c for cs in closes.values() for c in cs],
        }
    ).with_columns(pl.col("close").alias("adj_close"))
    out, found = check_prices(frame, max_fill=2)
    assert out.columns == frame.columns
    assert out.filter(pl.col("ticker") == "LEAD")["close"].to_list() == [10.0, 11.0, 12.0, 13.0, 14.0, 15.0]
    gaps = out.filter(pl.col("ticker") == "GAPS")
    assert gaps["close"].to_list() == gaps["adj_close"].to_list() == [10.0, 10.0, 10.0, 13.0, 14.0, 14.0, 16.0, 17.0]
    assert "LONG" not in out["ticker"].to_list()
    assert [(f.ticker, f.date, f.action, f.count) for f in found] == [
        ("LEAD", date(2024, 1, 1), "dropped", 2),
        ("LONG", date(2024, 1, 3), "quarantined", 3),
        ("GAPS", date(2024, 1, 2), "repaired", 3),
    ]


def test_check_bounds_widens_only_bars_that_do_not_contain_open_and_close():
    frame = pl.DataFrame(
        {
            "ticker": ["A", "A", "A", "A"],
            "date": [date(2024, 1, d) for d in (2, 3, 4, 5)],
            "open": [10.0, 10.0, 10.0, None],
            "high": [11.0, 9.5, 12.0, None],  # row 2: high below open
            "low": [9.0, 9.0, 10.5, None],  # row 3: low above open; row 4: close-only
            "close": [10.5, 9.8, 11.0, 10.0],
        }
    )
    out, found = check_bounds(frame)
    assert out["high"].to_list() == [11.0, 10.0, 12.0, None]
    assert out["low"].to_list() == [9.0, 9.0, 10.0, None]
    assert [(f.ticker, f.date, f.rule, f.count) for f in found] == [("A", date(2024, 1, 3), "ohlc_bounds", 2)]


def test_require_history_keeps_the_frame_itself_when_no_ticker_is_short():
    # not a filtered copy of every row: the nightly held both (~0.3 GB on 500 tickers x 25 years)
    from features.prices.validate import require_history
    from tests.conftest import synthetic_prices

    frame = synthetic_prices(["AAA", "BBB"], 30)
    kept, found = require_history(frame, 30)
    assert kept is frame and found == []
    kept, found = require_history(
        frame.filter((pl.col("ticker") == "AAA") | (pl.col("date") < pl.col("date").max())), 30
    )
    assert kept["ticker"].unique().to_list() == ["AAA"] and [f.ticker for f in found] == ["BBB"]


def test_the_first_night_with_history_needs_one_ticker_long_enough_and_enough_dates_in_all():
    from features.prices.validate import first_night_with_history

    aaa = synthetic_prices(["AAA"], 30, start=date(2024, 1, 1))
    bbb = synthetic_prices(["BBB"], 30, start=date(2024, 2, 1))  # 30 business days from 2024-02-01, not AAA's
    frame = pl.concat([aaa, bbb])
    days = frame["date"].unique().sort()
    assert first_night_with_history(frame, 20, 10) == aaa["date"][19]  # AAA's 20th row; 10 dates long before
    assert first_night_with_history(frame, 20, 45) == days[44]  # its 45th date, of AAA and BBB together
    assert first_night_with_history(frame, 31, 10) is None  # no ticker ever has 31 rows
    assert first_night_with_history(frame, 20, days.len() + 1) is None


def test_a_share_class_written_with_a_slash_is_told_the_dash():
    from features.prices.schema import not_a_symbol

    assert (
        not_a_symbol("BRK/B")
        == "'BRK/B' is not a valid symbol (share classes take a dash, as Yahoo writes them: BRK-B)"
    )
    assert not_a_symbol("../EVIL") == "'../EVIL' is not a valid symbol"  # no fix to suggest


def test_many_repairs_are_one_counted_line_few_are_each_a_line_and_quarantines_always_warn(caplog):
    from features.prices.validate import FINDINGS_LOGGED, Finding, log_findings

    def repairs(n):
        return [Finding(f"T{i:03d}", None, "bad_volume", "repaired", "1 negative volume set to null") for i in range(n)]

    quarantined = Finding("ZZZ", None, "too_short", "quarantined", "3 valid rows, fewer than min_rows=20")
    with caplog.at_level("INFO", logger="nightcast"):
        log_findings([*repairs(FINDINGS_LOGGED + 5), quarantined])
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert ("WARNING", str(quarantined)) in lines
    infos = [m for level, m in lines if level == "INFO"]
    assert infos == [
        f"validation: {FINDINGS_LOGGED + 5} findings on {FINDINGS_LOGGED + 5} tickers (bad_volume repaired "
        f"x{FINDINGS_LOGGED + 5}); each at DEBUG, and counted per ticker in the ingest's summary"
    ]
    caplog.clear()
    with caplog.at_level("INFO", logger="nightcast"):
        log_findings(repairs(2))
    assert [r.getMessage() for r in caplog.records] == [str(f) for f in repairs(2)]


def test_a_bad_close_on_a_tickers_last_day_is_carried_with_a_warning(caplog):
    """The latest close is the price the forecasts start from: carried from the day before, it is a warning,
    where a carried close inside the history is an ordinary repair."""
    frame = base().with_row_index()
    last_aaa = frame.filter(pl.col("ticker") == "AAA")["index"].max()
    frame = frame.with_columns(
        pl.when(pl.col("index").is_in([10, last_aaa])).then(None).otherwise(pl.col("close")).alias("close")
    ).drop("index")
    with caplog.at_level("INFO", logger="nightcast.features.prices.validate"):
        report = validate_prices(frame, SETTINGS, today=TODAY)
    aaa = report.frame.filter(pl.col("ticker") == "AAA")
    assert aaa["close"][-1] == aaa["close"][-2]
    carried = sorted((f.date == aaa["date"][-1], f.warn, f.count) for f in report.findings)
    assert carried == [(False, False, 1), (True, True, 1)]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "at the end carried forward" in warned[0] and "AAA" in warned[0]
