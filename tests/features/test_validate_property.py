"""Property: random corruptions of a valid frame are always repaired or rejected, never passed through."""

from datetime import date

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.prices.schema import is_valid_ticker
from features.prices.validate import validate_prices
from features.settings import ValidationSettings
from tests.conftest import synthetic_prices

TODAY = date(2024, 1, 1)
TICKERS = ["AAA", "BBB", "CCC"]
N = 60
CLEAN = synthetic_prices(TICKERS, N, seed=11)
COLUMNS = ["open", "high", "low", "close", "adj_close", "volume"]

corruption = st.one_of(
    st.tuples(st.just("nan"), st.sampled_from(TICKERS), st.integers(0, N - 1), st.sampled_from(COLUMNS)),
    st.tuples(st.just("negative"), st.sampled_from(TICKERS), st.integers(0, N - 1), st.sampled_from(COLUMNS)),
    st.tuples(st.just("duplicate"), st.sampled_from(TICKERS), st.integers(0, N - 1), st.none()),
    st.tuples(st.just("swap_hl"), st.sampled_from(TICKERS), st.integers(0, N - 1), st.none()),
    st.tuples(st.just("future"), st.sampled_from(TICKERS), st.integers(0, N - 1), st.none()),
    st.tuples(
        st.just("junk"), st.sampled_from(["../x", "a/b", "", "A\x00B", "X" * 16, "lower", ".."]), st.none(), st.none()
    ),
)


def corrupt(frame: pl.DataFrame, spec) -> pl.DataFrame:
    kind, ticker, row, col = spec
    if kind == "junk":
        return pl.concat([frame, CLEAN.filter(pl.col("ticker") == "AAA").with_columns(pl.lit(ticker).alias("ticker"))])
    idx = frame.with_row_index("i").filter(pl.col("ticker") == ticker)["i"]
    if row >= len(idx):
        return frame
    i = int(idx[row])
    target = pl.int_range(pl.len()) == i
    if kind == "nan":
        return frame.with_columns(pl.when(target).then(float("nan")).otherwise(pl.col(col)).alias(col))
    if kind == "negative":
        return frame.with_columns(pl.when(target).then(-pl.col(col).abs() - 1).otherwise(pl.col(col)).alias(col))
    if kind == "duplicate":
        return pl.concat([frame, frame.slice(i, 1)])
    if kind == "swap_hl":
        return frame.with_columns(
            pl.when(target).then(pl.col("low")).otherwise(pl.col("high")).alias("high"),
            pl.when(target).then(pl.col("high")).otherwise(pl.col("low")).alias("low"),
        )
    return frame.with_columns(
        pl.when(target)
        .then(pl.lit(date(2030, 1, 1) + (date(2030, 1, 2) - date(2030, 1, 1)) * i))
        .otherwise(pl.col("date"))
        .alias("date")
    )


def assert_clean(out: pl.DataFrame) -> None:
    assert all(is_valid_ticker(t) for t in out["ticker"].unique())
    assert out.select(pl.struct("ticker", "date").is_unique().all()).item()
    assert (out["date"] <= TODAY).all()
    for c in ("close", "adj_close"):
        v = out[c].to_numpy()
        assert np.isfinite(v).all() and (v > 0).all()
    for c in ("open", "high", "low"):
        v = out[c].drop_nulls().to_numpy()
        assert np.isfinite(v).all() and (v > 0).all()
    bars = out.drop_nulls(subset=["open", "high", "low"])
    assert bars.select((pl.col("high") >= pl.max_horizontal("open", "close")).all()).item()
    assert bars.select((pl.col("low") <= pl.min_horizontal("open", "close")).all()).item()
    vol = out["volume"].drop_nulls().to_numpy()
    assert np.isfinite(vol).all() and (vol >= 0).all()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(corruption, min_size=1, max_size=6))
def test_corruptions_are_repaired_or_rejected(specs):
    frame = CLEAN
    for spec in specs:
        frame = corrupt(frame, spec)
    report = validate_prices(frame, ValidationSettings(min_rows=20, max_fill=2), today=TODAY)
    assert_clean(report.frame)
    flagged = {f.ticker for f in report.findings}
    for kind, ticker, _, _ in specs:
        changed = not frame.filter(pl.col("ticker") == ticker).equals(CLEAN.filter(pl.col("ticker") == ticker))
        if kind != "junk" and not changed:
            continue  # corruptions that undid each other (e.g. the same swap twice)
        assert ticker in flagged, f"{kind} on {ticker!r} passed silently"
        if kind == "junk":
            assert ticker in report.quarantined and "ticker_symbol" in report.quarantined[ticker]
    untouched = set(TICKERS) - flagged
    for t in untouched:  # clean tickers pass unchanged
        assert report.frame.filter(pl.col("ticker") == t).equals(CLEAN.filter(pl.col("ticker") == t))


EXPECTED_RULE = {
    ("nan", "close"): "bad_price",
    ("negative", "adj_close"): "bad_price",
    ("nan", "high"): "bad_ohlc",
    ("negative", "open"): "bad_ohlc",
    ("nan", "volume"): "bad_volume",
    ("negative", "volume"): "bad_volume",
    ("duplicate", None): "duplicate_day",
    ("swap_hl", None): "ohlc_bounds",
    ("future", None): "future_date",
}


def test_each_corruption_gets_its_own_rule():
    for (kind, col), rule in EXPECTED_RULE.items():
        report = validate_prices(corrupt(CLEAN, (kind, "BBB", 30, col)), ValidationSettings(min_rows=20), today=TODAY)
        rules = {f.rule for f in report.findings if f.ticker == "BBB"}
        assert rule in rules, (kind, col, rules)
        assert [f.ticker for f in report.findings] == ["BBB"] * len(report.findings)
