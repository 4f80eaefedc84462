"""A night's publish as one unit: what the next run does with the journal a killed publish left."""

import json
import subprocess
import sys

import polars as pl

from forecasting import journal
from forecasting.ledger import read_ledger
from forecasting.publish import partition_dir, write_frame
from tests.forecasting.test_ledger import D1, D2, forecasts


def test_forecasts_a_killed_publish_wrote_reach_the_ledger_at_the_next_night(tmp_path, caplog):
    """A crash test: killed just after a first publish of D1 wrote its forecasts, before the ledger; the next
    night (D2) ran instead of D1 again, and D1's forecasts were never scored in the live record."""
    folder = partition_dir(tmp_path, "forecasts", D1)
    write_frame(forecasts(D1, ["AAA"], run_id="run-0"), folder, "forecasts", ["parquet", "csv"])  # an earlier run's
    journal.begin(tmp_path, D1, "run-1")
    write_frame(forecasts(D1, ["AAA", "BBB"], run_id="run-1"), folder, "forecasts", ["parquet", "csv"])
    (folder / "forecasts.csv").write_text((folder / "forecasts.csv").read_text().replace("run-1", "run-0"))
    # ... killed here, between the Parquet and the CSV file (their contents made to differ above): no ledger, no
    # run.json, no latest.json, a writer's temporary file, and the journal stays
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    metrics = partition_dir(tmp_path, "metrics", D1)
    metrics.mkdir(parents=True)
    left = metrics / f".cross_section.parquet.{dead.stdout.strip()}.7239f1cc3e23.tmp"
    left.write_bytes(b"")
    assert json.loads((tmp_path / journal.JOURNAL).read_text()) == {
        "asof_date": "2024-03-01",
        "run_id": "run-1",
        "formats": [],
    }
    with caplog.at_level("WARNING", logger="nightcast.forecasting.journal"):
        journal.begin(tmp_path, D2, "run-2")
    book = read_ledger(tmp_path / "ledger")
    assert book["asof_date"].unique().to_list() == [D1] and sorted(book["ticker"].unique()) == ["AAA", "BBB"]
    assert "interrupted after its forecasts were written: they are in the ledger now" in caplog.text
    # the CSV says what the Parquet file and the ledger do (a reviewer's case: it kept the earlier run's for good)
    assert pl.read_csv(folder / "forecasts.csv")["run_id"].unique().to_list() == ["run-1"]
    assert not left.exists()  # D1's folders are not written again: cleared of the killed run's leftovers here
    assert json.loads((tmp_path / journal.JOURNAL).read_text())["asof_date"] == "2024-03-04"  # D2's own now
    journal.end(tmp_path)
    assert not (tmp_path / journal.JOURNAL).exists()


def test_a_publish_killed_before_its_forecasts_leaves_the_earlier_runs_files_as_they_were(tmp_path, caplog):
    folder = partition_dir(tmp_path, "forecasts", D1)
    write_frame(forecasts(D1, ["AAA"], run_id="run-0"), folder, "forecasts", ["parquet"])  # an earlier run's
    journal.begin(tmp_path, D1, "run-1")  # ... killed before writing anything
    with caplog.at_level("WARNING", logger="nightcast.forecasting.journal"):
        assert journal.mend(tmp_path, D2) == D1
    assert not (tmp_path / "ledger").exists()  # the earlier run's forecasts are not this run's to record
    assert "interrupted before its forecasts were written" in caplog.text
    # the same date again: said, and published again by this run
    journal.begin(tmp_path, D1, "run-1")
    caplog.clear()
    with caplog.at_level("WARNING", logger="nightcast.forecasting.journal"):
        assert journal.mend(tmp_path, D1) == D1
    assert "this run publishes that date again" in caplog.text
    (tmp_path / journal.JOURNAL).write_text("{cut sh")  # a journal cut short: removed, with a warning
    assert journal.mend(tmp_path, D2) is None and not (tmp_path / journal.JOURNAL).exists()


def test_a_publish_killed_after_its_csv_and_before_its_parquet_is_recorded_from_the_csv(tmp_path):
    """A reviewer's case: with publish.formats = ["csv", "parquet"] the CSV is written first; mend read only the
    Parquet file (the earlier run's), said the forecasts were never written and left the formats apart."""
    folder = partition_dir(tmp_path, "forecasts", D1)
    write_frame(forecasts(D1, ["AAA"], run_id="run-0"), folder, "forecasts", ["parquet"])
    journal.begin(tmp_path, D1, "run-1")
    write_frame(forecasts(D1, ["AAA", "BBB"], run_id="run-1"), folder, "forecasts", ["csv", "parquet"])
    write_frame(forecasts(D1, ["AAA"], run_id="run-0"), folder, "forecasts", ["parquet", "csv"])
    (folder / "forecasts.csv").write_text(
        pl.read_parquet(folder / "forecasts.parquet").with_columns(run_id=pl.lit("run-1")).write_csv()
    )  # ... killed after the CSV: the Parquet file is the earlier run's
    assert journal.mend(tmp_path, D2) == D1
    assert read_ledger(tmp_path / "ledger")["run_id"].unique().to_list() == ["run-1"]
    assert pl.read_parquet(folder / "forecasts.parquet")["run_id"].unique().to_list() == ["run-1"]


def test_a_first_publish_killed_between_its_formats_has_both_after_the_next_night(tmp_path):
    """A hostile user's case: a first publish of D1 killed after its Parquet file left D1 without a CSV for good
    (the next night aligned only the formats that existed), so a reader of the CSVs never saw that night."""
    folder = partition_dir(tmp_path, "forecasts", D1)
    journal.begin(tmp_path, D1, "run-1", ["parquet", "csv"])
    write_frame(forecasts(D1, ["AAA", "BBB"], run_id="run-1"), folder, "forecasts", ["parquet"])  # ... killed
    assert not (folder / "forecasts.csv").exists()
    assert journal.mend(tmp_path, D2) == D1
    csv = pl.read_csv(folder / "forecasts.csv", try_parse_dates=True)
    assert csv["run_id"].unique().to_list() == ["run-1"] and sorted(csv["ticker"].unique()) == ["AAA", "BBB"]
    assert read_ledger(tmp_path / "ledger")["run_id"].unique().to_list() == ["run-1"]
