"""End to end: the real nightly flow under a real (temporary) Prefect server, on a slice of the sample."""

import json
from datetime import date

import polars as pl
import pytest

from features.prices.calendar import is_session
from forecasting.publish import FORECAST_COLUMNS, QUANTILE_COLUMNS

pytestmark = pytest.mark.slow

UI_KEYS = ["nightly-summary", "nightly-forecasts", "nightly-files", "attention-heatmap", "live-record"]


def test_nightly_flow_end_to_end(prefect_harness, settings, monkeypatch):
    """One nightly run checked stage by stage (the helpers below), then an identical rerun."""
    from features.prices.health import HealthReport
    from flows import model_choice
    from flows.nightly import nightly

    state = nightly(settings, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    out = settings.paths.out_dir
    assert result.asof == date(2014, 12, 31)
    forecasts = check_forecasts(out, result)
    check_evaluation(out, result, forecasts)
    # the evaluation's predictions were set aside in the run's scratch folder while it ran: gone with it
    assert not (settings.paths.data_dir / "scratch").exists()  # the run's scratch folder went with the run
    assert not (out / ".publishing.json").exists()  # the publish ended: every file written, latest.json last
    check_run_files(out, result, forecasts, settings)
    check_ui_artifacts(state.state_details.flow_run_id)

    # every published forecast is in the ledger; none has reached its target date yet
    ledger = pl.read_parquet(out / "ledger" / "asof=2014-12-31" / "ledger.parquet")
    assert ledger.drop("run_id").equals(forecasts.drop("run_id")) and result.waiting == 15 and result.unpriced == 0
    assert result.record.is_empty()

    # an identical rerun replaces the same as-of partition with the same numbers (the kept champion combines
    # by the weights stored with it), and the ledger's rows
    # ... on a night the data-health gate finds a problem (it blocks training, not publishing: run.json says so)
    problem = "ORCL: implausible move of +459.9% (log) on 2014-12-31 (health.max_jump = 0.4)"
    monkeypatch.setattr(model_choice, "check_health", lambda *args: HealthReport([problem]))
    again = nightly(settings)
    rerun = pl.read_parquet(out / "forecasts" / "asof=2014-12-31" / "forecasts.parquet")
    assert rerun["pred_log_return"].to_list() == forecasts["pred_log_return"].to_list()
    assert again.model_version == result.model_version
    assert rerun["run_id"][0] != forecasts["run_id"][0]
    assert pl.read_parquet(out / "ledger" / "asof=2014-12-31" / "ledger.parquet").height == 15
    assert "promoted" in result.decision and "no champion" in result.decision and result.retrained
    assert again.decision.startswith("kept champion") and "still fresh" in again.decision  # nothing retrained
    assert not again.retrained and again.health == [problem]
    rerun_meta = json.loads((out / "forecasts" / "asof=2014-12-31" / "run.json").read_text())
    assert rerun_meta["data_health"] == {"problems": [problem], "tickers": ["ORCL"]}


def check_forecasts(out, result) -> pl.DataFrame:
    forecasts = pl.read_parquet(out / "forecasts" / "asof=2014-12-31" / "forecasts.parquet")
    assert tuple(forecasts.columns) == FORECAST_COLUMNS
    assert forecasts.height == 3 * 5
    assert sorted(forecasts["ticker"].unique().to_list()) == ["NVDA", "ORCL", "^GSPC"]
    assert all(is_session(d) and d > date(2014, 12, 31) for d in forecasts["target_date"].to_list())
    assert forecasts["run_id"].n_unique() == 1 and forecasts["run_id"][0] != "local"
    csv = pl.read_csv(out / "forecasts" / "asof=2014-12-31" / "forecasts.csv", try_parse_dates=True)
    assert csv.height == 15 and csv["pred_price"].to_list() == pytest.approx(forecasts["pred_price"].to_list())
    # the published model is the recipe refit on every label realised by the as-of date (5-day purge),
    # vouched for by an evaluation fit that never saw the evaluation span
    assert (forecasts["trained_through"] == date(2014, 12, 23)).all() and result.trained_through == date(2014, 12, 23)
    assert (forecasts["eval_start"] == result.test_start).all() and (forecasts["eval_end"] == result.test_end).all()
    assert forecasts["eval_version"][0] == result.evaluation_version != result.model_version
    lower, upper = forecasts["pred_lower"], forecasts["pred_upper"]
    assert ((lower < forecasts["pred_price"]) & (forecasts["pred_price"] < upper)).all()
    # the quantiles (prices): increasing, the median the point forecast, the 10-90% the 80% interval
    q = forecasts.select(QUANTILE_COLUMNS).to_numpy()
    assert (q[:, 1:] > q[:, :-1]).all() and forecasts["pred_q50"].to_list() == pytest.approx(forecasts["pred_price"])
    assert forecasts["pred_q10"].to_list() == pytest.approx(lower.to_list(), rel=1e-9)
    assert forecasts["pred_q90"].to_list() == pytest.approx(upper.to_list(), rel=1e-9)
    # each forecast's volatility beside it, growing with the horizon; the interval is in its units, so the
    # log-width over the volatility is the same for every ticker at a horizon
    vol = forecasts.sort("ticker", "horizon")
    assert (vol["pred_vol"] > 0).all() and (vol.group_by("ticker").agg(pl.col("pred_vol").diff().min())[:, 1] > 0).all()
    units = vol.with_columns(((pl.col("pred_upper") / pl.col("pred_lower")).log() / pl.col("pred_vol")).alias("u"))
    assert (units.group_by("horizon").agg(pl.col("u").max() - pl.col("u").min())[:, 1] < 1e-9).all()
    return forecasts


def check_evaluation(out, result, forecasts: pl.DataFrame) -> None:
    metrics = pl.read_parquet(out / "metrics" / "asof=2014-12-31" / "metrics.parquet")
    pooled = metrics.filter(pl.col("scope") == "pooled")
    # the network, its combination (what publishes by default) and the baselines, on identical origins
    names = ["attention_lstm", "combined", "hist_mean", "random_walk", "ridge"]
    assert sorted(pooled["model"].unique().to_list()) == names
    assert (pooled["n"] == 3 * 60).all() and pooled.height == 5 * 5
    model = pooled.filter(pl.col("model") == "attention_lstm").sort("horizon")
    # the ratio recomputed from the out-of-sample predictions written beside it: the model's squared error
    # over the random walk's (a zero forecast) on the same rows
    predictions = pl.read_parquet(out / "metrics" / "asof=2014-12-31" / "predictions.parquet")
    # published whole, though the night kept only some of its columns in memory after choosing its model
    assert {"last_price", "sigma", "y_lower", "y_upper", "q0.05", "q0.5", "q0.95"} <= set(predictions.columns)
    assert predictions.null_count()["y_lower"].item() < predictions.height  # the bands themselves, not nulls
    by_hand = (
        predictions.filter(pl.col("model") == "attention_lstm")
        .group_by("horizon")
        .agg((((pl.col("y_true") - pl.col("y_pred")) ** 2).mean() / (pl.col("y_true") ** 2).mean()).alias("r"))
        .sort("horizon")
    )
    assert model["mse_ratio"].to_list() == pytest.approx(by_hand["r"].to_list(), rel=1e-9)
    rw = predictions.filter(pl.col("model") == "random_walk")
    assert (rw["y_pred"] == 0).all() and model["baseline_mse"].is_sorted()  # longer horizons, larger returns
    assert model["dm_pvalue"].is_between(0, 1).all()
    assert predictions.height == 5 * 3 * 60 * 5 and predictions["asof_date"].min() == result.test_start
    assert (predictions["target_date"] <= date(2014, 12, 31)).all()
    # the skill flag in the forecasts is exactly what the evaluation of the combination says, horizon by horizon
    rows = list(pooled.filter(pl.col("model") == "combined").sort("horizon").iter_rows(named=True))
    expected = {int(r["horizon"]): r["mse_ratio"] < 1 and r["dm_stat"] < 0 and r["dm_pvalue"] < 0.05 for r in rows}
    assert dict(forecasts.select("horizon", "skill").unique().iter_rows()) == expected == result.skill
    worse = {int(r["horizon"]) for r in rows if r["mse_ratio"] > 1 and r["dm_stat"] > 0 and r["dm_pvalue"] < 0.05}
    # default guardrail: the combination publishes unless it is significantly worse than the random walk
    # (labelled by what it published: a horizon whose weights give the network none, by that baseline's name)
    labels = dict(zip(range(1, 6), result.publishing.labels(["combined"] * 5), strict=True))
    by_horizon = dict(forecasts.select("horizon", "source_model").unique().iter_rows())
    assert {h: m for h, m in by_horizon.items() if h not in worse} == {
        h: labels[h] for h in range(1, 6) if h not in worse
    }
    assert all(by_horizon[h] != "combined" for h in worse) and result.publishing.name == "combined"
    # its evaluated forecasts are a * network + b * hist_mean by the weights stored with the champion
    weights = dict(zip(range(1, 6), result.publishing.weights, strict=True))
    part = {m: predictions.filter(pl.col("model") == m).sort("ticker", "asof_date", "horizon") for m in names}
    a, b = (part["combined"]["horizon"].replace_strict({h: w[i] for h, w in weights.items()}) for i in (0, 1))
    mixed = a * part["attention_lstm"]["y_pred"] + b * part["hist_mean"]["y_pred"]
    assert part["combined"]["y_pred"].to_list() == pytest.approx(mixed.to_list(), rel=1e-6, abs=1e-9)


def check_run_files(out, result, forecasts: pl.DataFrame, settings) -> None:
    run_meta = json.loads((out / "forecasts" / "asof=2014-12-31" / "run.json").read_text())
    assert run_meta["run_id"] == forecasts["run_id"][0] and run_meta["model_version"] == result.model_version
    assert run_meta["trained_through"] == "2014-12-23"
    assert run_meta["evaluation"]["version"] == result.evaluation_version
    assert run_meta["evaluation"]["origins"] == [str(result.test_start), str(result.test_end)]
    assert run_meta["data_fingerprint"] and run_meta["versions"]["torch"].startswith("2.13.0")
    assert run_meta["data_warnings"] == []  # the sample needs no repair its forecasts would inherit
    assert run_meta["data_health"] == {"problems": [], "tickers": []}  # and the health gate finds nothing
    assert run_meta["settings"]["windows"]["lookback"] == 20 and run_meta["evaluation"]["model"] == "combined"
    # the recipe the published model was fit with, as its checkpoint holds it
    assert run_meta["model_recipe"]["train"]["epochs"] == settings.train.epochs and "model" in run_meta["model_recipe"]
    # the weights per horizon, as the champion record stores them
    published_as = run_meta["published_as"]
    assert published_as["model"] == "combined" and sorted(published_as["weights"]) == ["1", "2", "3", "4", "5"]
    for h, (a, b) in zip(range(1, 6), result.publishing.weights, strict=True):
        assert published_as["weights"][str(h)] == {"attention_lstm": a, "hist_mean": b, "random_walk": 1 - a - b}
    # what each horizon published, as the files label it (a combination giving the network no weight: a baseline)
    published = forecasts.select("horizon", "source_model").unique().iter_rows()
    assert run_meta["sources"] == {str(h): m for h, m in published}
    (record,) = json.loads((settings.paths.models / "champion.json").read_text())["history"][-1:]
    assert record["combination"] == [list(w) for w in result.publishing.weights]
    # the published volatility forecast's QLIKE beside EWMA and HAR, per horizon, on the evaluation's origins
    qlike = run_meta["volatility_qlike"]
    assert sorted(qlike) == ["1", "2", "3", "4", "5"] and all(0 < v < 10 for h in qlike.values() for v in h.values())
    assert all(sorted(h) == ["ewma_0.94", "har", "published"] for h in qlike.values())
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
    lake = sorted(p.name for p in (settings.paths.lake / "prices").iterdir())
    assert lake == ["NVDA.parquet", "ORCL.parquet", "^GSPC.parquet"] and result.checkpoint.exists()


def check_ui_artifacts(flow_run_id) -> None:
    """The UI gets the plots as images it can render and a table led by ticker, target date and prices."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    # this run's artifacts only: the test server is shared with other tests' runs
    where = ArtifactFilter(key=ArtifactFilterKey(any_=UI_KEYS), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        found = {a.key: a for a in client.read_artifacts(artifact_filter=where)}
    assert set(found) == set(UI_KEYS)
    assert found["attention-heatmap"].type == "image" and found["attention-heatmap"].data.startswith(
        "data:image/png;base64,iVBORw0KGgo"  # a PNG's signature, base64
    )
    data = found["nightly-forecasts"].data
    table = json.loads(data) if isinstance(data, str) else data
    assert list(table[0])[:3] == ["ticker", "target date", "horizon"] and len(table) == 15
    assert "## What published" in found["nightly-summary"].data
    assert "file://" not in found["nightly-files"].data


def test_train_flow_promotes_a_first_challenger(prefect_harness, settings):
    """The train flow end to end; its later decisions (tie, better challenger, health gate) are the paths of
    `choose_model`, tested one by one in test_model_choice.py."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.train import train_flow

    first = train_flow(settings)
    assert "promoted" in first.decision and first.verdict.champion_score is None
    (record,) = json.loads((settings.paths.models / "champion.json").read_text())["history"]
    assert record["version"] == first.version and record["evaluation_version"] == first.evaluation_version
    assert not record["checkpoint"].startswith("/") and (settings.paths.models / record["checkpoint"]).exists()
    assert record["trained_through"] == "2014-12-23" and record["eval_end"] == str(first.evaluation.test_end)
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["train-decision"])), limit=1
        )
    assert first.decision in artifact.data


def test_dask_runner_builds_the_threads_runners_features(prefect_harness, settings):
    """The only work either runner runs in parallel is the per-chunk feature build: under Dask and under
    threads it gives the panel a single build gives, so every later (sequential, seeded) step forecasts the
    same. (Two whole nightlies proved this before, at ten times the cost.)"""
    import numpy as np
    from prefect import flow

    from features.prices import lake
    from flows.tasks import features_by_chunk, make_features, task_runner

    prices = pl.read_parquet(settings.source.path)
    fingerprint = lake.fingerprint(prices)
    panels = {}
    for kind in ("threads", "dask"):
        s = settings.model_copy(
            update={
                "runner": settings.runner.model_copy(
                    update={"kind": kind, "chunk_size": 2, "dask_workers": 2, "cache_features": False}
                )
            }
        )

        @flow(task_runner=task_runner(s))
        def build(s=s):
            return features_by_chunk(prices, s, fingerprint)

        panels[kind] = build()[1]
    _, whole = make_features.fn(prices, settings, fingerprint)
    for kind, panel in panels.items():
        assert panel.tickers == whole.tickers and panel.features == whole.features, kind
        np.testing.assert_array_equal(panel.X, whole.X, err_msg=kind)
        np.testing.assert_array_equal(panel.Y, whole.Y, err_msg=kind)


def test_one_warning_per_finding_names_its_horizons():
    """An operator's finding: five identical NO SKILL lines a night (one per horizon) fired a warning alert five
    times for one fact."""
    import logging

    from flows.nightly_tasks import _warn_sources
    from forecasting.combine import Publishing
    from forecasting.policy import Source

    publishing = Publishing()
    none, worse = Source(publishing.name, False, False), Source("random_walk", False, True)
    seen = []  # a handler of its own: whether the logger propagates depends on Prefect's logging setup so far
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = logging.getLogger("nightcast.flows.nightly")
    logger.addHandler(handler)
    try:
        _warn_sources({1: none, 2: none, 3: worse, 5: none}, [1, 2, 3, 5], publishing)
    finally:
        logger.removeHandler(handler)
    assert seen == [
        "horizons 1, 2, 5: NO SKILL: the model has no skill; published with skill=false",
        "horizon 3: the model is significantly worse than the random walk on the evaluation span; publishing "
        "random_walk instead",
    ]
