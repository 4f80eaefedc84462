from datetime import date

import polars as pl

from features.health import check_health
from features.settings import HealthSettings
from forecasting.registry import Champion, read_champion, settings_hash, staleness, write_champion
from tests.conftest import synthetic_prices


def champion(**overrides) -> Champion:
    fields = dict(
        version="m-1",
        checkpoint="/nowhere.pt",
        trained_on="2024-01-10",
        data_fingerprint="abc",
        settings_hash="h1",
        recent_mse=1e-4,
    )
    return Champion(**(fields | overrides))


def test_staleness_reasons():
    today = date(2024, 1, 12)
    assert staleness(None, "abc", "h1", today, 7, True) == "no champion model yet"
    assert staleness(champion(), "abc", "h1", today, 7, True) is None
    assert "settings changed" in staleness(champion(), "abc", "h2", today, 7, True)
    assert "9 days old" in staleness(champion(), "abc", "h1", date(2024, 1, 19), 7, True)
    assert "lake changed" in staleness(champion(), "xyz", "h1", today, 7, True)
    assert staleness(champion(), "xyz", "h1", today, 7, False) is None
    assert settings_hash({"a": 1, "b": [1, 2]}) == settings_hash({"b": [1, 2], "a": 1}) != settings_hash({"a": 2})


def test_champion_round_trip_and_missing_checkpoint(tmp_path):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"weights")
    write_champion(tmp_path, champion(checkpoint=str(ckpt)))
    assert read_champion(tmp_path).version == "m-1"
    ckpt.unlink()
    assert read_champion(tmp_path) is None  # a champion whose checkpoint is gone is no champion


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
