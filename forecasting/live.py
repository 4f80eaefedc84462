"""The live record: ledger forecasts whose target date has passed, scored against realised prices.

Scoring is a pure function of the ledger and the lake's current prices, recomputed
every night: a revised price (a late split adjustment, a corrected bar) re-scores
the forecasts it touches the next time, and scoring twice gives the same frame.
The record uses `forecasting.metrics.metrics_table`, so the ratio to the random
walk, the Diebold-Mariano test, hit rate and "always up" rate mean what they mean
in the backtest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import polars as pl

from features.prices import lake
from forecasting.ledger import KEY, read_ledger
from forecasting.metrics import metrics_table, pooled
from forecasting.names import BENCHMARK, PUBLISHED_FORECASTS, Scope
from forecasting.results import RECORD_COLUMNS, markdown_table, record_table

# The long "predictions" contract of forecasting.metrics, plus where each forecast came from.
SCORED_SCHEMA: dict[str, pl.DataType] = {
    "model": pl.String,
    "ticker": pl.String,
    "asof_date": pl.Date,
    "horizon": pl.Int32,
    "target_date": pl.Date,
    "y_true": pl.Float64,  # log(adj_close[target_date] / adj_close[asof_date]), current lake values
    "y_pred": pl.Float64,  # the published pred_log_return
    "last_price": pl.Float64,  # adj_close on asof_date, so price metrics are in adjusted prices
    "y_lower": pl.Float64,  # interval as log returns; null when the forecast had none
    "y_upper": pl.Float64,
    "source_model": pl.String,
    "model_version": pl.String,
}

RECORD_SCHEMA: dict[str, pl.DataType] = {
    "scope": pl.String,  # "pooled" (ticker null) or "ticker"
    "ticker": pl.String,
    "horizon": pl.Int32,
    "n": pl.Int64,
    "mse": pl.Float64,
    "baseline_mse": pl.Float64,  # random walk (zero return) on the same forecasts
    "mse_ratio": pl.Float64,
    "hit_rate": pl.Float64,
    "up_rate": pl.Float64,  # the "always up" directional baseline
    "dm_stat": pl.Float64,
    "dm_pvalue": pl.Float64,
    "coverage": pl.Float64,
    "interval_width": pl.Float64,
    "first_asof": pl.Date,
    "last_target": pl.Date,
}


SCORED_PRICES = ("ticker", "date", "adj_close")  # the lake's columns `score` reads


def score(ledger: pl.DataFrame, prices: pl.DataFrame) -> pl.DataFrame:
    """Ledger rows whose ticker has an adj_close on both its asof_date and its target_date, scored.

    `prices`: the lake's frame (ticker, date, adj_close at least), possibly cut at an as-of date;
    forecasts whose target date it does not reach are simply not scored yet.
    """
    px = prices.select("ticker", pl.col("date").cast(pl.Date), pl.col("adj_close").cast(pl.Float64)).filter(
        pl.col("adj_close").is_finite() & (pl.col("adj_close") > 0)
    )
    start = px.rename({"date": "asof_date", "adj_close": "p0"})
    end = px.rename({"date": "target_date", "adj_close": "p1"})
    joined = ledger.join(start, on=["ticker", "asof_date"], how="inner").join(
        end, on=["ticker", "target_date"], how="inner"
    )
    # The interval was published as prices around the ledger's own last_price (the close), so its
    # log-return bounds are relative to that price, not to the adjusted close.
    return (
        joined.select(
            pl.lit(PUBLISHED_FORECASTS).alias("model"),
            "ticker",
            "asof_date",
            "horizon",
            "target_date",
            (pl.col("p1") / pl.col("p0")).log().alias("y_true"),
            pl.col("pred_log_return").alias("y_pred"),
            pl.col("p0").alias("last_price"),
            (pl.col("pred_lower") / pl.col("last_price")).log().alias("y_lower"),
            (pl.col("pred_upper") / pl.col("last_price")).log().alias("y_upper"),
            "source_model",
            "model_version",
        )
        .cast(SCORED_SCHEMA)
        .sort(*KEY)
    )


def pending_count(ledger: pl.DataFrame, scored: pl.DataFrame) -> int:
    """Ledger forecasts not scored yet: target date not reached, or not priced in the lake yet."""
    return ledger.select(KEY).join(scored.select(KEY), on=list(KEY), how="anti").height


@dataclass
class ScoredLedger:
    ledger: pl.DataFrame  # every forecast published up to the as-of date
    scored: pl.DataFrame  # those whose target date has passed, scored (`score`)
    waiting: int  # target date after the newest price: not due yet
    unpriced: int  # due, but the lake has no adjusted close on the as-of or the target date (a halt, a gap)


def score_ledger(ledger_dir: Path, lake_dir: Path, asof: date | None = None) -> ScoredLedger:
    """The ledger as of `asof` (default: everything) scored against the lake's adjusted closes up to `asof`.

    The one way the live record is computed, by the nightly and by `nightcast record` alike: prices are read
    for every ticker in the ledger, so a ticker that left the universe is still scored.
    """
    book = read_ledger(ledger_dir, until=asof)
    prices = lake.read_prices(lake_dir, sorted(book["ticker"].unique().to_list()), columns=SCORED_PRICES)
    if asof is not None:
        prices = prices.filter(pl.col("date") <= asof)
    scored = score(book, prices)
    newest = prices["date"].max() if not prices.is_empty() else None
    waiting = book.height if newest is None else book.filter(pl.col("target_date") > newest).height
    return ScoredLedger(book, scored, waiting, pending_count(book, scored) - waiting)


def live_record(scored: pl.DataFrame) -> pl.DataFrame:
    """Per horizon, pooled (scope "pooled", ticker null) and per ticker (scope "ticker"): the published
    forecasts against a random walk on the same (ticker, asof_date) pairs."""
    if scored.is_empty():
        return pl.DataFrame(schema=RECORD_SCHEMA)
    walk = scored.with_columns(
        model=pl.lit(BENCHMARK),
        y_pred=pl.lit(0.0),
        y_lower=pl.lit(None, dtype=pl.Float64),
        y_upper=pl.lit(None, dtype=pl.Float64),
    )
    table = metrics_table(pl.concat([scored, walk]), baseline=BENCHMARK).filter(pl.col("model") == PUBLISHED_FORECASTS)
    span = [pl.col("asof_date").min().alias("first_asof"), pl.col("target_date").max().alias("last_target")]
    spans = pl.concat(
        [
            scored.group_by("horizon")
            .agg(span)
            .with_columns(scope=pl.lit(Scope.POOLED), ticker=pl.lit(None, pl.String)),
            scored.group_by("ticker", "horizon").agg(span).with_columns(scope=pl.lit(Scope.TICKER)),
        ],
        how="diagonal",
    )
    # nulls_equal: the pooled rows' ticker is null on both sides
    record = table.join(spans, on=["scope", "ticker", "horizon"], how="left", nulls_equal=True)
    # coverage and interval_width only exist when some forecast had an interval
    record = record.with_columns(
        pl.lit(None, dtype=dtype).alias(c) for c, dtype in RECORD_SCHEMA.items() if c not in record.columns
    )
    return record.select(pl.col(c).cast(dtype) for c, dtype in RECORD_SCHEMA.items()).sort(
        pl.col("scope") != Scope.POOLED, "ticker", "horizon"
    )


def excess_loss(scored: pl.DataFrame) -> pl.DataFrame:
    """Per horizon and target date: squared error of the published forecast minus that of the random
    walk (zero return), averaged across tickers (`d`), and its running sum over target dates."""
    return (
        scored.group_by("horizon", "target_date")
        .agg((((pl.col("y_true") - pl.col("y_pred")) ** 2) - pl.col("y_true") ** 2).mean().alias("d"))
        .sort("horizon", "target_date")
        .with_columns(cumulative=pl.col("d").cum_sum().over("horizon"))
    )


def record_markdown(record: pl.DataFrame, waiting: int, unpriced: int = 0) -> str:
    """A short Markdown section: the pooled live record, how to read it, and what is still pending."""
    lines = ["## Live record", ""]
    rows = pooled(record).sort("horizon")
    if rows.is_empty():
        lines.append("No forecast has reached its target date yet.")
    else:
        lines.append(markdown_table(record_table(record), RECORD_COLUMNS))
        first, last = rows["first_asof"].min(), rows["last_target"].max()
        lines += [
            "",
            f"Forecasts made since {first}, target dates through {last}, scored on adjusted closes. "
            "A ratio below 1 beats the random walk; a DM p below 0.05 says the difference is significant; "
            "the directional baseline is the 'always up' rate, not 0.5.",
        ]
    plural = "" if waiting == 1 else "s"
    lines += ["", f"{waiting} ledger forecast{plural} still wait for their target date."]
    if unpriced:
        lines.append(f"{unpriced} came due but cannot be scored: the lake has no adjusted close on the day.")
    return "\n".join(lines) + "\n"
