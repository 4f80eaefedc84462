"""The nightly's decisions on small literal inputs: retrain rules, champion vs challenger, the guardrail."""

from datetime import date, timedelta

import polars as pl
import pytest

from forecasting.metrics import metrics_table
from forecasting.policy import horizon_sources, judge, mean_ratio, refit_epochs, staleness
from forecasting.registry import Champion


def champion(**overrides) -> Champion:
    fields = dict(
        version="m-1",
        checkpoint="m-1.pt",
        evaluation_version="m-eval-1",
        evaluation_checkpoint="m-eval-1.pt",
        asof=date(2024, 1, 9),
        trained_on=date(2024, 1, 10),
        trained_through=date(2024, 1, 2),
        cutoff=date(2023, 1, 3),
        data_fingerprint="abc",
        settings_hash="h1",
        inputs_hash="i1",
        eval_start=date(2023, 1, 3),
        eval_end=date(2024, 1, 2),
        eval_score=0.99,
    )
    return Champion(**(fields | overrides))


def test_staleness_reasons():
    today = date(2024, 1, 12)
    assert staleness(None, today, "h1", None, 7, True) == "no champion model yet"
    assert staleness(champion(), today, "h1", "abc", 7, True) is None
    assert "settings" in staleness(champion(), today, "h2", "abc", 7, True)
    assert "9 days old" in staleness(champion(), date(2024, 1, 19), "h1", "abc", 7, True)
    # new bars after the champion's as-of date are not a reason; a revision of what it trained on is
    assert "revised" in staleness(champion(), today, "h1", "xyz", 7, True)
    assert staleness(champion(), today, "h1", "xyz", 7, False) is None


def test_tickers_that_left_the_data_are_named():
    today, trained = date(2024, 1, 12), ["AAA", "BBB", "CCC"]
    assert staleness(champion(), today, "h1", "xyz", 7, True, None, (trained, ["AAA", "CCC"])) == (
        "1 ticker the champion trained on is no longer in the data: BBB"
    )
    assert staleness(champion(), today, "h1", "xyz", 7, True, None, (trained, ["CCC"])) == (
        "2 tickers the champion trained on are no longer in the data: AAA, BBB"
    )
    many = [f"T{i:02d}" for i in range(13)]
    assert staleness(champion(), today, "h1", "xyz", 7, True, None, (many, [])).endswith("T09 and 3 more")
    # one that joined may only have been too short to train on: a revision, as the hash alone says
    joined = staleness(champion(), today, "h1", "xyz", 7, True, None, (trained, [*trained, "DDD"]))
    assert joined == "prices up to 2024-01-09 that the champion trained on were revised (or tickers changed)"
    assert staleness(champion(), today, "h1", "abc", 7, True, None, (trained, ["AAA"])) is None  # same data: fresh


def test_the_age_rule_counts_the_days_the_data_moved_too():
    """A champion trained minutes ago on data to 2024-01-09 is not fresh for data reaching 2024-02-09: the
    published model would fall a month behind the data while the clock says it is new."""
    trained = champion()  # data to 2024-01-09, trained on 2024-01-10
    minutes_later = date(2024, 1, 10)
    assert staleness(trained, minutes_later, "h1", "abc", 7, True, asof=date(2024, 2, 9)) == (
        "the data reaches 2024-02-09, 31 days past the 2024-01-09 the champion was trained with "
        "(train.max_age_days = 7)"
    )
    assert staleness(trained, minutes_later, "h1", "abc", 7, True, asof=date(2024, 1, 15)) is None  # 6 days
    assert "7 days past" in staleness(trained, minutes_later, "h1", "abc", 7, True, asof=date(2024, 1, 16))
    # the wall clock still counts: a paused lake (no new data) does not keep a champion fresh forever
    assert "9 days old" in staleness(trained, date(2024, 1, 19), "h1", "abc", 7, True, asof=date(2024, 1, 9))
    # run nightly, both counts move together and the clock's wording stays
    assert "9 days old" in staleness(trained, date(2024, 1, 19), "h1", "abc", 7, True, asof=date(2024, 1, 18))


def test_refit_trains_the_evaluation_fits_best_epoch_count():
    assert refit_epochs(4) == 4
    assert refit_epochs(0) == 1  # a fit is at least one pass


def preds(errors: dict[str, list[float]], start: date, truth: list[float], horizon: int = 1) -> pl.DataFrame:
    """Long predictions for one ticker: y_pred = truth - error, one origin per day from `start`."""
    days = [start + timedelta(days=i) for i in range(len(truth))]
    return pl.DataFrame(
        {
            "ticker": "AAA",
            "asof_date": days,
            "horizon": horizon,
            "y_true": truth,
            "y_pred": [t - e for t, e in zip(truth, errors["e"], strict=True)],
        }
    )


def test_judge_compares_only_forecasts_out_of_sample_for_both():
    truth = [0.02, -0.02, 0.01, -0.01]
    start = date(2024, 1, 1)
    # the champion is excellent on the first two days (in sample for the challenger's cutoff) and poor after
    champ = preds({"e": [0.0, 0.0, 0.01, 0.01]}, start, truth)
    chall = preds({"e": [0.02, 0.02, 0.005, 0.005]}, start, truth)
    v = judge(champ, chall, date(2023, 12, 1), date(2024, 1, 3))
    assert v.promote and v.n_forecasts == 2
    assert (v.first_origin, v.last_origin) == (date(2024, 1, 3), date(2024, 1, 4))
    rw = (0.01**2 + 0.01**2) / 2
    assert v.champion_score == pytest.approx(0.01**2 / rw) and v.challenger_score == pytest.approx(0.005**2 / rw)
    assert "2 forecasts from origins 2024-01-03 .. 2024-01-04" in v.reason
    # judged over all four days the champion would have won: the cutoff is what decides
    assert not judge(champ, chall, date(2023, 12, 1), date(2024, 1, 1)).promote


def test_a_tie_keeps_the_champion_and_no_champion_promotes():
    truth = [0.02, -0.02, 0.01]
    same = preds({"e": [0.01, 0.01, 0.01]}, date(2024, 1, 1), truth)
    v = judge(same, same, date(2024, 1, 1), date(2024, 1, 1))
    assert not v.promote and "does not beat" in v.reason
    assert judge(None, same, None, date(2024, 1, 1)).promote
    none = judge(same, same, date(2024, 2, 1), date(2024, 1, 1))
    assert none.promote and none.n_forecasts == 0 and "out of sample for both" in none.reason


def test_mean_ratio_is_scale_free_across_horizons():
    h1 = preds({"e": [0.01, 0.01]}, date(2024, 1, 1), [0.02, -0.02], horizon=1)  # ratio 0.25
    h5 = preds({"e": [0.3, 0.3]}, date(2024, 1, 1), [0.2, -0.2], horizon=5)  # ratio 2.25
    assert mean_ratio(pl.concat([h1, h5]), "y_pred") == pytest.approx((0.25 + 2.25) / 2)


def evaluation(models: dict[str, list[float]], truth: list[float]) -> pl.DataFrame:
    days = [date(2020, 1, 1) + timedelta(days=i) for i in range(len(truth))]
    rows = [
        {"model": m, "ticker": "ALL", "asof_date": d, "horizon": 1, "target_date": d + timedelta(days=1)}
        | {"y_true": y, "y_pred": p}
        for m, ps in models.items()
        for d, y, p in zip(days, truth, ps, strict=True)
    ]
    return metrics_table(pl.DataFrame(rows))


@pytest.mark.parametrize(
    "guardrail, worse_source, flat_source",
    [("flag", "m", "m"), ("baseline_if_worse", "hist_mean", "m"), ("baseline", "hist_mean", "hist_mean")],
)
def test_guardrail_publishes_a_baseline_where_the_model_is_significantly_worse(guardrail, worse_source, flat_source):
    import numpy as np

    rng = np.random.default_rng(0)
    truth = list(rng.normal(0, 0.01, 400))
    rw = [0.0] * 400
    hist = list(np.full(400, 0.0001))  # a whisker better than the random walk on this draw or not: best baseline
    bad = list(-np.asarray(truth))  # always the wrong sign: significantly worse
    flat = list(rng.normal(0, 1e-5, 400))  # indistinguishable from the random walk
    worse = horizon_sources(
        evaluation({"m": bad, "random_walk": rw, "hist_mean": hist}, truth),
        "m",
        ("random_walk", "hist_mean"),
        0.05,
        guardrail,
    )
    table = evaluation({"m": flat, "random_walk": rw, "hist_mean": hist}, truth)
    no_skill = horizon_sources(table, "m", ("random_walk", "hist_mean"), 0.05, guardrail)
    assert worse[1].worse and not worse[1].skill
    assert not no_skill[1].worse and not no_skill[1].skill
    best = table.filter(pl.col("scope") == "pooled", pl.col("model") != "m").sort("mse")["model"][0]
    assert worse[1].model == (worse_source if worse_source == "m" else best)
    assert no_skill[1].model == (flat_source if flat_source == "m" else best)


def test_a_universe_with_the_ticker_ALL_keeps_pooled_rows_apart():
    truth = [0.01, -0.02, 0.03, -0.01]
    rows = [
        {"model": m, "ticker": t, "asof_date": date(2020, 1, 1) + timedelta(days=i), "horizon": 1}
        | {"target_date": date(2020, 1, 2) + timedelta(days=i), "y_true": y, "y_pred": 0.0 if m == "random_walk" else y}
        for m in ("m", "random_walk")
        for t in ("ALL", "AAPL")
        for i, y in enumerate(truth)
    ]
    table = metrics_table(pl.DataFrame(rows))
    assert table.filter(pl.col("model") == "m").height == 3  # pooled, ALL (Allstate), AAPL
    pooled = table.filter((pl.col("scope") == "pooled") & (pl.col("model") == "m"))
    allstate = table.filter((pl.col("scope") == "ticker") & (pl.col("ticker") == "ALL") & (pl.col("model") == "m"))
    assert pooled["ticker"].to_list() == [None] and pooled["n"].to_list() == [8]
    assert allstate["n"].to_list() == [4]


def test_sources_are_plain_strings_so_frames_store_them_as_strings():
    """The publishing model's name is a `Model` member; a list mixing it with a baseline's plain string would
    become a polars Enum column (or fail), so sources come back as plain strings."""
    from forecasting.names import BASELINES, TRAINED_MODEL

    truth = [0.01, -0.02, 0.015, -0.005] * 50
    table = evaluation({TRAINED_MODEL.value: [0.0] * 200, "random_walk": [0.0] * 200}, truth)
    sources = horizon_sources(table, TRAINED_MODEL, BASELINES, 0.05, "flag")
    assert type(sources[1].model) is str and sources[1].model == "attention_lstm"
    column = pl.DataFrame({"source_model": [sources[1].model, "hist_mean"]})["source_model"]
    assert column.dtype == pl.String
