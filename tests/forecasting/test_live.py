import math
from datetime import date

import polars as pl
import pytest

from forecasting.ledger import read_ledger, write_partition
from forecasting.live import (
    RECORD_SCHEMA,
    excess_loss,
    live_record,
    pending_count,
    record_markdown,
    score,
)
from forecasting.metrics import per_ticker, pooled
from forecasting.plots import plot_live_record

D0, D1, D2, D3 = date(2024, 1, 2), date(2024, 1, 3), date(2024, 1, 4), date(2024, 1, 5)
NEXT = {D0: D1, D1: D2, D2: D3, D3: date(2024, 1, 8)}
PNG = b"\x89PNG\r\n\x1a\n"

# Adjusted closes in the lake; nothing on D3 yet. "ALL" is a real symbol (Allstate).
PRICES = {"AAA": {D0: 100.0, D1: 110.0, D2: 99.0}, "ALL": {D0: 50.0, D1: 45.0, D2: 54.0}}
# Published log-return forecasts per (ticker, horizon, asof_date).
PRED = {
    ("AAA", 1, D0): 0.05,
    ("AAA", 1, D1): -0.02,
    ("AAA", 1, D2): 0.01,  # target D3: not priced yet
    ("ALL", 1, D0): 0.01,
    ("ALL", 1, D1): 0.10,
    ("ALL", 1, D2): 0.00,
    ("AAA", 2, D0): 0.03,
    ("AAA", 2, D1): 0.04,  # target D3
    ("ALL", 2, D0): -0.01,
    ("ALL", 2, D1): 0.02,
}
# AAA's close is 200 (its adjusted close 100 reflects a later 2:1 split); its interval is
# [-0.05, +0.12] in log return around that close. ALL has no interval.
CLOSE = {"AAA": 200.0, "ALL": 50.0}


def prices_frame(prices=PRICES) -> pl.DataFrame:
    rows = [{"ticker": t, "date": d, "adj_close": p, "close": p} for t, by in prices.items() for d, p in by.items()]
    return pl.DataFrame(rows)


def target(asof: date, h: int) -> date:
    for _ in range(h):
        asof = NEXT[asof]
    return asof


@pytest.fixture
def ledger(tmp_path):
    """The forecasts above written through the ledger, one partition per as-of date."""
    for asof in (D0, D1, D2):
        rows = [
            {
                "run_id": f"run-{asof}",
                "model_version": "m-1",
                "asof_date": asof,
                "ticker": t,
                "horizon": h,
                "target_date": target(asof, h),
                "last_price": CLOSE[t],
                "pred_log_return": p,
                "pred_price": CLOSE[t] * math.exp(p),
                "pred_lower": CLOSE[t] * math.exp(-0.05) if t == "AAA" else None,
                "pred_upper": CLOSE[t] * math.exp(0.12) if t == "AAA" else None,
                "skill": False,
                "source_model": "attention_lstm",
            }
            for (t, h, a), p in PRED.items()
            if a == asof
        ]
        write_partition(tmp_path, pl.DataFrame(rows))
    return read_ledger(tmp_path)


def y(ticker: str, asof: date, h: int, prices=PRICES) -> float:
    return math.log(prices[ticker][target(asof, h)] / prices[ticker][asof])


def test_score_by_hand(ledger):
    scored = score(ledger, prices_frame())
    keys = scored.select("ticker", "horizon", "asof_date").rows()
    assert keys == sorted(
        [("AAA", 1, D0), ("ALL", 1, D0), ("AAA", 2, D0), ("ALL", 2, D0), ("AAA", 1, D1), ("ALL", 1, D1)],
        key=lambda k: (k[2], k[0], k[1]),
    )  # the targets on D3 are not in the prices: not scored
    assert pending_count(ledger, scored) == 4
    assert set(scored["model"]) == {"published"}
    got = {
        (t, h, a): (yt, yp, lp)
        for t, h, a, yt, yp, lp in scored.select(
            "ticker", "horizon", "asof_date", "y_true", "y_pred", "last_price"
        ).rows()
    }
    assert got[("AAA", 1, D0)] == pytest.approx((math.log(1.1), 0.05, 100.0))
    assert got[("ALL", 1, D1)] == pytest.approx((math.log(1.2), 0.10, 45.0))
    assert got[("ALL", 2, D0)] == pytest.approx((math.log(1.08), -0.01, 50.0))
    aaa = scored.filter(pl.col("ticker") == "AAA")
    # Bounds relative to the ledger's own last_price (the close 200), not the adjusted close 100.
    assert aaa["y_lower"].to_list() == pytest.approx([-0.05] * 3)
    assert aaa["y_upper"].to_list() == pytest.approx([0.12] * 3)
    assert scored.filter(pl.col("ticker") == "ALL")["y_lower"].null_count() == 3

    # Prices cut at D1 (a replay of that night): only the horizon-1 forecasts made on D0 are due.
    early = score(ledger, prices_frame().filter(pl.col("date") <= D1))
    assert early.select("ticker", "horizon", "asof_date").rows() == [("AAA", 1, D0), ("ALL", 1, D0)]


def test_live_record_by_hand_and_all_is_not_pooled(ledger):
    record = live_record(score(ledger, prices_frame()))
    assert dict(record.schema) == RECORD_SCHEMA
    h1 = [(t, a) for (t, h, a) in PRED if h == 1 and a in (D0, D1)]
    ys = [y(t, a, 1) for t, a in h1]
    ps = [PRED[(t, 1, a)] for t, a in h1]
    row = pooled(record).filter(pl.col("horizon") == 1).row(0, named=True)
    assert row["ticker"] is None and row["n"] == 4
    assert row["mse"] == pytest.approx(sum((a - b) ** 2 for a, b in zip(ys, ps, strict=True)) / 4)
    assert row["mse_ratio"] == pytest.approx(
        sum((a - b) ** 2 for a, b in zip(ys, ps, strict=True)) / sum(a**2 for a in ys)
    )
    assert row["baseline_mse"] == pytest.approx(sum(a**2 for a in ys) / 4)
    # AAA D0 up/up hit, AAA D1 down/down hit, ALL D0 down/up miss, ALL D1 up/up hit
    assert row["hit_rate"] == 0.75
    assert row["up_rate"] == 0.5
    # Only AAA has intervals [-0.05, 0.12]: log(1.1) inside, log(0.9) below.
    assert row["coverage"] == 0.5
    assert row["interval_width"] == pytest.approx(0.17)
    assert (row["first_asof"], row["last_target"]) == (D0, D2)

    # The ticker "ALL" is its own per-ticker row, never mistaken for the pooled one.
    tickers = per_ticker(record)
    assert tickers.select("ticker", "horizon").rows() == [("AAA", 1), ("AAA", 2), ("ALL", 1), ("ALL", 2)]
    all1 = tickers.filter((pl.col("ticker") == "ALL") & (pl.col("horizon") == 1)).row(0, named=True)
    ys_all = [y("ALL", D0, 1), y("ALL", D1, 1)]
    assert all1["n"] == 2
    assert all1["mse_ratio"] == pytest.approx(
        ((ys_all[0] - 0.01) ** 2 + (ys_all[1] - 0.10) ** 2) / (ys_all[0] ** 2 + ys_all[1] ** 2)
    )
    assert all1["hit_rate"] == 0.5 and all1["coverage"] is None
    assert pooled(record)["horizon"].to_list() == [1, 2]
    assert pooled(record).filter(pl.col("horizon") == 2)["n"].item() == 2

    text = record_markdown(record, waiting=4)
    assert f"| 1 | 4 | {row['mse_ratio']:.4f} | 0.750 | 0.500 |" in text
    assert "4 ledger forecasts still wait for their target date" in text
    assert "ALL" not in text  # the section shows the pooled table only


def test_empty_inputs_do_not_crash(ledger):
    nothing = score(ledger, prices_frame().clear())
    assert nothing.is_empty()
    record = live_record(nothing)
    assert record.is_empty() and dict(record.schema) == RECORD_SCHEMA
    text = record_markdown(record, waiting=pending_count(ledger, nothing))
    assert "No forecast has reached its target date yet" in text and "10 ledger forecasts still wait" in text
    assert score(ledger.clear(), prices_frame()).is_empty()


def test_revised_price_rescores_exactly_the_affected_forecasts(ledger):
    before = score(ledger, prices_frame())
    assert before.equals(score(ledger, prices_frame()))  # idempotent: a pure function of ledger and lake
    revised_prices = {t: dict(by) for t, by in PRICES.items()}
    revised_prices["ALL"][D1] = 40.0  # a late adjustment of ALL on D1
    after = score(ledger, prices_frame(revised_prices))
    assert after.select("ticker", "horizon", "asof_date").equals(before.select("ticker", "horizon", "asof_date"))

    pair = before.join(after, on=["ticker", "horizon", "asof_date"], suffix="_new")
    changed = pair.filter(pl.col("y_true") != pl.col("y_true_new"))
    # ALL's D0 -> D1 forecast (target on D1) and its D1 -> D2 forecast (as-of on D1); ALL's D0 -> D2 is untouched.
    assert changed.select("ticker", "horizon", "asof_date").sort("asof_date").rows() == [("ALL", 1, D0), ("ALL", 1, D1)]
    assert changed["y_true_new"].to_list() == pytest.approx([math.log(40 / 50), math.log(54 / 40)])
    unchanged = pair.filter(pl.col("y_true") == pl.col("y_true_new"))
    assert unchanged.height == before.height - 2
    assert after.equals(score(ledger, prices_frame(revised_prices)))


def test_excess_loss_and_plot(ledger, tmp_path):
    scored = score(ledger, prices_frame())
    loss = excess_loss(scored).filter(pl.col("horizon") == 1)
    assert loss["target_date"].to_list() == [D1, D2]

    def excess(t, asof):  # squared error minus the random walk's, for one horizon-1 forecast
        return (y(t, asof, 1) - PRED[(t, 1, asof)]) ** 2 - y(t, asof, 1) ** 2

    d1 = (excess("AAA", D0) + excess("ALL", D0)) / 2
    d2 = (excess("AAA", D1) + excess("ALL", D1)) / 2
    assert loss["cumulative"].to_list() == pytest.approx([d1, d1 + d2])

    path = plot_live_record(scored, tmp_path / "plots" / "live.png")
    assert path.read_bytes()[:8] == PNG
    empty = plot_live_record(scored.clear(), tmp_path / "empty.png")
    assert empty.read_bytes()[:8] == PNG
    assert [p.name for p in (tmp_path / "plots").iterdir()] == ["live.png"]  # no temp file left


def test_the_ledger_scored_from_files_tells_waiting_from_unpriced(tmp_path, ledger):
    """The one entry point of the nightly and `nightcast record`: prices of every ledger ticker from the lake."""
    from features.prices import lake
    from forecasting.live import score_ledger

    # the lake: ALL has a gap on D2 (a halt), AAA is priced through D3; nothing after D3
    prices = {"AAA": {**PRICES["AAA"], D3: 101.0}, "ALL": {D0: 50.0, D1: 45.0, D3: 52.0}}
    frame = prices_frame(prices).with_columns(pl.col("date").cast(pl.Date), pl.lit("test").alias("source"))
    lake.upsert(tmp_path / "lake", frame)
    book = score_ledger(tmp_path, tmp_path / "lake")
    assert book.ledger.height == 10 and book.scored.height + book.waiting + book.unpriced == 10
    assert book.waiting == 0  # every target (D1 .. D3) is on or before the newest price, D3
    # ALL's forecasts made on D2 or due on D2 cannot be scored: h1 from D1, h2 from D0, h1 from D2
    assert book.unpriced == 3
    then = score_ledger(tmp_path, tmp_path / "lake", asof=D1)
    assert then.ledger.height == 8 and then.scored.height == 2 and then.waiting == 6 and then.unpriced == 0


def test_the_ledger_is_scored_from_three_columns_of_the_lake(tmp_path, ledger, monkeypatch):
    """The nightly scores against the whole lake: its ten columns of 500 tickers x 25 years held ~0.8 GB at
    once; the adjusted closes are all `score` reads."""
    from features.prices import lake
    from forecasting.live import score_ledger

    frame = prices_frame(PRICES).with_columns(pl.col("date").cast(pl.Date), pl.lit("test").alias("source"))
    lake.upsert(tmp_path / "lake", frame)
    whole = score_ledger(tmp_path, tmp_path / "lake")
    asked, read = [], lake.read_prices

    def recording(lake_dir, tickers, columns=None):
        asked.append(columns)
        return read(lake_dir, tickers, columns)

    monkeypatch.setattr(lake, "read_prices", recording)
    cut = score_ledger(tmp_path, tmp_path / "lake")
    assert asked == [("ticker", "date", "adj_close")]
    assert cut.scored.equals(whole.scored) and (cut.waiting, cut.unpriced) == (whole.waiting, whole.unpriced)
