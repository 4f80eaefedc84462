from datetime import date

import polars as pl
import pytest

from features.prices.health import check_health
from features.settings import HealthSettings
from forecasting.registry import ChampionRecordError, champion_as_of, read_history, record_decision, settings_hash
from nightcast.errors import NightcastError
from tests.conftest import synthetic_prices
from tests.forecasting.test_policy import champion


def test_champion_history_as_of_dates_and_relative_paths(tmp_path, caplog):
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
    with caplog.at_level("WARNING", logger="nightcast.forecasting.registry"):
        assert champion_as_of(moved, date(2024, 3, 5)).version == "m-1"  # one whose checkpoint is gone is none
    # said, by name (a crash test: a run reported "no champion model yet" with champion.json naming one)
    [warned] = [r.getMessage() for r in caplog.records]
    assert "decided on 2024-03-01 is not usable: m-2.pt missing in" in warned


@pytest.mark.parametrize(
    "content, problem",
    [
        pytest.param(b"{not json", "is unreadable", id="not-json"),
        pytest.param(b"", "is unreadable", id="empty"),  # a write cut short by a full disk
        pytest.param(b"\xff\xfe\x00garbage", "is unreadable", id="not-text"),
        pytest.param(b"null", "has an unknown format ('NoneType'", id="null"),
        pytest.param(b"[]", "has an unknown format ('list'", id="list"),
        pytest.param(b'{"format": 4, "history": []}', "has an unknown format (4;", id="newer-format"),
        pytest.param(b'{"format": 2}', "is malformed (KeyError", id="no-history"),
        pytest.param(b'{"format": 2, "history": [{"version": "m-1"}]}', "is malformed (TypeError", id="short-record"),
        pytest.param(b'{"format": 2, "history": ["m-1"]}', "is malformed (AttributeError", id="not-a-record"),
    ],
)
def test_a_corrupt_champion_record_is_a_one_line_error_and_never_overwritten(tmp_path, content, problem):
    path = tmp_path / "champion.json"
    path.write_bytes(content)
    with pytest.raises(ChampionRecordError) as caught:
        read_history(tmp_path)
    message = str(caught.value)
    assert isinstance(caught.value, NightcastError) and "\n" not in message  # the CLI prints it as one line
    assert message.startswith(f"champion record {path} {problem}") and message.endswith("to train a new champion")
    with pytest.raises(ChampionRecordError):
        champion_as_of(tmp_path, date(2024, 3, 1))  # what the nightly asks first: it stops there
    with pytest.raises(ChampionRecordError):
        record_decision(tmp_path, champion())
    assert path.read_bytes() == content  # the history is still there for a person to mend


def test_an_old_flat_champion_record_is_superseded(tmp_path):
    (tmp_path / "champion.json").write_text('{"version": "attention_lstm-1", "checkpoint": "data/models/x.pt"}')
    assert read_history(tmp_path) == []  # nightcast 0.1's flat record: retrained, with a warning
    record_decision(tmp_path, champion())
    assert [c.version for c in read_history(tmp_path)] == ["m-1"]
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


def test_only_a_recent_stop_blocks_training_and_each_problem_names_its_setting():
    """A ticker that stopped within the gate's window (a failed fetch?) blocks; one that stopped long before it
    (delisted or halted) does not: its history trains the model and publishing skips it. Before, OLD blocked
    training for good: 'OLD: stale, 128 sessions behind'."""
    prices = synthetic_prices(["AAA", "BBB"], 120, seed=2, start=date(2024, 1, 2))
    last = prices["date"].max()
    gap = prices.filter(~((pl.col("ticker") == "AAA") & (pl.col("date") > last - pl.duration(days=9))))
    report = check_health(gap, {"NEW": 8, "EDGE": 21, "OLD": 22, "GONE": 128}, HealthSettings())
    assert report.problems[0].startswith("AAA: 6 missing sessions since ")
    assert report.problems[0].endswith("; health.max_missing = 2)")
    assert report.problems[1:] == [
        f"{t}: stale, {n} sessions behind, within health.window_days = 21 (health.block_on_stale = false trains anyway)"
        for t, n in (("EDGE", 21), ("NEW", 8))
    ]
    assert check_health(prices, {"OLD": 22, "GONE": 128}, HealthSettings()).ok
    assert check_health(prices, {"NEW": 8}, HealthSettings(block_on_stale=False)).ok
    assert not check_health(prices, {"OLD": 22}, HealthSettings(window_days=30)).ok  # the window decides


def test_the_gate_reads_each_ticker_s_window_in_any_row_order_and_lists_problems_by_ticker():
    # the gate sorts and splits only the window's rows: a ticker with none there (every recent session missing)
    # is still found, rows in any order give the same report, and problems come in ticker order
    prices = synthetic_prices(["ZZZ", "AAA", "MMM"], 120, seed=3, start=date(2024, 1, 2))
    last = prices["date"].max()
    gone = prices.filter(~((pl.col("ticker") == "MMM") & (pl.col("date") > last - pl.duration(days=40))))
    jumpy = gone.with_columns(
        pl.when((pl.col("ticker") == "ZZZ") & (pl.col("date") == last))
        .then(pl.col("adj_close") * 3)
        .otherwise(pl.col("adj_close"))
    )
    report = check_health(jumpy, {}, HealthSettings())
    assert [p.split(":")[0] for p in report.problems] == ["MMM", "ZZZ"]
    assert report.problems[0].startswith("MMM: 21 missing sessions since ")  # none left in the window at all
    assert check_health(jumpy.sample(fraction=1.0, shuffle=True, seed=1), {}, HealthSettings()) == report


def test_combination_weights_round_trip_and_an_older_record_without_them_means_the_network(tmp_path):
    import json

    from forecasting.combine import Publishing

    models = tmp_path / "models"
    models.mkdir()
    for name in ("m-1.pt", "m-eval-1.pt", "m-2.pt", "m-eval-2.pt"):
        (models / name).write_bytes(b"weights")
    weights = [[0.1 + 0.2, 1 / 3], [0.0, 0.7]]  # floats that print long: stored exactly
    record_decision(models, champion(combination=weights))
    assert champion_as_of(models, date(2024, 1, 9)).combination == weights
    assert Publishing.of(weights).record() == weights and Publishing.of(weights).name == "combined"
    body = json.loads((models / "champion.json").read_text())
    del body["history"][0]["combination"]  # as nightcast wrote it before the combination published
    (models / "champion.json").write_text(json.dumps(body))
    old = champion_as_of(models, date(2024, 1, 9))
    assert old.version == "m-1" and old.combination is None and Publishing.of(old.combination).name == "attention_lstm"
    # a later decision is appended to the older history, which is kept as it was
    record_decision(models, champion(version="m-2", checkpoint="m-2.pt", evaluation_checkpoint="m-eval-2.pt"))
    assert [c.combination for c in read_history(models)] == [None, None]


def test_a_format_2_record_loads_as_the_network_alone_and_the_next_write_is_format_3(tmp_path):
    import json
    from dataclasses import asdict

    old = {k: v for k, v in asdict(champion()).items() if k != "combination"}  # nightcast 0.3-0.4 wrote no weights
    written = json.dumps({"format": 2, "history": [old]}, default=str)
    (tmp_path / "champion.json").write_text(written)
    (loaded,) = read_history(tmp_path)
    assert loaded.combination is None and loaded.version == "m-1"
    record_decision(tmp_path, champion(version="m-2"))
    body = json.loads((tmp_path / "champion.json").read_text())
    assert body["format"] == 3 and [r["version"] for r in body["history"]] == ["m-1", "m-2"]
    # the older nightcast's file kept as it was, for a way back (that nightcast cannot read format 3), once
    assert (tmp_path / "champion.format2.json").read_text() == written
    record_decision(tmp_path, champion(version="m-3"))
    assert (tmp_path / "champion.format2.json").read_text() == written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["champion.format2.json", "champion.json"]
    # gone back (the copy copied back) and the older nightcast decided again: its newer history is the copy now
    grown = json.dumps({"format": 2, "history": [old, {**old, "version": "m-4"}]}, default=str)
    (tmp_path / "champion.json").write_text(grown)
    record_decision(tmp_path, champion(version="m-5"))
    assert (tmp_path / "champion.format2.json").read_text() == grown


def test_layout_hashes_accept_a_recipe_recorded_before_a_setting_existed():
    from forecasting.registry import layout_hashes, settings_hash

    added = ({("model", "bidirectional"): False}, {("features", "market"): None})  # oldest first
    now = {"model": {"hidden": 96, "bidirectional": False}, "features": {"market": None, "vol": 21}, "lookback": 40}
    before = {"model": {"hidden": 96}, "features": {"vol": 21}, "lookback": 40}
    between = {"model": {"hidden": 96, "bidirectional": False}, "features": {"vol": 21}, "lookback": 40}
    assert layout_hashes(now, added) == [settings_hash(now), settings_hash(between), settings_hash(before)]
    # no layout that never existed (market without bidirectional)
    never = {"model": {"hidden": 96}, "features": {"market": None, "vol": 21}, "lookback": 40}
    assert settings_hash(never) not in layout_hashes(now, added)
    # set to another value, a setting changes the recipe: no layout from before it matches
    market = {**now, "features": {"market": "SPY", "vol": 21}}
    assert layout_hashes(market, added) == [settings_hash(market)]
    bidirectional = {**now, "model": {"hidden": 96, "bidirectional": True}}
    assert settings_hash(before) not in layout_hashes(bidirectional, added)
    assert settings_hash({**before, "lookback": 60}) not in layout_hashes(now, added)  # the others still count


def test_champions_recorded_by_earlier_nightcasts_at_their_defaults_are_the_same_recipe():
    """The default recipe and inputs hashes earlier nightcasts recorded (computed at those commits): today's
    defaults must still accept them, or an upgrade retrains (and stops scoring) every champion. A failure here
    means a recipe setting was added or a default changed: append an added setting to
    forecasting.settings.ADDED_TO_RECIPE with the value that trains as before."""
    from flows.model_choice import accepted_hashes
    from flows.settings import load_settings

    recipes, inputs = accepted_hashes(load_settings(None, environ={}, overrides={"publish": {"forecast": "model"}}))
    assert {"5b15509481ca", "f9a6c31fa270", "879395797431"} <= set(recipes)  # 1f3dee8, 2f7d09a, f4131da
    assert {"2e18aaa15e56", "1f38976fb4a0"} <= set(inputs)  # with and without features.market
    # before the GPU batch rule (783a600, 2026-11-26): no value of it trains as a GPU trained then
    assert "f7f96b773cc4" not in recipes
    # publishing the combination (the default): fb58720's hash, the weights fit on the early-stopping span, is
    # the same recipe at publish.combination_holdout = 0 only (computed at fb58720)
    held = load_settings(None, environ={})
    assert "f7fbee58841c" not in accepted_hashes(held)[0]
    before = load_settings(None, environ={}, overrides={"publish": {"combination_holdout": 0.0}})
    assert "f7fbee58841c" in accepted_hashes(before)[0] and "2e18aaa15e56" in accepted_hashes(held)[1]
