import math
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from scipy import stats

from forecasting.cross_section import (
    annualised_sharpe,
    cross_section_table,
    daily_ic,
    ic_summary,
    long_short_daily,
    long_short_summary,
    max_drawdown,
    overlap_t,
    up_down_scores,
)

D0 = date(2024, 1, 2)


def frame(days: list[dict[str, tuple[float, float]]], model="ridge", horizon=1) -> pl.DataFrame:
    """One prediction row per (day index, ticker) from {ticker: (y_pred, y_true)} per day."""
    rows = [
        {
            "model": model,
            "ticker": ticker,
            "asof_date": D0 + timedelta(days=i),
            "horizon": horizon,
            "target_date": D0 + timedelta(days=i + horizon),
            "y_true": y_true,
            "y_pred": y_pred,
        }
        for i, day in enumerate(days)
        for ticker, (y_pred, y_true) in day.items()
    ]
    return pl.DataFrame(rows)


def day(preds, truths, tickers="ABCDE"):
    return {t: (p, y) for t, p, y in zip(tickers, preds, truths, strict=True)}


# --- information coefficients -------------------------------------------------------------------------------------


def test_ic_and_rank_ic_by_hand():
    # pred 1,2,3,4 vs truth 1,3,2,10 (x 0.01): dev x = -1.5,-.5,.5,1.5; dev y = -3,-1,-2,6
    # cov = 4.5 + .5 - 1 + 9 = 13, Sxx = 5, Syy = 50 -> Pearson 13 / sqrt(250); ranks of truth 1,3,2,4 -> Spearman
    # dev 1.5^2 - .25 - .25 + 1.5^2 = 4 over 5 = 0.8
    predictions = frame([day([0.01, 0.02, 0.03, 0.04], [0.01, 0.03, 0.02, 0.10], "ABCD")])
    got = daily_ic(predictions)
    assert got.height == 1 and got["n_tickers"][0] == 4
    assert got["ic"][0] == pytest.approx(13 / math.sqrt(250))
    assert got["ic"][0] == pytest.approx(0.8222, abs=1e-4)
    assert got["rank_ic"][0] == pytest.approx(0.8)


def test_rank_ic_gives_ties_their_average_rank():
    # pred ranks 1.5,1.5,3,4 (dev -1,-1,.5,1.5) vs truth ranks 1..4 (dev -1.5,-.5,.5,1.5):
    # cov 1.5 + .5 + .25 + 2.25 = 4.5, Sxx 4.5, Syy 5 -> 4.5 / sqrt(22.5)
    predictions = frame([day([0.01, 0.01, 0.02, 0.03], [-0.02, -0.01, 0.0, 0.01], "ABCD")])
    assert daily_ic(predictions)["rank_ic"][0] == pytest.approx(4.5 / math.sqrt(22.5))
    assert daily_ic(predictions)["rank_ic"][0] == pytest.approx(0.948683, abs=1e-6)


def test_dates_with_too_few_tickers_or_a_constant_forecast_are_skipped():
    good = day([0.01, 0.02, 0.03], [0.01, 0.03, 0.02], "ABC")
    days = [
        good,
        day([0.01, 0.02], [0.01, 0.03], "AB"),  # two tickers: under the default minimum of 3
        day([0.0, 0.0, 0.0], [0.01, 0.03, 0.02], "ABC"),  # constant forecast: no IC, not NaN
        day([0.01, 0.02, 0.03], [0.02, 0.02, 0.02], "ABC"),  # constant outcome: no IC either
        good,
    ]
    got = daily_ic(frame(days))
    assert got["asof_date"].to_list() == [D0, D0 + timedelta(days=4)]
    assert got["ic"].is_nan().sum() == 0 and got["rank_ic"].to_list() == pytest.approx([0.5, 0.5])
    assert ic_summary(got)["n_dates"].to_list() == [2]
    # a lower minimum admits the two-ticker date (where any correlation is +-1)
    lower = daily_ic(frame(days), min_tickers=2)
    assert lower["asof_date"].to_list() == [D0, D0 + timedelta(days=1), D0 + timedelta(days=4)]
    assert lower["rank_ic"][1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="min_tickers"):
        daily_ic(frame(days), min_tickers=1)


def test_nan_or_null_rows_are_left_out_not_propagated():
    predictions = frame([day([0.01, 0.02, 0.03, math.nan], [0.01, 0.03, 0.02, 0.5], "ABCD")])
    got = daily_ic(predictions)
    assert got["n_tickers"].to_list() == [3] and got["rank_ic"][0] == pytest.approx(0.5)


def daily_series(values, horizon=1):
    return pl.DataFrame(
        {
            "model": "ridge",
            "horizon": horizon,
            "asof_date": [D0 + timedelta(days=i) for i in range(len(values))],
            "n_tickers": 5,
            "ic": values,
            "rank_ic": [-v for v in values],
        }
    )


def test_ic_summary_mean_std_icir_and_t_by_hand():
    # ICs .1 .3 .2 .4: mean .25, devs -.15 .05 -.05 .15, sum of squares .05, sample var .05/3
    got = ic_summary(daily_series([0.1, 0.3, 0.2, 0.4])).row(0, named=True)
    std = math.sqrt(0.05 / 3)
    assert got["n_dates"] == 4 and got["t_lags"] == 0
    assert got["ic_mean"] == pytest.approx(0.25) and got["ic_std"] == pytest.approx(std)
    assert got["ic_ir"] == pytest.approx(0.25 / std) and got["ic_ir"] == pytest.approx(1.93649, abs=1e-5)
    assert got["ic_t"] == pytest.approx(0.25 / (std / 2)) and got["ic_t"] == pytest.approx(3.87298, abs=1e-5)
    assert got["rank_ic_mean"] == pytest.approx(-0.25) and got["rank_ic_t"] == pytest.approx(-3.87298, abs=1e-5)


def test_ic_t_at_horizon_2_uses_one_lag_with_flat_weights_by_hand():
    # same ICs at h=2: lag-1 products .05*-.15 + -.05*.05 + .15*-.05 = -.0175; gamma1 = -.0175/4, gamma0 = .05/4
    # flat weights: n * var(mean) = gamma0 + 2 * gamma1 = .00375, over n - 1 = 3 -> .00125; t = .25 / sqrt(.00125)
    got = ic_summary(daily_series([0.1, 0.3, 0.2, 0.4], horizon=2)).row(0, named=True)
    assert got["t_lags"] == 1
    assert got["ic_t"] == pytest.approx(0.25 / math.sqrt(0.00125)) and got["ic_t"] == pytest.approx(7.07107, abs=1e-5)
    assert got["ic_ir"] == pytest.approx(1.93649, abs=1e-5)  # the ICIR itself is not corrected


def test_ic_t_falls_back_to_no_less_than_the_plain_variance_where_flat_weights_give_none():
    # ICs .1 .3 .1 .3 .1 .3: devs -+.1, gamma0 = .06/6 = .01, gamma1 = -.05/6; flat: .01 - .05/3 < 0;
    # Bartlett (weight 1/2): .01 - .05/6 = .00167, below gamma0: gamma0 stands; t = .2 / sqrt(.01 / 5)
    got = ic_summary(daily_series([0.1, 0.3, 0.1, 0.3, 0.1, 0.3], horizon=2)).row(0, named=True)
    assert got["ic_t"] == pytest.approx(0.2 / math.sqrt(0.01 / 5))


def test_ic_t_needs_two_stretches_of_the_overlap():
    """With lags = n - 1 the flat sum of autocovariances is 0 but for rounding: a t of 4.5e7 came out of it."""
    assert overlap_t(np.array([0.042, 0.297, 0.019, -0.166]), 4) is None
    assert overlap_t(np.arange(9.0), 4) is None and overlap_t(np.r_[np.arange(9.0), 3.0], 4) is not None
    rng = np.random.default_rng(3)
    worst = max(abs(overlap_t(rng.normal(size=10), 4)) for _ in range(300))
    assert worst < 50  # the smallest samples allowed never give an absurd t


def test_the_ic_t_of_overlapping_returns_rejects_at_its_nominal_rate():
    """Daily ICs of h-day returns overlap like an MA(h-1) series: with no skill at all, |t| > 1.96 should come out
    about 5% of the time. Bartlett weights over h-1 lags (the textbook Newey-West) gave 11-12% here."""
    rng = np.random.default_rng(7)
    h, n, runs = 5, 400, 600
    rejected = 0
    for _ in range(runs):
        series = np.convolve(rng.normal(size=n + h - 1), np.ones(h), mode="valid")  # overlapping h-day sums
        rejected += abs(overlap_t(series, h - 1)) > 1.96
    assert 0.03 <= rejected / runs <= 0.08


def test_overlap_t_edge_cases():
    assert overlap_t(np.array([0.2]), 0) is None
    assert overlap_t(np.array([0.2, 0.2, 0.2]), 0) is None  # no variation: no t
    assert overlap_t(np.array([0.1, 0.3]), 1) is None  # two values cannot hold two stretches of one lag


# --- the long-short book ------------------------------------------------------------------------------------------


def long_short_days():
    """Three days, five tickers; day 3 has only A, B, C (so k = 3 // 2 = 1)."""
    ln = math.log
    return [
        # order C < E < B < D < A: long A, D; short C, E
        day([0.5, 0.1, -0.3, 0.2, -0.1], [ln(1.02), ln(1.05), ln(0.97), ln(0.99), ln(1.01)]),
        # order C < E < D < B < A: long A, B; short C, E
        day([0.5, 0.4, -0.3, 0.1, -0.1], [ln(1.00), ln(1.04), ln(1.02), ln(1.10), ln(0.98)]),
        # order B < C < A: long A, short B
        day([0.3, -0.2, 0.1], [ln(1.01), ln(1.03), ln(0.90)], "ABC"),
    ]


def test_long_short_days_by_hand_with_cost_and_turnover():
    got = long_short_daily(frame(long_short_days()), k=2, cost_bps=10)
    assert got["k"].to_list() == [2, 2, 1] and got["n_tickers"].to_list() == [5, 5, 3]
    # day 1: .5 * (.02 - .01) - .5 * (-.03 + .01) = .015; turnover 2 (from an empty book); cost 2 * 10bp
    # day 2: .5 * (0 + .04) - .5 * (.02 - .02) = .02; D +.5 -> 0 and B 0 -> +.5: turnover 1
    # day 3: 1.01 - 1.03 = -.02; A .5 -> 1, B .5 -> -1, C -.5 -> 0, E -.5 -> 0 (absent): turnover .5 + 1.5 + .5 + .5
    assert got["gross"].to_list() == pytest.approx([0.015, 0.02, -0.02])
    assert got["turnover"].to_list() == pytest.approx([2.0, 1.0, 3.0])
    assert got["cost"].to_list() == pytest.approx([0.002, 0.001, 0.003])
    assert got["net"].to_list() == pytest.approx([0.013, 0.019, -0.023])
    assert got["cum_net"].to_list() == pytest.approx([0.013, 1.013 * 1.019 - 1, 1.013 * 1.019 * 0.977 - 1])
    summary = long_short_summary(got).row(0, named=True)
    assert summary["ls_days"] == 3 and summary["ls_mean_turnover"] == pytest.approx(2.0)
    assert summary["ls_cum_return"] == pytest.approx(1.013 * 1.019 * 0.977 - 1)
    assert summary["ls_max_drawdown"] == pytest.approx(-0.023)  # the peak after day 2, then down 2.3%


def test_k_is_n_over_2_when_fewer_than_2k_tickers():
    # five tickers, k = 3: 2k = 6 > 5, so k = 2 (B stays out); three tickers, k = 5 -> k = 1
    five = day([0.5, 0.0, -0.3, 0.2, -0.1], [0.01, 0.5, -0.01, 0.02, -0.02])
    got = long_short_daily(frame([five, day([0.3, -0.2, 0.1], [0.0, 0.0, 0.0], "ABC")]), k=3, cost_bps=0)
    assert got["k"].to_list() == [2, 1]
    # long A, D; short C, E: B's huge return is not in the book
    expected = 0.5 * (math.expm1(0.01) + math.expm1(0.02)) - 0.5 * (math.expm1(-0.01) + math.expm1(-0.02))
    assert got["gross"][0] == pytest.approx(expected)
    # with one ticker a day, there is no book at all
    assert long_short_daily(frame([day([0.1], [0.02], "A")]), k=1, cost_bps=5)["k"].to_list() == [0]


def test_a_day_without_a_view_holds_nothing_and_pays_to_close():
    days = [day([0.2, 0.1, -0.1], [0.01, 0.0, -0.01], "ABC"), day([0.0, 0.0, 0.0], [0.05, 0.0, -0.05], "ABC")]
    got = long_short_daily(frame(days), k=1, cost_bps=5)
    assert got["k"].to_list() == [1, 0]
    assert got["gross"][1] == 0.0 and got["turnover"].to_list() == pytest.approx([2.0, 2.0])
    assert got["net"][1] == pytest.approx(-2 * 5e-4)


def test_ties_at_the_edge_of_the_book_break_by_ticker():
    # B and C tie for the top with k = 1: the later name (C) is bought, the same way every run
    got = long_short_daily(frame([day([-0.1, 0.2, 0.2], [0.0, 0.01, 0.03], "ABC")]), k=1, cost_bps=0)
    assert got["gross"][0] == pytest.approx(math.expm1(0.03))


def test_long_short_uses_horizon_1_only_and_keeps_models_apart():
    h1 = frame(long_short_days()[:1])
    other_model = frame(long_short_days()[:1], model="lstm").with_columns(pl.col("y_pred") * -1)
    h5 = frame([day([9.0, -9.0, 0.0, 1.0, 2.0], [0.5, -0.5, 0.0, 0.1, 0.2])], horizon=5)
    got = long_short_daily(pl.concat([h1, other_model, h5]), k=2, cost_bps=0)
    assert got["model"].to_list() == ["lstm", "ridge"]
    assert got["gross"].to_list() == pytest.approx([-0.015, 0.015])


def test_long_short_rejects_bad_parameters():
    with pytest.raises(ValueError, match="k"):
        long_short_daily(frame(long_short_days()), k=0, cost_bps=0)
    with pytest.raises(ValueError, match="cost_bps"):
        long_short_daily(frame(long_short_days()), k=1, cost_bps=-1)


def test_max_drawdown_on_a_known_path():
    # wealth 1, 1.1, .88, .924, .8316, 1.08108: peak 1.1, trough .8316
    assert max_drawdown(np.array([0.10, -0.20, 0.05, -0.10, 0.30])) == pytest.approx(0.8316 / 1.1 - 1)
    assert max_drawdown(np.array([-0.10, 0.05])) == pytest.approx(-0.10)  # the start counts as a peak
    assert max_drawdown(np.array([0.01, 0.02])) == 0.0


def test_annualised_sharpe_by_hand():
    # returns .01 -.005 .02: mean .025/3; devs 1/600, -8/600, 7/600 -> sample var (1 + 64 + 49) / 360000 / 2
    mean, std = 0.025 / 3, math.sqrt(114 / 360000 / 2)
    assert annualised_sharpe(np.array([0.01, -0.005, 0.02])) == pytest.approx(math.sqrt(252) * mean / std)
    assert annualised_sharpe(np.array([0.01, -0.005, 0.02])) == pytest.approx(10.51315, abs=1e-5)
    assert annualised_sharpe(np.array([0.01])) is None and annualised_sharpe(np.zeros(5)) is None


# --- the up/down call ---------------------------------------------------------------------------------------------


def test_confusion_matrix_and_auc_on_a_known_case():
    # up = [T, F, T, F, F, T] (a zero move is not up); called up = [T, T, F, T, F, T] (a zero forecast calls up,
    # as metrics.hit_rate counts it) -> tp 2, fp 2, tn 1, fn 1
    # AUC: positive scores .02, -.01, .05 beat negatives .01, 0, -.03 in 3 + 1 + 3 of 9 pairs
    truths = [0.01, -0.02, 0.03, 0.0, -0.01, 0.02]
    preds = [0.02, 0.01, -0.01, 0.0, -0.03, 0.05]
    predictions = frame([day(preds[:3], truths[:3], "ABC"), day(preds[3:], truths[3:], "ABC")])
    got = up_down_scores(predictions).row(0, named=True)
    assert (got["tp"], got["fp"], got["tn"], got["fn"], got["n_forecasts"]) == (2, 2, 1, 1, 6)
    assert got["auc"] == pytest.approx(7 / 9)


def test_auc_is_none_with_one_class():
    got = up_down_scores(frame([day([0.1, -0.1, 0.2], [0.01, 0.02, 0.03], "ABC")])).row(0, named=True)
    assert got["auc"] is None and (got["tp"], got["fn"]) == (2, 1)


# --- properties ---------------------------------------------------------------------------------------------------


def random_days(seed, n_days=6, tickers="ABCDE"):
    rng = np.random.default_rng(seed)
    return [dict(zip(tickers, rng.normal(0, 0.02, len(tickers)), strict=True)) for _ in range(n_days)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_perfect_forecast_ranks_perfectly_and_its_negation_perfectly_wrong(seed):
    truths = random_days(seed)
    perfect = frame([{t: (y, y) for t, y in d.items()} for d in truths])
    negated = frame([{t: (-y, y) for t, y in d.items()} for d in truths])
    assert daily_ic(perfect)["rank_ic"].to_list() == pytest.approx([1.0] * 6)
    assert daily_ic(perfect)["ic"].to_list() == pytest.approx([1.0] * 6)
    assert daily_ic(negated)["rank_ic"].to_list() == pytest.approx([-1.0] * 6)
    assert (long_short_daily(perfect, k=2, cost_bps=10)["gross"] > 0).all()
    assert (long_short_daily(negated, k=2, cost_bps=10)["gross"] < 0).all()


def test_nothing_at_a_date_depends_on_later_forecasts_or_outcomes():
    truths = random_days(3)
    base = frame([{t: (y + 0.01 * i, y) for i, (t, y) in enumerate(d.items())} for d in truths])
    last = base["asof_date"].max()
    changed = base.with_columns(
        pl.when(pl.col("asof_date") == last).then(pl.col("y_pred").reverse()).otherwise(pl.col("y_pred")),
        pl.when(pl.col("asof_date") == last).then(pl.col("y_true") * 7).otherwise(pl.col("y_true")),
    )
    before = pl.col("asof_date") < last
    a, b = long_short_daily(base, 2, 10).filter(before), long_short_daily(changed, 2, 10).filter(before)
    assert a.height == 5 and a.equals(b)
    assert daily_ic(base).filter(before).equals(daily_ic(changed).filter(before))
    assert not long_short_daily(base, 2, 10).equals(long_short_daily(changed, 2, 10))  # the last day did change


# --- the table ----------------------------------------------------------------------------------------------------


def test_cross_section_table_one_row_per_model_and_horizon():
    h1 = frame(long_short_days())
    h2 = frame(long_short_days(), horizon=2)
    rw = frame([{t: (0.0, y) for t, (_, y) in d.items()} for d in long_short_days()], model="random_walk")
    table = cross_section_table(pl.concat([h1, h2, rw]), k=2, cost_bps=10)
    assert table.select("model", "horizon").rows() == [("ridge", 1), ("random_walk", 1), ("ridge", 2)]
    ridge1, walk, ridge2 = table.iter_rows(named=True)
    assert ridge1["ls_cum_return"] == pytest.approx(1.013 * 1.019 * 0.977 - 1)
    assert (ridge1["ls_k"], ridge1["ls_cost_bps"], ridge1["ls_days"]) == (2, 10.0, 3)
    assert ridge1["n_dates"] == 3 and ridge1["rank_ic_mean"] == pytest.approx(daily_ic(h1)["rank_ic"].mean())
    assert ridge2["ls_days"] is None and ridge2["ls_sharpe"] is None and ridge2["t_lags"] == 1
    # the random walk has no view across tickers: no IC, an empty book; it calls up every time (always up)
    assert walk["n_dates"] == 0 and walk["rank_ic_mean"] is None and walk["ls_cum_return"] == 0.0
    assert walk["tn"] == 0 and walk["fn"] == 0 and walk["tp"] + walk["fp"] == walk["n_forecasts"]
    assert ridge1["tp"] + ridge1["fp"] + ridge1["tn"] + ridge1["fn"] == ridge1["n_forecasts"] == 13
    # ls_k is what the book held, not the setting: at most n // 2 names a side on these 4-5 tickers a day
    wide_k = cross_section_table(pl.concat([h1, rw]), k=10, cost_bps=10).filter(pl.col("horizon") == 1)
    assert dict(wide_k.select("model", "ls_k").iter_rows()) == {"ridge": 2, "random_walk": 0}


def test_daily_ic_agrees_with_scipy_on_random_days_with_ties():
    rng = np.random.default_rng(7)
    days = [day(rng.integers(-3, 4, 5) / 100, rng.normal(0, 0.02, 5)) for _ in range(8)]
    got = daily_ic(frame(days))
    for row, d in zip(got.iter_rows(named=True), days, strict=True):
        preds, truths = zip(*d.values(), strict=True)
        assert row["ic"] == pytest.approx(stats.pearsonr(preds, truths).statistic)
        assert row["rank_ic"] == pytest.approx(stats.spearmanr(preds, truths).statistic)


def test_the_table_computed_a_model_at_a_time_equals_the_whole_frame_computation():
    """`cross_section_table` computes one model's rows at a time (its temporaries a model's, not all models'):
    the daily ICs, books and up/down scores are exactly those of the whole frame."""
    from polars.testing import assert_frame_equal

    from forecasting.cross_section import _by_model

    rng = np.random.default_rng(3)
    tickers = [f"T{i:02d}" for i in range(12)]
    dates = np.datetime64(D0, "D") + np.arange(40)
    parts = []
    for model in ("ridge", "attention_lstm", "random_walk", "combined"):
        for h in (1, 2, 3):
            n = len(tickers) * len(dates)
            y_pred = np.zeros(n) if model == "random_walk" else rng.normal(0, 0.01, n)
            parts.append(
                pl.DataFrame(
                    {
                        "model": model,
                        "ticker": np.tile(tickers, len(dates)),
                        "asof_date": np.repeat(dates, len(tickers)),
                        "horizon": h,
                        "target_date": np.repeat(dates, len(tickers)),
                        "y_true": rng.normal(0, 0.01, n),
                        "y_pred": y_pred,
                    }
                )
            )
    predictions = pl.concat(parts).sample(fraction=0.9, seed=1).sort("model", "ticker", "asof_date", "horizon")
    predictions = predictions.with_columns(y_true=pl.when(pl.col("y_true") > 0.02).then(None).otherwise("y_true"))
    ics, books, calls = _by_model(predictions, 3, 5.0, 3)
    assert_frame_equal(ics, daily_ic(predictions, 3), check_exact=True)
    assert_frame_equal(books, long_short_daily(predictions, 3, 5.0), check_exact=True)
    assert_frame_equal(calls, up_down_scores(predictions), check_exact=True)
    assert cross_section_table(predictions, 3, 5.0).height == 12


def test_a_forecast_given_twice_is_refused_and_the_same_day_in_two_models_or_horizons_is_not():
    one = frame([day([0.1, 0.2, 0.3], [0.1, 0.0, -0.1], "ABC")] * 2)  # two days
    both = pl.concat([one, frame([day([0.1, 0.2, 0.3], [0.1, 0.0, -0.1], "ABC")] * 2, model="lstm", horizon=2)])
    assert daily_ic(both).height == 4  # each model and horizon on its own
    with pytest.raises(ValueError, match=r"duplicate \(model, horizon, asof_date, ticker\) rows"):
        daily_ic(pl.concat([both, both.tail(1)]))
