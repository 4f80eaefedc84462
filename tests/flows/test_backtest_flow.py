"""`nightcast backtest` end to end on a slice of the sample, under a real (temporary) Prefect server."""

import numpy as np
import polars as pl
import pytest
from rich.console import Console

import flows.cli
from flows.cli import main

pytestmark = pytest.mark.slow


def test_backtest_cli_writes_predictions_metrics_and_report(prefect_harness, sample, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "slice.csv"
    (
        sample.filter(pl.col("ticker").is_in(["NVDA", "^GSPC"]))
        .group_by("ticker", maintain_order=True)
        .tail(400)  # validation.min_rows (300) and a year of training before the test start
        .select("date", "ticker", "open", "high", "low", "close", "adj_close", "volume")
        .write_csv(path)
    )
    (tmp_path / "nightcast.toml").write_text(
        "[windows]\nlookback = 10\nval_days = 60\n[model]\nhidden_size = 4\nattention_size = 4\n"
        "[train]\nepochs = 1\nthreads = 1\nprogress = false\n[backtest]\nconformal_min = 5\n"
    )
    recorder = Console(record=True, width=160)
    monkeypatch.setattr(flows.cli, "console", recorder)
    out = tmp_path / "bt" / "backtest"  # --out is the output root; a backtest writes under <out>/backtest
    code = main(
        [
            "backtest",
            "--path",
            str(path),
            "--test-start",
            "2014-10-01",
            "--horizons",
            "1,5",
            "--refit-every",
            "30",
            "--out",
            str(out.parent),
        ]
    )
    assert code == 0
    predictions = pl.read_parquet(out / "predictions.parquet")
    assert sorted(predictions["model"].unique().to_list()) == [
        "attention_lstm",
        "combined",  # what the nightly publishes by default is scored by default too
        "hist_mean",
        "lstm",
        "random_walk",
        "ridge",
    ]
    assert sorted(predictions["horizon"].unique().to_list()) == [1, 5]
    assert str(predictions["asof_date"].min()) == "2014-10-01"
    # the metrics file scores the predictions file: recomputed here for the model at h=5, pooled
    metrics = pl.read_csv(out / "metrics.csv")
    pooled = metrics.filter((pl.col("scope") == "pooled") & (pl.col("horizon") == 5))
    row = pooled.filter(pl.col("model") == "attention_lstm").row(0, named=True)
    p5 = predictions.filter((pl.col("model") == "attention_lstm") & (pl.col("horizon") == 5))
    y, f = p5["y_true"].to_numpy(), p5["y_pred"].to_numpy()
    assert row["n"] == p5.height == 2 * 59  # two tickers; the last 5 origins' targets lie past the data
    assert row["mse"] == pytest.approx(((y - f) ** 2).mean(), rel=1e-9)
    assert row["mse_ratio"] == pytest.approx(((y - f) ** 2).mean() / (y**2).mean(), rel=1e-9)
    assert row["hit_rate"] == pytest.approx(((y > 0) == (f >= 0)).mean())
    inside = p5.drop_nulls("y_lower").select(pl.col("y_true").is_between(pl.col("y_lower"), pl.col("y_upper")).mean())
    assert row["coverage"] == pytest.approx(inside.item()) and 0 < row["coverage"] <= 1  # conformal intervals
    assert pooled.filter(pl.col("model") == "random_walk")["mse"].item() == pytest.approx(row["baseline_mse"])
    folds = pl.read_parquet(out / "folds.parquet")
    assert folds.height == 2 and folds["train"].is_sorted()  # expanding window, two refits
    assert str(folds["refit_date"][1]) == str(predictions["asof_date"].unique().sort()[30])  # every 30 origins
    report = (out / "report.md").read_text()
    for png in ("cumulative_error.png", "predicted_vs_realised.png", "hit_rates.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG" and f"]({png})" in report
    assert "Walk-forward backtest" in recorder.export_text()
    check_interval_outputs(out, p5, report)
    # the volatility forecasts' QLIKE on the same origins: the published one recomputed from the predictions
    from forecasting.intervals import qlike

    vol = pl.read_parquet(out / "volatility_qlike.parquet").filter(pl.col("horizon") == 5)
    assert sorted(vol["forecast"].to_list()) == ["ewma_0.94", "har", "published"]
    assert "## Volatility forecasts" in report
    known = p5.drop_nulls("sigma")
    published = vol.filter(pl.col("forecast") == "published").row(0, named=True)
    assert published["n"] == known.height and published["qlike"] == pytest.approx(
        qlike(known["y_true"].to_numpy() ** 2, known["sigma"].to_numpy() ** 2).mean(), rel=1e-9
    )


def check_interval_outputs(out, p5: pl.DataFrame, report: str) -> None:
    """Coverage within volatility deciles and the quantile scores, recomputed from the predictions."""
    # coverage within volatility deciles, recomputed from the predictions: the calmest tenth of the model's
    # horizon-5 forecasts with an interval
    deciles = pl.read_parquet(out / "coverage_by_volatility.parquet")
    banded = p5.drop_nulls("y_lower").drop_nulls("sigma").sort("sigma", maintain_order=True)
    calm = banded.with_row_index("r").filter(pl.col("r") * 10 // len(banded) == 0)
    hit = calm.select(pl.col("y_true").is_between(pl.col("y_lower"), pl.col("y_upper")).mean()).item()
    first = deciles.filter((pl.col("model") == "attention_lstm") & (pl.col("horizon") == 5) & (pl.col("decile") == 0))
    assert first["coverage"].item() == pytest.approx(hit) and first["n"].item() == calm.height
    assert "## Intervals when markets are calm and wild" in report
    # quantile forecasts, scored against the normal band on the same rows; the pinball loss recomputed
    scores = pl.read_parquet(out / "quantile_scores.parquet")
    levels = (0.05, 0.1, 0.5, 0.9, 0.95)
    rows = p5.drop_nulls([f"q{q}" for q in levels])
    y = rows["y_true"].to_numpy()
    losses = []
    for q in levels:
        u = y - rows[f"q{q}"].to_numpy()
        losses.append(np.mean(np.maximum(q * u, (q - 1) * u)))
    by_hand = np.mean(losses)
    mine = scores.filter((pl.col("model") == "attention_lstm") & (pl.col("horizon") == 5))
    assert mine["pinball"].item() == pytest.approx(by_hand, rel=1e-9) and mine["n"].item() == rows.height
    assert "## Quantile forecasts" in report and "](reliability.png)" in report
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("interval", ["conformal", "quantile"])
def test_a_short_backtest_or_intervals_without_a_band_still_write_their_report(settings, tmp_path, interval):
    """Too few realised residuals for any quantile (conformal_min), or `interval = "quantile"` without a quantile
    head (no band at all): the files and the report are written without those sections, not a crash."""
    from datetime import date

    from flows.backtest import write_backtest
    from forecasting.backtest import Intervals, Schedule, make_forecasters, walk_forward
    from forecasting.settings import BacktestSettings, PublishSettings, held_share
    from tests.forecasting.test_backtest import MODEL, PRICES, TRAIN, panel_of

    panel = panel_of(PRICES)
    bt = BacktestSettings(
        test_start=date(2011, 3, 1), test_end=date(2011, 3, 15), interval=interval, models=["random_walk", "hist_mean"]
    )
    schedule = Schedule.from_settings(
        panel, bt, lookback=10, val_days=40, test_days=60, held_share=held_share(bt.models, PublishSettings())
    )
    result = walk_forward(panel, make_forecasters(bt, MODEL, TRAIN, 10), schedule, Intervals.from_settings(bt), False)
    paths = write_backtest.fn(result, settings.model_copy(update={"backtest": bt}), tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert (tmp_path / "metrics.parquet") in paths and "## Quantile forecasts" not in report
    assert not (tmp_path / "quantile_scores.parquet").exists() and not (tmp_path / "reliability.png").exists()
    assert ("## Intervals when markets are calm and wild" in report) == (interval == "conformal")
