"""Forecast combination and the ridge penalty: both chosen on the validation span, never on what they forecast."""

import dataclasses
import itertools
from datetime import date

import numpy as np
import polars as pl
import pytest

from features.windows import Panel, refit_split, splits_before
from forecasting.backtest import Schedule
from forecasting.baselines import RidgeBaseline
from forecasting.combine import combination_weights
from forecasting.settings import BacktestSettings, PublishSettings, held_share
from tests.forecasting.test_backtest import PRICES, panel_of, run


def _loss(w, m, h, y):
    return float(np.sum((w[0] * m + w[1] * h - y) ** 2))


def test_the_weights_are_the_best_on_the_simplex():
    rng = np.random.default_rng(0)
    grid = [np.array([a, b]) for a, b in itertools.product(np.linspace(0, 1, 101), repeat=2) if a + b <= 1 + 1e-9]
    for case in range(40):
        n = 60
        m, h = rng.normal(size=(n, 1)), rng.normal(size=(n, 1))
        a, b = rng.uniform(-1.5, 1.5, size=2)  # true weights, often outside the region
        y = a * m + b * h + rng.normal(scale=rng.uniform(0.1, 3), size=(n, 1))
        w = combination_weights(m, h, y)[0]
        assert w.min() >= 0 and w.sum() <= 1 + 1e-9, (case, w)
        best_on_grid = min(_loss(g, m[:, 0], h[:, 0], y[:, 0]) for g in grid)
        assert _loss(w, m[:, 0], h[:, 0], y[:, 0]) <= best_on_grid + 1e-9, case


def test_a_model_without_signal_is_shrunk_to_the_baseline_and_one_with_signal_kept():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(5000, 2))
    noise_model = rng.normal(size=(5000, 2))
    w = combination_weights(np.column_stack([noise_model[:, 0], 0.8 * y[:, 1]]), np.zeros((5000, 2)), y)
    assert w[0, 0] < 0.05  # pure noise: ~0 weight, the combination is the random walk
    assert w[1, 0] == pytest.approx(1.0)  # 0.8 y: a weight of 1.25 would fit, capped at 1
    missing = y.copy()
    missing[:10] = np.nan  # an unknown label is left out, not a NaN weight
    assert np.isfinite(combination_weights(noise_model, np.zeros_like(y), missing)).all()


def test_the_combination_forecasts_with_weights_from_validation_only():
    panel = panel_of(PRICES)
    result = run(panel, models=["attention_lstm", "combined", "random_walk"], test_end=date(2011, 4, 15))
    p = result.predictions
    assert set(p["model"].unique()) == {"attention_lstm", "combined", "random_walk"}
    combo = next(f for f in result.forecasters if f.name == "combined")
    assert combo.weights.shape == (2, 2) and (combo.weights >= 0).all() and (combo.weights.sum(axis=1) <= 1).all()
    # perturbing every label of the test span changes no weight of the first fold: they never saw it
    schedule_first = result.folds["refit_date"][0]
    future = panel.dates >= np.datetime64(schedule_first)
    perturbed = Panel(**{**panel.__dict__, "Y": np.where(future[:, None], panel.Y * 5 + 0.01, panel.Y)})
    again = run(perturbed, models=["attention_lstm", "combined", "random_walk"], test_end=date(2011, 3, 25))
    first = run(panel, models=["attention_lstm", "combined", "random_walk"], test_end=date(2011, 3, 25))
    w_again = next(f for f in again.forecasters if f.name == "combined").weights
    w_first = next(f for f in first.forecasters if f.name == "combined").weights
    np.testing.assert_array_equal(w_again, w_first)


class _Fixed:
    """A network stand-in whose forecasts are a fixed function of the features (Combination reads predict only)."""

    def predict(self, panel, ends):
        return np.repeat(panel.X[ends, 0:1], panel.Y.shape[1], axis=1) * 1e-3


def test_held_samples_alone_choose_the_weights_the_early_stopping_span_never_does():
    """With `Splits.held`, the network early-stopped on `val` and the weights are fit on `held`: labels the
    network was never chosen on. Perturbing every early-stopping label moves no weight; the held ones do."""
    from forecasting.baselines import HistoricalMean
    from forecasting.combine import Combination

    panel = panel_of(PRICES)
    split = splits_before(panel, 10, np.datetime64("2011-01-03"), 40, held_share=0.5)
    assert split.held.size and split.val.size

    def weights(p):
        combo = Combination("combined", _Fixed())
        combo.fit(p, split)
        return combo.weights

    train_only = HistoricalMean()  # the mean the weights are fit beside: the training span's alone
    train_only.fit(panel, dataclasses.replace(split, val=split.train[:0], held=split.train[:0], purged=split.train[:0]))
    assert panel.target_end[split.train].max() < panel.dates[split.val].min()  # no label of it reaches the held
    want = combination_weights(
        _Fixed().predict(panel, split.held), train_only.predict(panel, split.held), panel.Y[split.held]
    )
    np.testing.assert_array_equal(weights(panel), want)

    def perturbed(rows):
        Y = panel.Y.copy()
        Y[rows] = Y[rows] * -3 + 0.02
        return Panel(**{**panel.__dict__, "Y": Y})

    np.testing.assert_array_equal(weights(perturbed(split.val)), want)
    shifted = panel.Y.copy()
    shifted[split.purged] += 1.0  # labels that reach the held dates: the mean beside the weights never sees them
    assert split.purged.size and np.array_equal(weights(Panel(**{**panel.__dict__, "Y": shifted})), want)
    assert not np.array_equal(weights(perturbed(split.held)), want)


def test_combined_without_its_model_is_a_configuration_error():
    with pytest.raises(ValueError, match="combined"):
        BacktestSettings(models=["combined", "random_walk"])


def _ar_panel(phi: float, n: int = 1000, seed: int = 4, noise_features: int = 100) -> Panel:
    """An AR(1) return and `noise_features` columns of pure noise: least squares overfits the noise."""
    rng = np.random.default_rng(seed)
    r = np.zeros(n)
    for t in range(1, n):
        r[t] = phi * r[t - 1] + rng.normal(0, 0.01)
    dates = np.datetime64("2000-01-03") + np.arange(n - 1).astype("timedelta64[D]")
    X = np.column_stack([r[:-1], rng.normal(size=(n - 1, noise_features))]).astype(np.float32)
    Y = r[1:, None].astype(np.float32)
    names = ["ret_1"] + [f"noise_{i}" for i in range(noise_features)]
    return Panel(
        X, Y, dates, np.ones(n - 1), dates + 1, np.zeros(n - 1, np.int32), np.array([0, n - 1]), ["AR"], names, [1]
    )


@pytest.mark.parametrize("with_validation", [True, False])
def test_the_ridge_penalty_is_small_for_a_signal_and_large_for_noise(with_validation):
    alphas = [0.1, 1e6]
    for phi, expected in ((0.5, 0.1), (0.0, 1e6)):
        panel = _ar_panel(phi)
        if with_validation:
            split = splits_before(panel, 1, panel.dates[-1], val_days=200)
        else:  # a refit on everything known: the penalty is chosen on the last fifth of the training dates
            split = refit_split(panel, 1, panel.dates[-1])
            assert len(split.val) == 0
        ridge = RidgeBaseline(None, alphas)
        ridge.fit(panel, split)
        assert ridge.chosen.tolist() == [expected], phi
    fixed = RidgeBaseline(3.0)
    fixed.fit(panel, split)
    assert fixed.chosen.tolist() == [3.0]


def _sklearn_ridge(panel: Panel, split, alphas) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ridge as scikit-learn fits it on the scaled rows as float64 arrays, one fit per penalty (chosen
    penalties, coefficients, intercepts)."""
    from sklearn.linear_model import Ridge

    from features.windows import Scaler, training_rows

    scaler = Scaler.fit(panel.X, training_rows(panel, split))

    def scaled(rows):
        return scaler.transform(panel.X[rows]).astype(np.float64)

    fit_rows, holdout = split.train, split.val
    if len(holdout) == 0:
        dates = np.unique(panel.dates[split.train])
        first = dates[int(len(dates) * (1 - RidgeBaseline.HOLDOUT))]
        holdout = split.train[panel.dates[split.train] >= first]
        fit_rows = split.train[panel.target_end[split.train] < first]
    X_fit, X_hold, y_fit = scaled(fit_rows), scaled(holdout), panel.Y[fit_rows].astype(np.float64)
    errors = [
        np.nanmean(
            (Ridge(alpha=a).fit(X_fit, y_fit).predict(X_hold).reshape(len(X_hold), -1) - panel.Y[holdout]) ** 2,
            axis=0,
        )
        for a in alphas
    ]
    chosen = np.asarray(alphas)[np.argmin(np.asarray(errors), axis=0)]
    seen = np.concatenate([split.train, split.val])
    model = Ridge(alpha=chosen).fit(scaled(seen), panel.Y[seen].astype(np.float64))
    return chosen, model.coef_, model.intercept_


@pytest.mark.parametrize("with_validation", [True, False])
def test_the_ridge_from_moments_is_scikit_learns_ridge(with_validation, monkeypatch):
    """Solved from float64 moments summed a block of rows at a time (no array of all the rows): the penalties,
    coefficients and intercepts scikit-learn's Ridge gives on the same scaled rows as one float64 array."""
    from forecasting import ridge

    panel = _ar_panel(0.3, n=1500, noise_features=20)
    panel = Panel(**{**panel.__dict__, "Y": np.column_stack([panel.Y[:, 0], 0.5 * panel.Y[:, 0] + 0.001])})
    panel.X[::17, 3] = np.nan  # a missing value scales to the mean
    if with_validation:
        split = splits_before(panel, 1, panel.dates[-1], val_days=200)
    else:
        split = refit_split(panel, 1, panel.dates[-1])
    alphas = [0.1, 10.0, 1e3, 1e6]
    ridge_model = RidgeBaseline(None, alphas)
    monkeypatch.setattr(ridge, "BLOCK_ROWS", 97)  # many blocks, merged
    ridge_model.fit(panel, split)
    chosen, coef, intercept = _sklearn_ridge(panel, split, alphas)
    np.testing.assert_array_equal(ridge_model.chosen, chosen)
    np.testing.assert_allclose(ridge_model.model.coef_, coef, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(ridge_model.model.intercept_, intercept, rtol=1e-9, atol=1e-15)
    assert np.isnan(panel.X[::17, 3]).all()  # the panel's own rows are left as they were


def test_ridge_moments_merge_blocks_exactly_and_reject_bad_penalties():
    from forecasting import ridge

    rng = np.random.default_rng(1)
    x, y = rng.normal(3.0, 2.0, (500, 4)), rng.normal(-1.0, 0.5, (500, 2))
    whole = ridge.Moments.of(x, y)
    merged = (
        ridge.Moments.of(x[:1], y[:1])
        .merge(ridge.Moments.of(x[1:300], y[1:300]))
        .merge(ridge.Moments.of(x[300:], y[300:]))
    )
    for name in ("mean_x", "mean_y", "sxx", "sxy"):
        np.testing.assert_allclose(getattr(merged, name), getattr(whole, name), rtol=1e-12, atol=1e-12)
    assert merged.n == 500
    # a feature with no spread and no penalty: the minimum-norm solution, no error
    flat = np.column_stack([x, np.ones(500)])
    fit = ridge.solve(ridge.Moments.of(flat, y), 0.0)
    assert np.isfinite(fit.coef_).all() and fit.coef_[:, -1] == pytest.approx([0.0, 0.0], abs=1e-9)
    with pytest.raises(ValueError, match="penalties"):
        ridge.solve(whole, -1.0)
    with pytest.raises(ValueError, match="at least one row"):
        ridge.moments(np.array([], dtype=np.int64), lambda rows: x[rows], y)


def test_the_ensemble_averages_members_that_differ_only_in_their_seed():
    panel = panel_of(PRICES)
    end = date(2011, 3, 25)  # one fold
    result = run(panel, models=["attention_lstm", "ensemble", "random_walk"], ensemble_seeds=2, test_end=end)
    assert result.folds.height == 1
    bt = BacktestSettings(test_start=date(2011, 3, 1), refit_every=20, test_end=end)
    held = held_share(bt.models, PublishSettings())
    block = next(
        Schedule.from_settings(panel, bt, lookback=10, val_days=40, test_days=60, held_share=held).folds(panel)
    ).block
    single, ensemble = (next(f for f in result.forecasters if f.name == n) for n in ("attention_lstm", "ensemble"))
    first, second = (m.predict(panel, block) for m in ensemble.members)
    assert [m.train_settings.seed for m in ensemble.members] == [5, 6]  # the base seed (TRAIN's) and the next
    np.testing.assert_array_equal(first, single.predict(panel, block))  # the base seed: attention_lstm itself
    assert np.abs(second - first).max() > 1e-6  # another seed, another forecast
    np.testing.assert_array_equal(ensemble.predict(panel, block), np.mean([first, second], axis=0))


def test_the_ablation_table_puts_every_variant_on_identical_origins():
    from forecasting.backtest_report import backtest_summary
    from forecasting.results import ablation_table

    panel = panel_of(PRICES)
    variants = ["attention_lstm", "lstm", "bidirectional", "self_attention", "demeaned", "combined", "random_walk"]
    result = run(panel, models=variants, test_end=date(2011, 3, 25))
    keys = {
        m: set(g.select("ticker", "asof_date", "horizon").iter_rows())
        for (m,), g in result.predictions.group_by("model")
    }
    assert len({frozenset(v) for v in keys.values()}) == 1  # identical origins
    table = ablation_table(result.metrics)
    order = ["attention_lstm", "combined", "bidirectional", "self_attention", "demeaned", "lstm"]
    assert table["model"].to_list() == order
    assert table.columns == ["model", "h1 ratio", "h1 DM p", "h3 ratio", "h3 DM p"]
    pooled = result.metrics.filter(
        (pl.col("scope") == "pooled") & (pl.col("model") == "bidirectional") & (pl.col("horizon") == 3)
    )
    assert table.filter(pl.col("model") == "bidirectional")["h3 ratio"].item() == pooled["mse_ratio"].item()
    arch = {f.name: f.model_settings for f in result.forecasters if hasattr(f, "model_settings")}
    assert arch["bidirectional"].bidirectional and arch["self_attention"].self_attention
    assert arch["self_attention"].attention_heads == 4 and not arch["attention_lstm"].bidirectional
    relative = next(f for f in result.forecasters if f.name == "demeaned")  # the attention network, on excess returns
    assert relative.inner.model_settings == arch["attention_lstm"] and relative.market.shape == (2,)
    text = backtest_summary(result.metrics, result.folds, "t", {}, 1.0, 0.8)
    assert "## Ablation" in text and "| bidirectional |" in text
    # the network rows say they early-stopped on part of the validation span (combined is scored: some held)
    val, held = result.folds["val"].item(), result.folds["held"].item()
    assert held > 0 and f"early-stopped on {val} validation samples; the latest {held} were held out" in text
    nothing_held = result.folds.with_columns(pl.lit(0).alias("held"))
    assert "held out of early stopping" not in backtest_summary(result.metrics, nothing_held, "t", {}, 1.0, 0.8)


def test_a_horizon_the_combination_gives_the_network_no_weight_is_labelled_by_what_it_published():
    """A new user's review: forecasts equal to the last price were labelled `combined`."""
    from forecasting.combine import Publishing

    weights = Publishing.of([[0.0, 0.0], [0.0, 1.0], [0.3, 0.5], [1e-12, 0.0], [0.0, 0.4], [1e-6, 0.4]])
    sources = ["combined", "combined", "combined", "hist_mean", "combined", "combined"]  # the guardrail: 4th
    # the fifth: 0.4 x the historical mean, no network (an audit found it labelled `combined`)
    assert weights.labels(sources) == ["random_walk", "hist_mean", "combined", "hist_mean", "hist_mean", "combined"]
    assert Publishing.of(None).labels(["attention_lstm", "random_walk"]) == ["attention_lstm", "random_walk"]
