"""End to end: the real nightly flow under a real (temporary) Prefect server, on a slice of the sample."""

import json
from datetime import date

import polars as pl
import pytest

from features.calendar import is_session
from forecasting.publish import FORECAST_COLUMNS

pytestmark = pytest.mark.slow

UI_KEYS = ["nightly-summary", "nightly-forecasts", "nightly-files", "attention-heatmap", "live-record"]


def test_nightly_flow_end_to_end(prefect_harness, settings):
    from flows.nightly import nightly

    state = nightly(settings, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    out = settings.paths.out_dir
    assert result.asof == date(2014, 12, 31)
    forecasts = pl.read_parquet(out / "forecasts" / "asof=2014-12-31" / "forecasts.parquet")
    assert tuple(forecasts.columns) == FORECAST_COLUMNS
    assert forecasts.height == 3 * 5
    assert sorted(forecasts["ticker"].unique().to_list()) == ["NVDA", "ORCL", "^GSPC"]
    assert all(is_session(d) and d > date(2014, 12, 31) for d in forecasts["target_date"].to_list())
    assert forecasts["run_id"].n_unique() == 1 and forecasts["run_id"][0] != "local"
    csv = pl.read_csv(out / "forecasts" / "asof=2014-12-31" / "forecasts.csv", try_parse_dates=True)
    assert csv.height == 15 and csv["pred_price"].to_list() == pytest.approx(forecasts["pred_price"].to_list())

    metrics = pl.read_parquet(out / "metrics" / "asof=2014-12-31" / "metrics.parquet")
    pooled = metrics.filter(pl.col("scope") == "pooled")
    assert sorted(pooled["model"].unique().to_list()) == ["attention_lstm", "hist_mean", "random_walk", "ridge"]
    assert (pooled["n"] == 3 * 60).all() and pooled.height == 4 * 5
    model = pooled.filter(pl.col("model") == "attention_lstm").sort("horizon")
    assert ((model["mse_ratio"] - model["mse"] / model["baseline_mse"]).abs() < 1e-12).all()
    assert model["baseline_mse"].is_sorted()  # longer horizons, larger squared returns
    assert model["dm_pvalue"].is_between(0, 1).all()
    # the skill flag in the forecasts is exactly what the evaluation says, horizon by horizon
    expected = {
        int(r["horizon"]): r["mse_ratio"] < 1 and r["dm_stat"] < 0 and r["dm_pvalue"] < 0.05
        for r in model.iter_rows(named=True)
    }
    assert dict(forecasts.select("horizon", "skill").unique().iter_rows()) == expected == result.skill
    worse = {
        int(r["horizon"])
        for r in model.iter_rows(named=True)
        if r["mse_ratio"] > 1 and r["dm_stat"] > 0 and r["dm_pvalue"] < 0.05
    }
    # default guardrail: the model publishes unless it is significantly worse than the random walk
    published_by_model = set(forecasts.filter(pl.col("source_model") == "attention_lstm")["horizon"].to_list())
    assert published_by_model == set(range(1, 6)) - worse
    # the published model is the recipe refit on every label realised by the as-of date (5-day purge),
    # vouched for by an evaluation fit that never saw the evaluation span
    assert (forecasts["trained_through"] == date(2014, 12, 23)).all() and result.trained_through == date(2014, 12, 23)
    assert (forecasts["eval_start"] == result.test_start).all() and (forecasts["eval_end"] == result.test_end).all()
    assert forecasts["eval_version"][0] == result.evaluation_version != result.model_version
    lower, upper = forecasts["pred_lower"], forecasts["pred_upper"]
    assert ((lower < forecasts["pred_price"]) & (forecasts["pred_price"] < upper)).all()
    predictions = pl.read_parquet(out / "metrics" / "asof=2014-12-31" / "predictions.parquet")
    assert predictions.height == 4 * 3 * 60 * 5
    assert predictions["asof_date"].min() == result.test_start
    assert (predictions["target_date"] <= date(2014, 12, 31)).all()

    run_meta = json.loads((out / "forecasts" / "asof=2014-12-31" / "run.json").read_text())
    assert run_meta["run_id"] == forecasts["run_id"][0] and run_meta["model_version"] == result.model_version
    assert run_meta["trained_through"] == "2014-12-23"
    assert run_meta["evaluation"]["version"] == result.evaluation_version
    assert run_meta["evaluation"]["origins"] == [str(result.test_start), str(result.test_end)]
    assert run_meta["data_fingerprint"] and run_meta["versions"]["torch"].startswith("2.13.0")
    assert run_meta["settings"]["windows"]["lookback"] == 20
    latest = json.loads((out / "latest.json").read_text())
    assert latest["asof_date"] == "2014-12-31" and "forecasts/asof=2014-12-31/forecasts.parquet" in latest["files"]
    assert all((out / f).exists() for f in latest["files"])

    reports = out / "reports" / "asof=2014-12-31"
    assert (reports / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lags = pl.read_parquet(reports / "attention_lags.parquet")
    assert lags.height == (3 + 1) * 20  # three tickers and the pooled row, 20 lags each
    sums = lags.group_by("scope", "ticker").agg(pl.col("weight").sum())["weight"].to_list()
    assert sums == pytest.approx([1.0] * 4, abs=1e-5)
    assert "attention" in result.attention_summary.lower()

    assert sorted(p.name for p in (settings.paths.lake / "prices").iterdir()) == [
        "NVDA.parquet",
        "ORCL.parquet",
        "^GSPC.parquet",
    ]
    assert result.checkpoint.exists()

    # the UI gets the plots as images it can render and a table led by ticker, target date and prices
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = {
            a.key: a for a in client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=UI_KEYS)))
        }
    assert set(found) == set(UI_KEYS)
    assert found["attention-heatmap"].type == "image" and found["attention-heatmap"].data.startswith(
        "data:image/png;base64,iVBORw0KGgo"  # a PNG's signature, base64
    )
    table = (
        json.loads(found["nightly-forecasts"].data)
        if isinstance(found["nightly-forecasts"].data, str)
        else found["nightly-forecasts"].data
    )
    assert list(table[0])[:3] == ["ticker", "target date", "horizon"] and len(table) == 15
    assert "file://" not in found["nightly-files"].data

    # every published forecast is in the ledger; none has reached its target date yet
    ledger = pl.read_parquet(out / "ledger" / "asof=2014-12-31" / "ledger.parquet")
    assert ledger.drop("run_id").equals(forecasts.drop("run_id")) and result.waiting == 15 and result.unpriced == 0
    assert result.record.is_empty()

    # an identical rerun replaces the same as-of partition with the same numbers, and the ledger's rows
    again = nightly(settings)
    rerun = pl.read_parquet(out / "forecasts" / "asof=2014-12-31" / "forecasts.parquet")
    assert rerun["pred_log_return"].to_list() == forecasts["pred_log_return"].to_list()
    assert again.model_version == result.model_version
    assert rerun["run_id"][0] != forecasts["run_id"][0]
    assert pl.read_parquet(out / "ledger" / "asof=2014-12-31" / "ledger.parquet").height == 15
    assert "promoted" in result.decision and "no champion" in result.decision and result.retrained
    assert again.decision.startswith("kept champion") and "still fresh" in again.decision  # nothing retrained
    assert not again.retrained

    # an aged champion is retrained; the identical challenger does not beat it out of sample, so it stays
    aged = settings.model_copy(update={"train": settings.train.model_copy(update={"max_age_days": 0})})
    third = nightly(aged)
    assert "does not beat the champion" in third.decision and third.model_version == result.model_version
    assert f"origins {result.test_start} .. {result.test_end}, out of sample for both" in third.decision
    # the contest is recorded: the champion's recipe was kept and refit (the same data: the same weights)
    history = json.loads((settings.paths.models / "champion.json").read_text())["history"]
    assert [r["event"] for r in history] == ["promoted", "kept"] and third.retrained
    assert history[1]["evaluation_version"] == history[0]["evaluation_version"] == result.evaluation_version


def test_health_gate_blocks_training_but_not_publishing(prefect_harness, settings, tmp_path):
    from flows.nightly import nightly

    first = nightly(settings)
    prices = pl.read_parquet(settings.source.path)
    jumped = prices.with_columns(
        pl.when((pl.col("ticker") == "ORCL") & (pl.col("date") == prices["date"].max()))
        .then(pl.col("adj_close") * 3)
        .otherwise(pl.col("adj_close"))
        .alias("adj_close")
    )
    jumped.write_parquet(settings.source.path)  # a new lake fingerprint: the champion is stale
    result = nightly(settings)
    assert "training is blocked by the data-health gate" in result.decision
    assert any("ORCL: implausible move" in p for p in result.health)
    assert result.model_version == first.model_version and result.forecasts.height == 15  # still published


def test_guardrail_can_publish_the_best_baseline(prefect_harness, settings):
    from flows.nightly import nightly

    strict = settings.model_copy(
        update={
            "publish": settings.publish.model_copy(update={"guardrail": "baseline"}),
            "backtest": settings.backtest.model_copy(update={"dm_alpha": 1e-12}),  # nothing is ever significant
        }
    )
    result = nightly(strict)
    assert not any(result.skill.values())
    pooled = result.metrics.filter(
        (pl.col("scope") == "pooled") & pl.col("model").is_in(["random_walk", "hist_mean", "ridge"])
    )
    best = dict(
        pooled.sort("mse").group_by("horizon", maintain_order=True).first().select("horizon", "model").iter_rows()
    )
    got = dict(result.forecasts.select("horizon", "source_model").unique().iter_rows())
    assert got == best
    rw = result.forecasts.filter(pl.col("source_model") == "random_walk")
    assert (rw["pred_log_return"] == 0).all() and (rw["pred_price"] == rw["last_price"]).all()


def test_train_flow_promotes_a_first_challenger_then_keeps_an_equal_champion(prefect_harness, settings):
    from flows.train import train_flow

    first = train_flow(settings)
    assert "promoted" in first.decision and first.verdict.champion_score is None
    (record,) = json.loads((settings.paths.models / "champion.json").read_text())["history"]
    assert record["version"] == first.version and record["evaluation_version"] == first.evaluation_version
    assert not record["checkpoint"].startswith("/") and (settings.paths.models / record["checkpoint"]).exists()
    second = train_flow(settings)  # same data and seed: the challenger ties, and a tie keeps the champion
    assert "does not beat the champion" in second.decision and second.verdict.n_forecasts == 3 * 60 * 5
    assert second.verdict.champion_score == second.verdict.challenger_score and second.version == first.version


def test_dask_runner_gives_the_threads_runners_forecasts(prefect_harness, settings, tmp_path):
    from flows.nightly import nightly
    from flows.tasks import task_runner

    forecasts = {}
    for kind in ("threads", "dask"):
        s = settings.model_copy(
            update={
                "runner": settings.runner.model_copy(update={"kind": kind, "chunk_size": 2, "dask_workers": 2}),
                "paths": settings.paths.model_copy(
                    update={"data_dir": tmp_path / kind, "out_dir": tmp_path / kind / "out"}
                ),
            }
        )
        result = nightly.with_options(task_runner=task_runner(s))(s)
        forecasts[kind] = result.forecasts.drop("run_id")
    assert forecasts["threads"].height == 15
    assert forecasts["dask"].equals(forecasts["threads"])
