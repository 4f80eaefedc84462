"""Metrics over quantile forecasts: pinball, CRPS, coverage pooled and within volatility deciles, QLIKE,
reliability (issue 14, point 3). Values by hand or from closed forms."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy.stats import norm

from forecasting.intervals import (
    coverage_table,
    crps_table,
    decile_coverage,
    pinball_table,
    plot_reliability,
    qlike,
    qlike_table,
    quantile_column,
    quantile_levels,
    reliability_table,
)

Z95 = float(norm.ppf(0.95))


def test_quantile_columns_are_named_by_short_decimals_and_parsed_back():
    assert quantile_column(0.5 - 0.9 / 2) == "q0.05"
    assert [quantile_column(q) for q in (0.025, 0.1, 0.5, 0.95)] == ["q0.025", "q0.1", "q0.5", "q0.95"]
    frame = pl.DataFrame({"q0.95": [1.0], "qty": [1.0], "q0.05": [0.0], "y_true": [0.0]})
    assert quantile_levels(frame) == [0.05, 0.95]


def tiny() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "model": ["m", "m"],
            "horizon": [1, 1],
            "y_true": [0.0, 1.0],
            "q0.1": [-0.2, 0.5],
            "q0.9": [0.3, 0.8],
        }
    )


def test_pinball_by_hand():
    table = pinball_table(tiny())
    # level 0.1: 0.1 * 0.2 = 0.02 and 0.1 * 0.5 = 0.05; level 0.9: 0.1 * 0.3 = 0.03 and 0.9 * 0.2 = 0.18
    assert table["level"].to_list() == [0.1, 0.9]
    np.testing.assert_allclose(table["pinball"].to_numpy(), [0.035, 0.105])
    assert table["n"].to_list() == [2, 2]


def test_crps_from_quantiles_by_hand():
    """Two quantiles: the quantile function is the line through them in normal scores (a normal's), integrated
    here on a fine grid of levels, against the table's sum over its midpoints."""
    t = (np.arange(200_000) + 0.5) / 200_000
    z = norm.ppf(t)
    z1, z9 = norm.ppf(0.1), norm.ppf(0.9)
    expected = []
    for y, q1, q9 in [(0.0, -0.2, 0.3), (1.0, 0.5, 0.8)]:
        u = y - (q1 + (z - z1) / (z9 - z1) * (q9 - q1))
        expected.append(2 * np.maximum(t * u, (t - 1) * u).mean())
    assert crps_table(tiny())["crps"].item() == pytest.approx(np.mean(expected), rel=0.003)  # 50 midpoints' error


@pytest.mark.parametrize("levels", [(0.05, 0.1, 0.5, 0.9, 0.95), [k / 100 for k in range(1, 100)]])
@pytest.mark.parametrize("y", [0.0, 1.0, -2.5])
def test_crps_from_quantiles_approaches_the_normal_closed_form(y, levels):
    """The published levels too: twice their mean pinball loss, what the CRPS was, gave 0.68 of the normal's."""
    frame = pl.DataFrame(
        {"model": ["n"], "horizon": [1], "y_true": [y], **{quantile_column(q): [float(norm.ppf(q))] for q in levels}}
    )
    # CRPS of N(0, 1) at y (Gneiting and Raftery 2007): y (2 Phi(y) - 1) + 2 phi(y) - 1 / sqrt(pi)
    exact = y * (2 * norm.cdf(y) - 1) + 2 * norm.pdf(y) - 1 / math.sqrt(math.pi)
    assert crps_table(frame)["crps"].item() == pytest.approx(exact, rel=0.005)


def test_crps_is_scored_in_blocks_as_a_whole(monkeypatch):
    import forecasting.intervals as intervals

    rng = np.random.default_rng(3)
    n = 1000
    frame = pl.DataFrame(
        {
            "model": rng.choice(["a", "b"], n),
            "horizon": np.ones(n, dtype=np.int64),
            "y_true": rng.normal(size=n),
            **{quantile_column(q): norm.ppf(q) * rng.uniform(0.5, 2, n) for q in (0.05, 0.1, 0.5, 0.9, 0.95)},
        }
    )
    whole = crps_table(frame)
    monkeypatch.setattr(intervals, "_BLOCK_ROWS", 7)
    blocks = crps_table(frame)
    assert blocks.select("model", "n").equals(whole.select("model", "n"))
    np.testing.assert_allclose(blocks["crps"].to_numpy(), whole["crps"].to_numpy(), rtol=1e-12)


def test_pooled_coverage_and_width_by_hand():
    frame = pl.DataFrame(
        {
            "model": ["a"] * 4 + ["b"],
            "horizon": [1] * 5,
            "y_true": [0.0, 0.5, -0.5, 2.0, 0.0],
            "q0.05": [-1.0, -1.0, -1.0, -1.0, None],  # b's band is unknown: left out, not counted as a miss
            "q0.95": [1.0, 1.0, 1.0, 3.0, None],
        }
    )
    table = coverage_table(frame, level=0.9)
    assert table["model"].to_list() == ["a"]
    assert table["coverage"].item() == 1.0
    assert table["width"].item() == pytest.approx((2 + 2 + 2 + 4) / 4)
    miss = frame.with_columns(pl.col("q0.95").replace(3.0, 1.5))
    assert coverage_table(miss, level=0.9)["coverage"].item() == 0.75


def calm_and_wild(rng: np.random.Generator) -> pl.DataFrame:
    """100 rows: ticker A calm (sigma 1..50), B wild (51..100), a band of +-z95 sigma. Every calm outcome
    lies inside; in each tenth of B, the rows with sigma ending in 1..4 land at 3 sigma, outside."""
    sigma = np.arange(1, 101, dtype=np.float64) / 1000
    outside = (np.arange(1, 101) > 50) & np.isin(np.arange(1, 101) % 10, [1, 2, 3, 4])
    frame = pl.DataFrame(
        {
            "model": "band",
            "horizon": 1,
            "ticker": np.where(np.arange(1, 101) <= 50, "A", "B"),
            "sigma": sigma,
            "y_true": np.where(outside, 3 * sigma, 0.1 * sigma),
            "q0.05": -Z95 * sigma,
            "q0.95": Z95 * sigma,
        }
    )
    return frame.sample(fraction=1.0, shuffle=True, seed=int(rng.integers(1 << 30)))


def test_coverage_within_volatility_deciles_shows_the_calm_over_and_wild_under_coverage():
    frame = calm_and_wild(np.random.default_rng(0))
    assert coverage_table(frame, level=0.9)["coverage"].item() == pytest.approx(0.8)  # looks nearly fine pooled
    table = decile_coverage(frame, level=0.9)
    assert table["decile"].to_list() == list(range(10))
    assert table["n"].to_list() == [10] * 10
    np.testing.assert_allclose(table["coverage"].to_numpy(), [1.0] * 5 + [0.6] * 5)
    # Deciles are pooled over tickers: the calm ticker fills the five calmest, by the forecast's level.
    np.testing.assert_allclose(table["volatility"].to_numpy(), (np.arange(10) * 10 + 5.5) / 1000)
    np.testing.assert_allclose(table["width"].to_numpy(), 2 * Z95 * (np.arange(10) * 10 + 5.5) / 1000)
    halves = decile_coverage(frame, level=0.9, bins=2)
    np.testing.assert_allclose(halves["coverage"].to_numpy(), [1.0, 0.6])


def test_deciles_are_ranked_within_each_model_and_horizon():
    one = calm_and_wild(np.random.default_rng(1))
    other = one.with_columns(pl.lit("other").alias("model"), pl.col("sigma") * 100)  # a different scale
    table = decile_coverage(pl.concat([one, other]), level=0.9)
    assert table.height == 20
    np.testing.assert_allclose(table.filter(pl.col("model") == "other")["coverage"].to_numpy(), [1.0] * 5 + [0.6] * 5)


def test_a_missing_quantile_column_is_named():
    with pytest.raises(ValueError, match="q0.95"):
        coverage_table(tiny().rename({"q0.1": "q0.05"}), level=0.9)


def test_qlike_is_zero_at_a_perfect_forecast_and_finite_on_a_zero_return():
    assert qlike(np.array([4e-4]), np.array([4e-4]))[0] == pytest.approx(0.0)
    assert np.isfinite(qlike(np.array([0.0]), np.array([1e-4]))).all()
    assert (qlike(np.array([1e-4, 9e-4]), np.array([4e-4, 4e-4])) > 0).all()


def test_qlike_is_minimised_at_the_true_variance():
    rng = np.random.default_rng(3)
    true_var = 4e-4
    r2 = (rng.standard_normal(200_000) * math.sqrt(true_var)) ** 2
    grid = true_var * np.exp(np.linspace(-0.5, 0.5, 41))  # steps of 2.5%
    losses = [qlike(r2, np.full_like(r2, s2)).mean() for s2 in grid]
    best = int(np.argmin(losses))
    assert abs(best - 20) <= 1  # the sample mean of r^2 is within 0.7% of the truth at this n
    assert losses[0] > losses[best] and losses[-1] > losses[best]


def test_qlike_table_prefers_the_forecast_that_tracks_the_volatility():
    rng = np.random.default_rng(4)
    sigma = rng.uniform(0.005, 0.04, 5_000)
    frame = pl.DataFrame(
        {
            "horizon": 1,
            "y_true": rng.standard_normal(5_000) * sigma,
            "tracks": sigma,
            "flat": np.full(5_000, float(np.sqrt(np.mean(sigma**2)))),  # right on average, blind to the level
        }
    ).with_columns(pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col("flat")).alias("flat"))
    table = qlike_table(frame, ["tracks", "flat"])
    assert table["n"].to_list() == [4_999, 4_999]  # the row without a flat forecast is left out of both
    by_name = dict(zip(table["forecast"], table["qlike"], strict=True))
    assert by_name["tracks"] < by_name["flat"] - 0.05


def test_reliability_by_hand_counts_the_outcome_at_or_below_each_quantile():
    frame = pl.DataFrame(
        {
            "model": ["m"] * 4,
            "y_true": [0.0, 1.0, 2.0, 3.0],
            "q0.25": [0.5] * 4,
            "q0.5": [1.0] * 4,  # a tie counts as at or below
            "q0.75": [0.5, 0.5, 5.0, 2.5],  # 0 and 2 below, 1 and 3 above
        }
    )
    table = reliability_table(frame)
    assert table["level"].to_list() == [0.25, 0.5, 0.75]
    np.testing.assert_allclose(table["observed"].to_numpy(), [0.25, 0.5, 0.5])


def test_the_reliability_plot_is_written_as_a_png(tmp_path):
    rng = np.random.default_rng(5)
    levels = [0.05, 0.1, 0.5, 0.9, 0.95]
    y = rng.standard_normal(500)
    rows = {"model": ["wide"] * 500 + ["narrow"] * 500, "y_true": np.concatenate([y, y])}
    for q in levels:
        rows[quantile_column(q)] = np.concatenate([np.full(500, 2 * norm.ppf(q)), np.full(500, 0.5 * norm.ppf(q))])
    table = reliability_table(pl.DataFrame(rows))
    wide = table.filter(pl.col("model") == "wide")["observed"].to_numpy()
    assert wide[0] < 0.05 and wide[-1] > 0.95  # too wide: fewer outcomes in the tails than nominal
    path = plot_reliability(table, tmp_path / "plots" / "reliability.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["reliability.png"]  # no temporary left beside it


def test_qlike_table_gives_the_same_figure_to_the_last_bit_in_any_row_order():
    """Two identical backtests wrote QLIKE figures 2 units apart in the 16th digit (a join's row order)."""
    rng = np.random.default_rng(5)
    n = 60_000
    frame = pl.DataFrame(
        {
            "ticker": rng.choice(["A", "B", "C", "D"], n),
            "asof_date": rng.integers(0, 10_000, n),
            "horizon": rng.integers(1, 6, n),
            "y_true": rng.normal(0, 0.02, n) * rng.lognormal(0, 1, n),
            "ewma": np.abs(rng.normal(0.02, 0.01, n)) + 1e-4,
        }
    )
    first = qlike_table(frame, ["ewma"])
    for seed in range(6):
        again = qlike_table(frame.sample(fraction=1.0, shuffle=True, seed=seed), ["ewma"])
        assert again["qlike"].to_list() == first["qlike"].to_list()
        assert again["n"].to_list() == first["n"].to_list()
