"""Replaying past nights: data after the night is invisible, the champion rules decide retrains, the ledger
fills and is scored. The replay flow end to end under a real (temporary) Prefect server, on a slice of the
sample: one replay of four nights, one live run on a lake cut at a replayed night, one rerun of a replayed night.
(That a replay never uses a champion decided with later data is `registry.champion_as_of`'s, tested in
tests/forecasting/test_registry.py.)"""

import re
from datetime import date

import polars as pl
import pytest
from rich.console import Console

import flows.cli
from forecasting import ledger, live
from nightcast.errors import InsufficientDataError

pytestmark = pytest.mark.slow


def test_replay_sees_no_future_retrains_by_the_rules_and_scores(prefect_harness, settings, tmp_path, monkeypatch):
    from flows.nightly import nightly
    from flows.replay import replay_flow

    s = settings.model_copy(update={"train": settings.train.model_copy(update={"max_age_days": 3})})
    result = replay_flow(s, date(2014, 11, 29), date(2014, 12, 4), progress=False)
    nights = result.nights
    assert nights["night"].to_list() == [date(2014, 12, d) for d in (1, 2, 3, 4)]  # sessions with data
    # no champion on the first night; then a retrain once the champion is 3 days old
    assert nights["retrained"].to_list() == [True, False, False, True] and result.retrains == 2
    trained_through = dict(zip(nights["night"], nights["trained_through"], strict=True))
    assert trained_through[date(2014, 12, 1)] == date(2014, 11, 21)  # 5 sessions back (Thanksgiving closed)
    assert trained_through[date(2014, 12, 3)] == date(2014, 11, 21)  # the champion's model, kept
    assert trained_through[date(2014, 12, 4)] == date(2014, 11, 26)

    out = s.paths.out_dir / "replay"  # replayed nights are kept apart from live ones
    assert not (s.paths.out_dir / "latest.json").exists() and not (s.paths.out_dir / "forecasts").exists()
    # plots for the last night only, which shows the whole record
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert pngs == ["record/asof=2014-12-04/live_record.png", "reports/asof=2014-12-04/attention.png"]

    # a replayed night equals a live run on a lake cut at that night: data after it was invisible
    night = date(2014, 12, 1)
    cut_path = tmp_path / "cut.parquet"
    pl.read_parquet(settings.source.path).filter(pl.col("date") <= night).write_parquet(cut_path)
    cut = s.model_copy(
        update={
            "source": s.source.model_copy(update={"path": cut_path}),
            "paths": s.paths.model_copy(update={"data_dir": tmp_path / "cut", "out_dir": tmp_path / "cut-out"}),
        }
    )
    live_run = nightly(cut)
    assert live_run.asof == night and live_run.retrained and live_run.trained_through == date(2014, 11, 21)
    replayed = ledger.read_ledger(out / "ledger").filter(pl.col("asof_date") == night)
    assert replayed.drop("run_id").equals(live_run.forecasts.drop("run_id"))
    metrics_file = "metrics/asof=2014-12-01/metrics.parquet"
    assert pl.read_parquet(out / metrics_file).equals(pl.read_parquet(cut.paths.out_dir / metrics_file))
    book = ledger.read_ledger(out / "ledger")
    assert book.height == 4 * 3 * 5 and book["asof_date"].n_unique() == 4
    record = result.last.record.filter(pl.col("scope") == "pooled").sort("horizon")
    # by 2014-12-04, h=1 forecasts of the first 3 nights have come due, h=3 only the first night's
    assert record["n"].to_list() == [9, 6, 3] and result.last.waiting == 60 - 18
    # the record is the published forecasts scored against the lake, the same from files alone
    prices = pl.read_parquet(settings.source.path).filter(pl.col("date") <= date(2014, 12, 4))
    assert live.live_record(live.score(book, prices)).equals(result.last.record)

    # rerunning a night replaces its ledger rows, and the champion as of that night is the one decided with
    # data up to it (12-01's, not 12-04's): the night comes out exactly as the replay made it
    universe = s.model_copy(update={"source": s.source.model_copy(update={"tickers": ["NVDA", "ORCL", "^GSPC"]})})
    night = nightly(universe, asof=date(2014, 12, 3), ingest=False)
    replayed = ledger.read_ledger(out / "ledger").filter(pl.col("asof_date") == date(2014, 12, 3))
    assert night.forecasts.drop("run_id").equals(replayed.drop("run_id")) and not night.retrained
    assert ledger.read_ledger(out / "ledger").height == book.height
    # a night before the data begins says so (it said "no ticker has validation.min_rows=300 rows: ", no more)
    with pytest.raises(InsufficientDataError, match=r"--asof 1990-01-02: no stored prices on or before it; the data"):
        nightly(universe, asof=date(1990, 1, 2), ingest=False)

    # `nightcast record` prints it from the files, without Prefect
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nightcast.toml").write_text(
        f'[paths]\ndata_dir = "{s.paths.data_dir}"\nout_dir = "{s.paths.out_dir}"\n'
    )
    recorder = Console(record=True, width=160)
    monkeypatch.setattr(flows.cli, "console", recorder)
    assert flows.cli.main(["record", "--replay", "--by-ticker"]) == 0
    text = recorder.export_text()
    assert "60 forecasts scored; 0 published forecasts still wait" in text and "ORCL" in text  # prices to 12-31
    assert flows.cli.main(["record", "--replay", "--asof", "2014-12-03"]) == 0
    # as it stood on 12-03: h=1 of 12-01 and 12-02 and h=2 of 12-01 had come due, for 3 tickers each
    assert "9 forecasts scored; 36 published forecasts still wait" in recorder.export_text()
    assert flows.cli.main(["record"]) == 0  # nothing was published live
    assert "holds no forecast yet" in recorder.export_text()
    # forecasts, only none by that date; and an --out where nothing is (new-user review: both said "no forecast")
    assert flows.cli.main(["record", "--replay", "--asof", "2014-11-28"]) == 0
    assert "holds no forecast made by 2014-11-28: its first is of 2014-12-01" in " ".join(
        recorder.export_text().split()
    )
    assert flows.cli.main(["record", "--out", str(tmp_path / "nowhere")]) == 2


NAMED = re.compile(r"the first night (?:that could have|with) enough is (?:about )?(\d{4}-\d{2}-\d{2})")


def test_a_night_too_early_for_a_model_names_the_first_night_that_has_enough(prefect_harness, settings):
    """A new-user finding: an --asof with a few hundred rows failed in the model's split ("only 0 dates with
    realised targets before <a day a year earlier>"), or listed every ticker too short, without saying which
    night would work. Now it is refused before any training, naming a night to try; that night (or, were the
    features' warm-up longer than the settings say, the one its own refusal names) works, and the session
    before it does not."""
    from flows.nightly import nightly

    settings = settings.model_copy(update={"validation": settings.validation.model_copy(update={"min_rows": 100})})
    dates = pl.read_parquet(settings.source.path).filter(pl.col("ticker") == "ORCL")["date"].sort()
    with pytest.raises(InsufficientDataError, match=r"no ticker has validation.min_rows=100 rows by then \(the most"):
        nightly(settings, asof=dates[49])
    with pytest.raises(InsufficientDataError, match=r"the data holds 140 dates by then, and a model needs at") as early:
        nightly(settings, asof=dates[139], ingest=False)  # min_rows met, not the spans
    first = date.fromisoformat(NAMED.search(str(early.value))[1])
    try:
        night = nightly(settings, asof=first, ingest=False)
    except InsufficientDataError as exc:  # the exact need, known once the features are built
        first = date.fromisoformat(NAMED.search(str(exc))[1])
        night = nightly(settings, asof=first, ingest=False)
    assert night.forecasts["asof_date"].unique().to_list() == [first]
    before = dates.filter(dates < first)[-1]
    with pytest.raises(InsufficientDataError, match=rf"--asof {before}: too little history"):
        nightly(settings, asof=before, ingest=False)
