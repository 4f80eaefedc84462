import logging

import pytest

from features.prices.sources import load, read_file, select_tickers
from features.settings import SourceSettings
from nightcast.errors import SourceError


def test_long_file_case_insensitive(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text("Date,TICKER,Close,Volume\n2024-01-02,AAA,10.5,100\n2024-01-03,AAA,11,200\n")
    frame, findings = read_file(path)
    assert findings == []
    assert frame["close"].to_list() == [10.5, 11.0]
    assert frame["adj_close"].null_count() == 2  # filled at ingest: from the lake first, then from close
    assert frame["open"].null_count() == 2
    assert frame["source"][0] == "file:prices.csv"


def test_file_errors_name_the_problem(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        read_file(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("when,price\n2024-01-02,1\n")
    with pytest.raises(SourceError, match=r"missing required columns \['date', 'ticker', 'close'\]"):
        read_file(bad)
    dates = tmp_path / "dates.csv"
    dates.write_text("date,ticker,close\n02/01/2024,AAA,1\n")
    with pytest.raises(
        SourceError,
        match=r"1 of 1 rows have a date that could not be parsed \(expected YYYY-MM-DD\): 1 distinct, the first "
        r"'02/01/2024' \(day/month",
    ):
        read_file(dates)
    # a wide file: each date once, however many ticker columns repeat it after reshaping
    (tmp_path / "wide.csv").write_text("date,AAA,BBB,CCC\n01/02/2024,1,2,3\n01/03/2024,1,2,3\n")
    with pytest.raises(SourceError, match=r"6 of 6 rows have a date that could not be parsed .*: 2 distinct"):
        read_file(tmp_path / "wide.csv")


def test_sample_source_and_ticker_filter():
    frame, findings = load(SourceSettings(kind="sample", tickers=["NVDA"]))
    assert findings == []
    assert frame["ticker"].unique().to_list() == ["NVDA"]
    assert str(frame["date"].max()) == "2014-12-31"
    with pytest.raises(SourceError, match=r"tickers not in the source: \['AAPL'\]"):
        select_tickers(frame, ["AAPL"])


def test_a_requested_ticker_the_source_lacks_is_quarantined_not_the_whole_run():
    """`--tickers NVDA ORLC` on the sample read NVDA and stopped the run over the typo; one ticker yfinance cannot
    find never did. Now the typo is quarantined with a hint, and only a request of nothing the source holds fails."""
    frame, findings = load(SourceSettings(kind="sample", tickers=["NVDA", "ORLC"]), also=["^GSPC", "SPY"])
    assert sorted(frame["ticker"].unique().to_list()) == ["NVDA", "^GSPC"]
    [finding] = findings
    assert (finding.ticker, finding.rule, finding.action) == ("ORLC", "not_in_source", "quarantined")
    assert "the bundled sample holds no row of it (did you mean ORCL?)" in finding.detail
    # context series are no request: asking only for absent tickers is an error even with ^GSPC present
    with pytest.raises(SourceError, match=r"tickers not in the bundled sample: \['ZZZZ'\]; available: NVDA, ORCL"):
        load(SourceSettings(kind="sample", tickers=["ZZZZ"]), also=["^GSPC"])


def test_a_non_numeric_cell_is_missing_and_reported_not_a_failed_file(tmp_path):
    from features.prices.sources import read_file

    path = tmp_path / "prices.csv"
    path.write_text("date,ticker,close,volume\n2024-01-02,AAA,10.5,100\n2024-01-03,AAA,n/a,200\n2024-01-02,BBB,3,x\n")
    frame, findings = read_file(path)
    assert frame.height == 3 and frame["close"].to_list() == [10.5, None, 3.0]
    assert [(f.ticker, str(f.date), f.rule, f.count) for f in findings] == [
        ("AAA", "2024-01-03", "non_numeric", 1),
        ("BBB", "2024-01-02", "non_numeric", 1),
    ]


def test_a_ticker_named_by_two_wide_columns_is_quarantined_by_name(tmp_path):
    """A new-user review: a repeated header gave "'AAA_DUPLICATED_0' is not a valid symbol"."""
    path = tmp_path / "wide.csv"
    path.write_text("Date,AAA,BBB,AAA,ccc,CCC\n2024-01-02,10,5,11,1,2\n2024-01-03,10.5,5.1,11.5,1.1,2.1\n")
    frame, findings = read_file(path)
    assert frame["ticker"].unique().to_list() == ["BBB"]
    found = {f.ticker: (f.rule, f.action, f.detail) for f in findings}
    assert found == {
        "AAA": (
            "duplicate_column",
            "quarantined",
            "2 columns name it ('AAA', 'AAA'): which holds its prices is unknown",
        ),
        "CCC": (
            "duplicate_column",
            "quarantined",
            "2 columns name it ('ccc', 'CCC'): which holds its prices is unknown",
        ),
    }


def test_prices_without_a_ticker_column_say_which_column_and_how(tmp_path):
    """One symbol's yf.download frame saved with multi_level_index=False has no ticker anywhere."""
    path = tmp_path / "aapl.csv"
    path.write_text("Date,Close,High,Low,Open,Volume\n2024-01-02,185.6,188.4,183.9,187.1,82488700\n")
    with pytest.raises(SourceError, match=r"aapl.csv: missing required column 'ticker' \(which symbol"):
        read_file(path)


def test_one_symbols_file_without_a_ticker_column_takes_the_one_ticker_asked_for(tmp_path):
    path = tmp_path / "aapl.csv"
    path.write_text("Date,Close,High,Low,Open,Volume\n2024-01-02,185.6,188.4,183.9,187.1,82488700\n")
    frame, findings = load(SourceSettings(kind="file", path=path, tickers=["aapl"]))
    assert findings == [] and frame["ticker"].to_list() == ["AAPL"] and frame["close"].to_list() == [185.6]
    with pytest.raises(SourceError, match="name its one symbol with --tickers SYMBOL"):
        load(SourceSettings(kind="file", path=path, tickers=["AAPL", "MSFT"]))  # which is it? not guessed


@pytest.mark.parametrize(
    "text, expected",
    [
        ("date,ticker,close\n2024-01-02,AAA,10\n2024-01-03,AAA,11,5\n", "line 3 has 4 fields, the header 3"),
        ('date,ticker,close\n2024-01-02,AAA,"10\n2024-01-03,AAA,11\n', "the row from line 2 does not parse"),
    ],
)
def test_a_malformed_csv_is_one_line_with_where(tmp_path, text, expected):
    # polars' own message names no line and suggests reader options nightcast does not take
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(SourceError) as caught:
        read_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: cannot read: ") and expected in message and "\n" not in message


def _days(n: int) -> list[str]:
    from datetime import date, timedelta

    return [(date(2024, 1, 1) + timedelta(days=i)).isoformat() for i in range(n)]


@pytest.mark.parametrize("bad", ["yesterday", "2024-02-30", "06/02/2014", "n/a"])
def test_a_row_with_an_unreadable_date_is_dropped_and_reported_not_a_failed_file(tmp_path, bad):
    rows = [f"{d},AAA,{10 + i}" for i, d in enumerate(_days(150))] + [f"{d},BBB,5" for d in _days(150)]
    rows[40] = f"{bad},AAA,999"
    path = tmp_path / "prices.csv"
    path.write_text("date,ticker,close\n" + "\n".join(rows) + "\n")
    frame, findings = read_file(path)
    assert frame.height == 299 and 999.0 not in frame["close"].to_list()  # only that row is gone
    [finding] = findings
    assert (finding.ticker, finding.rule, finding.action, finding.count) == ("AAA", "bad_date", "dropped", 1)
    assert repr(bad) in finding.detail and str(path) in finding.detail


def test_an_empty_date_cell_is_a_row_without_a_date_for_validation_to_drop(tmp_path):
    from features.prices.validate import validate_prices
    from features.settings import ValidationSettings

    rows = [f"{d},AAA,{10 + i},{10 + i}" for i, d in enumerate(_days(400))]
    rows[7] = " ,AAA,999,999"
    path = tmp_path / "prices.csv"
    path.write_text("date,ticker,close,adj_close\n" + "\n".join(rows) + "\n")
    frame, findings = read_file(path)
    assert findings == [] and frame["date"].null_count() == 1
    report = validate_prices(frame, ValidationSettings())
    assert report.frame.height == 399 and 999.0 not in report.frame["close"].to_list()
    assert [(f.rule, f.action, f.count) for f in report.findings] == [("missing_date", "dropped", 1)]


def test_many_unreadable_dates_are_a_file_in_another_format(tmp_path):
    rows = [f"{d},AAA,{10 + i}" for i, d in enumerate(_days(150))]
    rows[:3] = ["13/01/2024,AAA,1", "14/01/2024,AAA,1", "15/01/2024,AAA,1"]  # 2% of the rows: not typos
    path = tmp_path / "prices.csv"
    path.write_text("date,ticker,close\n" + "\n".join(rows) + "\n")
    with pytest.raises(SourceError, match=r"3 rows \(over 1%\) have a date that .*: 3 distinct, the first '13/01/"):
        read_file(path)


def test_a_ticker_with_its_dates_in_another_format_is_quarantined_not_dropped_as_typos(tmp_path):
    """A reviewer's case: one ticker of many writing day/month/year lost every row as 'typos', at INFO."""
    rows = [f"{d},T{k:02d},{10 + k}" for k in range(30) for d in _days(40)]
    rows += [f"{d[8:10]}/{d[5:7]}/{d[:4]},ODD,7" for d in _days(40)]
    path = tmp_path / "prices {2024}.csv"  # braces in a path (or a cell) are text, never a format field
    path.write_text("date,ticker,close\n" + "\n".join(rows) + "\n")
    frame, findings = read_file(path)
    assert "ODD" not in frame["ticker"].to_list() and frame.height == 30 * 40
    [finding] = findings
    assert (finding.ticker, finding.rule, finding.action, finding.count) == ("ODD", "bad_date", "quarantined", 40)
    assert "40 of its 40 rows" in finding.detail and "day/month" in finding.detail and str(path) in finding.detail
    # asked for by name: not "not in the source", its finding says why it is left out
    frame, findings = load(SourceSettings(kind="file", path=path, tickers=["ODD", "T01"]))
    assert frame["ticker"].unique().to_list() == ["T01"] and [f.ticker for f in findings] == ["ODD"]


def test_dropped_typos_warn_and_braces_in_a_bad_date_are_text(tmp_path):
    rows = [f"{d},AAA,{10 + i}" for i, d in enumerate(_days(200))]
    rows[5] = "2020-{1},AAA,1"
    path = tmp_path / "prices.csv"
    path.write_text("date,ticker,close\n" + "\n".join(rows) + "\n")
    _, [finding] = read_file(path)
    assert finding.warn and "'2020-{1}'" in finding.detail


def test_the_first_rows_are_judged_for_their_format_only(tmp_path):
    """The preflight reads 200 rows: three typos among them are 1.5% of those rows but 0.3% of the file, which the
    full read accepts; a wide file whose first rows precede every listing is no error either."""
    rows = [f"{d},AAA,{10 + i}" for i, d in enumerate(_days(1000))]
    rows[1:4] = ["n/a,AAA,1"] * 3
    path = tmp_path / "prices.csv"
    path.write_text("date,ticker,close\n" + "\n".join(rows) + "\n")
    assert read_file(path)[0].height == 997
    assert read_file(path, n_rows=200)[0].height == 197
    # a long file sorted by ticker whose first ticker writes day/month/year: its first rows are all that ticker's,
    # which the full read quarantines; the head is no proof that the whole file is in another format
    odd_first = [f"{d[8:10]}/{d[5:7]}/{d[:4]},AAA,7" for d in _days(300)] + [f"{d},BBB,5" for d in _days(400)]
    (tmp_path / "odd_first.csv").write_text("date,ticker,close\n" + "\n".join(odd_first) + "\n")
    assert read_file(tmp_path / "odd_first.csv", n_rows=200)[0].is_empty()
    assert read_file(tmp_path / "odd_first.csv")[0]["ticker"].unique().to_list() == ["BBB"]
    wide = tmp_path / "wide.csv"
    wide.write_text("date,AAA,BBB\n" + "".join(f"{d},,\n" for d in _days(250)) + "2024-09-07,1,2\n")
    assert read_file(wide, n_rows=200)[0].is_empty() and read_file(wide)[0].height == 2


@pytest.mark.parametrize(
    ("header", "meant"), [("clsoe", "close"), ("adj_clsoe", "adj_close"), ("Adj Clsoe", "adj close")]
)
def test_a_misspelt_price_column_is_an_error_naming_what_it_meant(tmp_path, header, meant):
    """An operator's finding: a header `clsoe` made the file close-less without a word (its adjusted close was
    published as the price), and `adj_clsoe` made the adjusted close the unadjusted one."""
    from features.prices.sources import read_file

    other = "adj_close" if "adj" not in header.lower() else "close"
    path = tmp_path / "prices.csv"
    path.write_text(f"date,ticker,{header},{other}\n2024-01-02,AAPL,100,98\n2024-01-03,AAPL,101,99\n")
    with pytest.raises(SourceError, match=rf"column '{header}' is not one nightcast reads: did you mean '{meant}'\?"):
        read_file(path)


def test_a_column_nightcast_does_not_read_is_named_in_a_warning(tmp_path, caplog):
    from features.prices.sources import read_file

    path = tmp_path / "prices.csv"
    path.write_text("date,ticker,close,adj_close,adj_close_usd,note\n2024-01-02,AAPL,100,98,98,x\n")
    with caplog.at_level(logging.WARNING, logger="nightcast"):
        frame, _ = read_file(path)
    assert frame["close"].to_list() == [100.0] and frame["adj_close"].to_list() == [98.0]
    assert "columns 'adj_close_usd', 'note' not read (nightcast reads date, ticker, open" in caplog.text


def test_an_optional_column_spelt_nearly_like_one_is_only_a_warning_and_a_close_named_otherwise_is_an_error(tmp_path):
    """A reviewer's findings on the first version: `Flow` was refused as "did you mean 'low'?" (an optional column
    the file may lack), while `Close Price` beside an adjusted close only warned, and its adjusted close was
    published as the price."""
    from features.prices.sources import read_file

    path = tmp_path / "prices.csv"
    path.write_text("date,ticker,close,Flow,Adj. Close\n2024-01-02,AAPL,100,7,98\n")
    frame, _ = read_file(path)
    assert (frame["close"][0], frame["adj_close"][0]) == (100.0, 98.0)  # 'Adj. Close' is Quandl's adjusted close
    path.write_text("date,ticker,Close Price,Adj Close\n2024-01-02,AAPL,100,98\n")
    with pytest.raises(SourceError, match="no close column, and column 'Close Price' is not read: name the traded"):
        read_file(path)


def _long(path, rows, header="date,ticker,close"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_columns_that_look_numeric_for_their_first_rows_are_read_whole(tmp_path):
    """A reviewer's cases: 101 numeric tickers (Tokyo codes) and then AAPL refused the file ('could not parse
    AAPL as i64'); whole-yen closes then 49.8572 likewise; Hong Kong's 0700 was stored as ticker 700."""
    days = _days(100)
    rows = [f"{d},{7000 + k},{1000 + k}" for k in range(101) for d in days]
    rows += [f"{d},AAPL,49.8572" for d in days] + [f"{d},0700,300" for d in days]
    frame, findings = read_file(_long(tmp_path / "p.csv", rows))
    assert findings == [] and frame.height == len(rows)
    assert {"AAPL", "0700", "7000"} <= set(frame["ticker"].to_list())
    assert frame.filter(frame["ticker"] == "AAPL")["close"].unique().to_list() == [49.8572]


def test_dates_as_numbers_are_read_as_yyyymmdd_or_refused_in_one_line(tmp_path):
    """A reviewer's cases: 20240102 was read as days since 1970 (year 57385: three tracebacks); Unix seconds
    panicked in polars; Excel's serial days became 2094 and were dropped as 'future dates'."""
    import polars as pl

    frame, findings = read_file(_long(tmp_path / "c.csv", ["20240102,AAA,1", "20240103,AAA,2"]))
    assert findings == [] and [str(d) for d in frame["date"]] == ["2024-01-02", "2024-01-03"]
    pq = tmp_path / "i.parquet"
    pl.DataFrame({"date": [20240102, 20240103], "ticker": ["AAA"] * 2, "close": [1.0, 2.0]}).write_parquet(pq)
    assert [str(d) for d in read_file(pq)[0]["date"]] == ["2024-01-02", "2024-01-03"]
    for name, dates in (("epoch", [1704153600, 1704240000]), ("excel", [45293, 45294])):
        pq = tmp_path / f"{name}.parquet"
        pl.DataFrame({"date": dates, "ticker": ["AAA"] * 2, "close": [1.0, 2.0]}).write_parquet(pq)
        with pytest.raises(SourceError, match=rf"the first '{dates[0]}' \(a number: Excel's serial days or Unix"):
            read_file(pq)
    pq = tmp_path / "float.parquet"
    pl.DataFrame({"date": [1.5], "ticker": ["AAA"], "close": [1.0]}).write_parquet(pq)
    with pytest.raises(SourceError, match=r"column 'date' holds Float64 values, not dates"):
        read_file(pq)


@pytest.mark.parametrize("zone", ["Europe/Berlin", "Asia/Tokyo", "America/New_York", "UTC"])
def test_a_timestamp_with_a_time_zone_is_its_own_days_date(tmp_path, zone):
    """A reviewer's case: Berlin's midnight of Monday 2024-01-01 was stored as Sunday 2023-12-31 (the UTC date),
    every session a day early, without a word."""
    from datetime import datetime

    import polars as pl

    stamps = pl.Series("date", [datetime(2024, 1, 1 + k) for k in range(3)]).dt.replace_time_zone(zone)
    path = tmp_path / "tz.parquet"
    pl.DataFrame({"date": stamps, "ticker": ["AAA"] * 3, "close": [1.0, 2.0, 3.0]}).write_parquet(path)
    assert [str(d) for d in read_file(path)[0]["date"]] == ["2024-01-01", "2024-01-02", "2024-01-03"]


def test_a_price_column_with_no_number_quarantines_its_ticker_and_says_why(tmp_path, caplog):
    """A reviewer's case: closes written with decimal commas were all 'read as missing' (at INFO) and the
    adjusted close was stored as the close. Thousands separators that cannot mean a decimal comma are read."""
    rows = [f'{d},AAA,"50,{k:02d}",45.0' for k, d in enumerate(_days(20))]
    rows += [f'{d},BBB,"1,234.5{k % 10}","1,111.0"' for k, d in enumerate(_days(20))]
    rows += [f'{d},CCC,{10 + k},"{"1,000" if k == 3 else 9}"' for k, d in enumerate(_days(20))]
    path = _long(tmp_path / "p.csv", rows, header="date,ticker,close,adj_close")
    with caplog.at_level(logging.WARNING, logger="nightcast"):
        frame, findings = read_file(path)
    assert sorted(frame["ticker"].unique().to_list()) == ["BBB", "CCC"]
    assert frame.filter(frame["ticker"] == "BBB")["close"][:2].to_list() == [1234.50, 1234.51]
    by = {f.ticker: f for f in findings}
    assert (by["AAA"].rule, by["AAA"].action) == ("non_numeric", "quarantined")
    assert (
        "column 'close' holds no number for it" in by["AAA"].detail and "'50,00' (a decimal comma" in by["AAA"].detail
    )
    assert (
        by["CCC"].action == "read as missing"
        and by["CCC"].warn
        and "the first '1,000' (a decimal comma" in by["CCC"].detail
    )
    # every ticker so: the file's format, one line before anything starts
    only = _long(tmp_path / "eu.csv", rows[:20], header="date,ticker,close,adj_close")
    only.write_text(only.read_text().replace(",45.0", ',"45,0"'))
    with pytest.raises(SourceError, match=r"eu.csv: column 'close' holds no number, e.g. '50,00' \(a decimal comma"):
        read_file(only)


def test_wrong_separators_and_a_folder_are_named(tmp_path):
    semi = tmp_path / "semi.csv"
    semi.write_text("date;ticker;close\n2024-01-02;AAA;1.5\n")
    with pytest.raises(SourceError, match=r"fields separated by ';'\? write commas"):
        read_file(semi)
    semi.write_text("date;ticker;close\n2024-01-02;AAA;1,5\n")
    with pytest.raises(SourceError, match=r"fields separated by ';'\? write commas"):
        read_file(semi)
    with pytest.raises(SourceError, match=r"is a directory: --path takes one price file"):
        read_file(tmp_path)


def test_exports_no_value_markers_are_no_value_and_the_first_rows_never_refuse_a_file(tmp_path):
    """A reviewer's cases: R's write.csv `NA` in a close-only file's adjusted close quarantined every ticker (and
    refused the file); a file whose first 200 rows had `n/a` adjusted closes was refused by the preflight though
    the full read takes it; rows without a ticker beside an unreadable one crashed (None among the names)."""
    rows = [f"{d},AAA,{10 + k},NA" for k, d in enumerate(_days(20))] + [
        f"{d},BBB,{5 + k},NA" for k, d in enumerate(_days(20))
    ]
    frame, findings = read_file(_long(tmp_path / "r.csv", rows, header="date,ticker,close,adj_close"))
    assert sorted(frame["ticker"].unique().to_list()) == ["AAA", "BBB"] and frame["adj_close"].null_count() == 40
    assert all(f.action == "read as missing" and not f.warn for f in findings)  # an NA is said, not warned of
    late = [f"{d},T{k},{10 + k},n/a" for d in _days(60)[:40] for k in range(5)]
    late += [f"{d},T{k},{10 + k},{9 + k}" for d in _days(60)[40:] for k in range(5)]
    path = _long(tmp_path / "late.csv", late, header="date,ticker,close,adj_close")
    read_file(path, n_rows=200)  # the preflight: no error
    assert read_file(path)[0].height == 300
    blank = _long(tmp_path / "blank.csv", ['2024-01-02,AAA,"50,1"', '2024-01-02,,"40,1"', "2024-01-02,BBB,7"])
    frame, findings = read_file(blank)
    assert sorted({f.ticker for f in findings}) == ["", "AAA"] and frame["ticker"].to_list() == ["BBB"]


def test_a_ticker_sorted_file_of_numeric_dates_is_refused_by_the_first_rows_read(tmp_path):
    """A verifier's case: sorted by ticker, the preflight's 200 rows held one ticker, whose unparsed dates were
    taken for that ticker's own format: the file was refused only after Prefect's server had started (20 s)."""
    rows = [f"{1325548800 + 86400 * d},{t},10" for t in ("AAA", "BBB") for d in range(300)]
    with pytest.raises(SourceError, match=r"the first '1325548800' \(a number: Excel's serial days or Unix time"):
        read_file(_long(tmp_path / "unix.csv", rows), n_rows=200)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("date,ticker,close,Close\n2024-01-02,AAA,20,20\n", "close"),
        ("date,ticker,close,close\n2024-01-02,AAA,20,21\n", "close"),  # polars: close, close_duplicated_0
        ("date,ticker,Close,CLOSE\n2024-01-02,AAA,20,21\n", "close"),
        ("date,ticker,close,adj_close,Adj Close\n2024-01-02,AAA,20,19,18\n", "adj_close"),
        ("Date,date,ticker,close\n2024-01-02,2024-01-03,AAA,20\n", "date"),
    ],
)
def test_two_columns_for_one_field_are_an_error_naming_both(tmp_path, text, field):
    """A hostile user's case: `close` and `Close` stopped the run with a traceback (polars' DuplicateError), and
    `Close` and `CLOSE` with different values kept the last one without a word."""
    path = tmp_path / "prices.csv"
    path.write_text(text)
    with pytest.raises(SourceError, match=rf"columns \[.*\] all name '{field}': keep one of them"):
        read_file(path)


def test_a_second_date_like_column_beside_the_date_is_still_read(tmp_path):
    """A `timestamp` of the download beside `date`: the date is read, as before (no refusal)."""
    path = tmp_path / "prices.csv"
    path.write_text("date,timestamp,ticker,close\n2024-01-02,2024-01-05 10:00,AAA,10\n")
    frame, _ = read_file(path)
    assert frame["close"].to_list() == [10.0] and str(frame["date"][0]) == "2024-01-02"
