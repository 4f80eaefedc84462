from datetime import date

import polars as pl
import pytest

from forecasting.metrics import hit_rate, horizon_table, mse


def test_mse_and_hit_rate_by_hand():
    assert mse([0.01, -0.02], [0.0, 0.0]) == pytest.approx((0.0001 + 0.0004) / 2)
    assert hit_rate([0.01, -0.02, 0.03, -0.01], [0.5, 0.1, -0.2, -0.3]) == pytest.approx(0.5)


def test_horizon_table_by_hand():
    rows = []
    for model, preds in (("m", [0.01, 0.0, -0.01]), ("random_walk", [0.0, 0.0, 0.0])):
        for y, p in zip([0.02, -0.01, -0.02], preds, strict=True):
            rows.append(
                {"model": model, "ticker": "A", "asof_date": date(2020, 1, 1), "horizon": 1, "y_true": y, "y_pred": p}
            )
    table = horizon_table(pl.DataFrame(rows), "m")
    r = table.row(0, named=True)
    assert r["model_mse"] == pytest.approx((0.0001 + 0.0001 + 0.0001) / 3)
    assert r["baseline_mse"] == pytest.approx((0.0004 + 0.0001 + 0.0004) / 3)
    assert r["mse_ratio"] == pytest.approx(1 / 3)
    assert r["hit_rate"] == pytest.approx(2 / 3)  # up right, 0.0 counts as 'up' (wrong), down right
    assert r["up_rate"] == pytest.approx(1 / 3)
    assert r["n"] == 3
