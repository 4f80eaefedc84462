import numpy as np
import pandas as pd
import polars as pl
import pytest

from features.errors import SourceError
from features.settings import SourceSettings
from features.sources import from_yfinance, load, load_file, select_tickers


def yfinance_frame(bars: dict[str, int | None]) -> pd.DataFrame:
    """Built the way yfinance 1.7's `download(..., auto_adjust=False, group_by='column')` builds it:
    one `history()` frame per ticker (an all-NaN `empty_df` for failures), concatenated
    under keys with names ['Ticker', 'Price'], levels swapped and sorted."""
    dates = pd.DatetimeIndex(pd.bdate_range("2024-01-02", periods=5), name="Date")
    dfs = {}
    for i, (ticker, n) in enumerate(bars.items()):
        if n is None:  # failed / unknown symbol
            dfs[ticker] = pd.DataFrame(
                index=pd.DatetimeIndex([], name="Date"),
                data={c: np.nan for c in ("Open", "High", "Low", "Close", "Adj Close", "Volume")},
            )
            continue
        close = 100.0 + i * 10 + np.arange(5)
        df = pd.DataFrame(
            {
                "Open": close - 0.5,
                "High": close + 1,
                "Low": close - 1,
                "Close": close,
                "Adj Close": close * 0.98,
                "Volume": np.full(5, 1e6),
            },
            index=dates,
        )
        df.iloc[n:] = np.nan  # fewer bars: trailing all-NaN rows after the concat
        dfs[ticker] = df.iloc[:n]
    data = pd.concat(dfs.values(), axis=1, sort=True, keys=dfs.keys(), names=["Ticker", "Price"])
    data.columns = data.columns.swaplevel(0, 1)
    data = data.sort_index(level=0, axis=1)
    return data


def test_yfinance_multiindex_to_lake_schema():
    raw = yfinance_frame({"AAPL": 5, "MSFT": 3, "DELISTED": None})
    assert raw.columns.names == ["Price", "Ticker"]
    frame = from_yfinance(raw)
    assert frame.columns[:8] == ["ticker", "date", "open", "high", "low", "close", "adj_close", "volume"]
    counts = dict(frame.group_by("ticker").len().iter_rows())
    assert counts == {"AAPL": 5, "MSFT": 3}  # NaN rows and the failed symbol dropped
    aapl = frame.filter(pl.col("ticker") == "AAPL").sort("date")
    assert aapl["close"].to_list() == [100.0, 101.0, 102.0, 103.0, 104.0]
    assert aapl["adj_close"][0] == pytest.approx(98.0)  # close and adj_close kept apart
    assert aapl["date"][0].isoformat() == "2024-01-02"


def test_yfinance_ticker_grouped_and_empty():
    raw = yfinance_frame({"AAPL": 5})
    raw.columns = raw.columns.swaplevel(0, 1)  # group_by="ticker"
    assert from_yfinance(raw).height == 5
    assert from_yfinance(pd.DataFrame()).is_empty()  # what 1.7 returns offline


def test_long_file_case_insensitive(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text("Date,TICKER,Close,Volume\n2024-01-02,AAA,10.5,100\n2024-01-03,AAA,11,200\n")
    frame = load_file(path)
    assert frame["adj_close"].to_list() == [10.5, 11.0]  # adj_close defaults to close
    assert frame["open"].null_count() == 2
    assert frame["source"][0] == "file:prices.csv"


def test_file_errors_name_the_problem(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        load_file(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("when,price\n2024-01-02,1\n")
    with pytest.raises(SourceError, match=r"missing required columns \['date', 'ticker', 'close'\]"):
        load_file(bad)
    dates = tmp_path / "dates.csv"
    dates.write_text("date,ticker,close\n02/01/2024,AAA,1\n")
    with pytest.raises(SourceError, match="could not be parsed"):
        load_file(dates)


def test_sample_source_and_ticker_filter():
    frame = load(SourceSettings(kind="sample", tickers=["NVDA"]))
    assert frame["ticker"].unique().to_list() == ["NVDA"]
    assert str(frame["date"].max()) == "2014-12-31"
    with pytest.raises(SourceError, match=r"tickers not in the source: \['AAPL'\]"):
        select_tickers(frame, ["AAPL"])
