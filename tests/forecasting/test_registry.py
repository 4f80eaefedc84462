from datetime import date

import polars as pl
import pytest

from features.errors import NightcastError
from features.health import check_health
from features.settings import HealthSettings
from forecasting.registry import champion_as_of, read_history, record_decision, settings_hash
from tests.conftest import synthetic_prices
from tests.forecasting.test_policy import champion


def test_champion_history_as_of_dates_and_relative_paths(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    for name in ("m-1.pt", "m-eval-1.pt", "m-2.pt", "m-eval-2.pt"):
        (models / name).write_bytes(b"weights")
    record_decision(models, champion())
    record_decision(
        models, champion(version="m-2", checkpoint="m-2.pt", evaluation_checkpoint="m-eval-2.pt", asof=date(2024, 3, 1))
    )
    assert champion_as_of(models, date(2024, 1, 8)) is None  # nothing was trained with data up to then
    assert champion_as_of(models, date(2024, 2, 1)).version == "m-1"  # a replayed night never sees m-2
    assert champion_as_of(models, date(2024, 3, 1)).version == "m-2"
    assert [c.version for c in read_history(models)] == ["m-1", "m-2"]
    # the record is relative to the models directory: moving the data directory keeps the champion
    moved = tmp_path / "elsewhere"
    models.rename(moved)
    assert champion_as_of(moved, date(2024, 3, 5)).version == "m-2"
    (moved / "m-2.pt").unlink()
    assert champion_as_of(moved, date(2024, 3, 5)).version == "m-1"  # a champion whose checkpoint is gone is none


def test_a_corrupt_champion_record_is_an_error_and_an_old_one_is_superseded(tmp_path):
    (tmp_path / "champion.json").write_text('{"version": "attention_lstm-1", "checkpoint": "data/models/x.pt"}')
    assert read_history(tmp_path) == []  # nightcast 0.1's flat record: retrained, with a warning
    (tmp_path / "champion.json").write_text("{not json")
    with pytest.raises(NightcastError, match="champion record .* is unreadable"):
        read_history(tmp_path)
    assert settings_hash({"a": 1, "b": [1, 2]}) == settings_hash({"b": [1, 2], "a": 1}) != settings_hash({"a": 2})


def test_health_gate_finds_gaps_jumps_and_stale_tickers():
    prices = synthetic_prices(["AAA", "BBB", "CCC"], 120, seed=2, start=date(2024, 1, 2))
    last = prices["date"].max()
    bad = prices.filter(
        ~((pl.col("ticker") == "AAA") & (pl.col("date") > last - pl.duration(days=9)) & (pl.col("date") < last))
    )
    bad = bad.with_columns(
        pl.when((pl.col("ticker") == "BBB") & (pl.col("date") == last))
        .then(pl.col("adj_close") * 2)
        .otherwise(pl.col("adj_close"))
        .alias("adj_close")
    )
    report = check_health(bad, {"CCC": 12}, HealthSettings(max_missing=2))
    text = " | ".join(report.problems)
    assert not report.ok
    assert "AAA:" in text and "missing sessions" in text
    assert "BBB: implausible move of +69.3%" in text
    assert "CCC: stale, 12 sessions behind" in text
    clean = check_health(prices, {}, HealthSettings())
    assert clean.ok, clean.problems
