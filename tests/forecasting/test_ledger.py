import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from forecasting.ledger import LedgerError, partition_path, read_ledger, write_partition
from forecasting.publish import FORECAST_COLUMNS, FORECAST_SCHEMA
from nightcast.errors import NightcastError

ROOT = Path(__file__).resolve().parents[2]
D1, D2 = date(2024, 3, 1), date(2024, 3, 4)


def forecasts(asof: date, tickers, horizons=(1, 5), pred: float = 0.01, run_id: str = "run-1") -> pl.DataFrame:
    """Minimal forecast rows: the optional columns (intervals, eval metadata) are left out."""
    rows = [
        {
            "run_id": run_id,
            "model_version": "m-1",
            "asof_date": asof,
            "ticker": t,
            "horizon": h,
            "target_date": asof + timedelta(days=h),
            "last_price": 100.0,
            "pred_log_return": pred,
            "pred_price": 100.0,
            "skill": False,
            "source_model": "attention_lstm",
        }
        for t in tickers
        for h in horizons
    ]
    return pl.DataFrame(rows)


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_round_trip_conforms_to_schema(tmp_path):
    path = write_partition(tmp_path, forecasts(D1, ["BBB", "AAA"]))
    assert path == tmp_path / "asof=2024-03-01" / "ledger.parquet"
    out = read_ledger(tmp_path)
    assert out.schema == pl.Schema(FORECAST_SCHEMA)
    assert tuple(out.columns) == FORECAST_COLUMNS
    assert out.select("ticker", "horizon").rows() == [("AAA", 1), ("AAA", 5), ("BBB", 1), ("BBB", 5)]
    assert out["pred_lower"].null_count() == 4 and out["eval_start"].null_count() == 4
    assert out["target_date"].to_list()[:2] == [date(2024, 3, 2), date(2024, 3, 6)]


def test_empty_ledger_has_schema(tmp_path):
    assert read_ledger(tmp_path / "missing").schema == pl.Schema(FORECAST_SCHEMA)
    assert read_ledger(tmp_path).is_empty()


def test_rerun_replaces_and_subset_keeps_other_tickers(tmp_path):
    write_partition(tmp_path, forecasts(D1, ["AAA", "BBB", "CCC"], pred=0.01, run_id="first"))
    write_partition(tmp_path, forecasts(D1, ["AAA", "BBB", "CCC"], pred=0.02, run_id="second"))
    out = read_ledger(tmp_path)
    assert out.height == 6  # replaced, not appended
    assert set(out["run_id"]) == {"second"}

    write_partition(tmp_path, forecasts(D1, ["BBB"], pred=0.03, run_id="third"))
    out = read_ledger(tmp_path)
    assert out.height == 6
    assert out.select("ticker", "run_id", "pred_log_return").unique().sort("ticker").rows() == [
        ("AAA", "second", 0.02),
        ("BBB", "third", 0.03),
        ("CCC", "second", 0.02),
    ]
    assert out.select("ticker", "horizon").is_unique().all()


def test_what_a_rerun_replaces_is_kept_aside_and_said(tmp_path):
    """A reviewer's case: a rerun of a night overwrote every forecast the ledger ("every forecast ever published")
    held, without a word, and a rerun that withdrew a ticker left its old row beside the new forecasts file."""
    import logging

    from forecasting.ledger import superseded_path

    book = tmp_path / "ledger"
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("nightcast.forecasting.ledger").addHandler(handler)
    try:
        write_partition(book, forecasts(D1, ["AAA", "BBB", "CCC"], pred=0.01, run_id="first"))
        # the same values again under another run id: nothing replaced, nothing kept aside, nothing said
        write_partition(book, forecasts(D1, ["AAA", "BBB", "CCC"], pred=0.01, run_id="again"))
        assert not superseded_path(book, D1).exists() and records == []
        # ... nor a rerun on another thread count, whose forecasts differ by float noise (a hostile user's rerun:
        # 1e-10 in log return was "3 published forecasts replaced"); the ledger takes the new run's rows
        write_partition(book, forecasts(D1, ["AAA", "BBB", "CCC"], pred=0.01 + 9e-10, run_id="noise"))
        assert not superseded_path(book, D1).exists() and records == []
        assert set(read_ledger(book)["pred_log_return"]) == {0.01 + 9e-10}
        write_partition(book, forecasts(D1, ["AAA", "BBB", "CCC"], pred=0.01, run_id="again"))
        assert not superseded_path(book, D1).exists() and records == []
        # a change of 1e-5 in log return (0.1 bp) is a changed forecast, and so is one to NaN: set aside and said
        write_partition(book, forecasts(D1, ["AAA"], pred=0.01 + 1e-5, run_id="moved"))
        assert pl.read_parquet(superseded_path(book, D1))["run_id"].to_list() == ["again", "again"]
        write_partition(book, forecasts(D1, ["BBB"], pred=float("nan"), run_id="lost"))
        assert pl.read_parquet(superseded_path(book, D1))["ticker"].to_list() == ["AAA", "AAA", "BBB", "BBB"]
        write_partition(book, forecasts(D1, ["AAA", "BBB"], pred=0.01, run_id="again"))
        superseded_path(book, D1).unlink()
        records.clear()
        # other values for AAA and BBB; CCC in the run's universe but not forecast: withdrawn
        write_partition(book, forecasts(D1, ["AAA", "BBB"], pred=0.02, run_id="second"), ["CCC"])
    finally:
        logging.getLogger("nightcast.forecasting.ledger").removeHandler(handler)
    out = read_ledger(book)
    assert sorted(out["ticker"].unique().to_list()) == ["AAA", "BBB"] and set(out["run_id"]) == {"second"}
    aside = pl.read_parquet(tmp_path / "ledger_superseded" / "asof=2024-03-01" / "superseded.parquet")
    assert aside.height == 6 and set(aside["run_id"]) == {"again"} and set(aside["superseded_by"]) == {"second"}
    assert set(aside["pred_log_return"]) == {0.01} and aside["superseded_at"].null_count() == 0
    [record] = records
    message = record.getMessage()
    assert "6 published forecasts of AAA, BBB, CCC replaced by this run (CCC withdrawn)" in message
    # the whole partition, as a killed publish's forecasts file says it
    write_partition(book, forecasts(D1, ["BBB"], pred=0.02, run_id="second"), whole=True)
    assert read_ledger(book)["ticker"].unique().to_list() == ["BBB"]
    aside = tmp_path / "ledger_superseded" / "asof=2024-03-01" / "superseded.parquet"
    assert pl.read_parquet(aside).height == 8  # AAA's two rows appended
    # a killed run's retry sets the same rows aside once (null intervals compare equal), and a file written by an
    # older nightcast (a column fewer) is added to, not a traceback
    stored = read_ledger(book)
    write_partition(book, forecasts(D1, ["BBB"], pred=0.04, run_id="third"))
    after = pl.read_parquet(aside)
    after.drop("eval_end").write_parquet(aside)
    stored.write_parquet(partition_path(book, D1))  # the ledger as the kill left it: not yet replaced
    write_partition(book, forecasts(D1, ["BBB"], pred=0.04, run_id="third"))
    again = pl.read_parquet(aside)
    assert again.height == after.height == 10 and again["eval_end"].null_count() == 10


def test_two_dates_two_partitions_and_until(tmp_path):
    write_partition(tmp_path, forecasts(D2, ["AAA"]))
    write_partition(tmp_path, forecasts(D1, ["AAA", "BBB"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["asof=2024-03-01", "asof=2024-03-04"]
    out = read_ledger(tmp_path)
    assert out.select("asof_date", "ticker").unique(maintain_order=True).rows() == [
        (D1, "AAA"),
        (D1, "BBB"),
        (D2, "AAA"),
    ]
    assert read_ledger(tmp_path, until=D1)["asof_date"].unique().to_list() == [D1]
    assert read_ledger(tmp_path, until=D2).height == 6
    assert read_ledger(tmp_path, until=D1 - timedelta(days=1)).is_empty()


def test_leftover_temps_ignored_then_removed(tmp_path):
    path = write_partition(tmp_path, forecasts(D1, ["AAA"], pred=0.01))
    folder = path.parent
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs, as after a kill -9
    stale = folder / f".ledger.parquet.{dead.pid}.0123456789ab.tmp"
    stale.write_bytes(b"PAR1 half a file")
    live = folder / f".ledger.parquet.{os.getpid()}.ba9876543210.tmp"  # a writer that is still running
    live.write_bytes(b"PAR1")
    (folder / "notes.txt").write_text("not a partition file")
    (tmp_path / "asof=junk").mkdir()
    (tmp_path / "asof=junk" / "ledger.parquet").write_bytes(b"junk")

    assert read_ledger(tmp_path)["pred_log_return"].to_list() == [0.01, 0.01]
    write_partition(tmp_path, forecasts(D1, ["AAA"], pred=0.02))
    assert temps(folder) == [live.name]
    assert (folder / "notes.txt").exists()
    assert read_ledger(tmp_path)["pred_log_return"].to_list() == [0.02, 0.02]


def test_wrong_or_mixed_dates_rejected(tmp_path):
    mixed = pl.concat([forecasts(D1, ["AAA"]), forecasts(D2, ["BBB"])])
    with pytest.raises(LedgerError, match="2024-03-01, 2024-03-04"):
        write_partition(tmp_path, mixed)
    with pytest.raises(NightcastError, match="no rows"):
        write_partition(tmp_path, forecasts(D1, ["AAA"]).clear())
    with pytest.raises(LedgerError, match="unknown|does not know"):
        write_partition(tmp_path, forecasts(D1, ["AAA"]).with_columns(extra=pl.lit(1)))
    with pytest.raises(LedgerError, match="repeat"):
        write_partition(tmp_path, pl.concat([forecasts(D1, ["AAA"]), forecasts(D1, ["AAA"])]))
    assert not list(tmp_path.iterdir())  # nothing written


def test_corrupt_partition_names_the_file(tmp_path):
    path = write_partition(tmp_path, forecasts(D1, ["AAA"]))
    path.write_bytes(b"not parquet at all")
    with pytest.raises(LedgerError, match="asof=2024-03-01") as err:
        read_ledger(tmp_path)
    assert "\n" not in str(err.value)


CHILD = textwrap.dedent(
    """
    import sys
    from datetime import date
    from pathlib import Path

    import polars as pl

    from forecasting.ledger import write_partition

    n = {n}
    versions = [
        pl.DataFrame(
            {{
                "run_id": [f"v{{v}}"] * n,
                "model_version": "m",
                "asof_date": [date(2024, 3, 1)] * n,
                "ticker": [f"T{{i // 5:05d}}" for i in range(n)],
                "horizon": [i % 5 + 1 for i in range(n)],
                "target_date": [date(2024, 3, 8)] * n,
                "last_price": [100.0 + i for i in range(n)],
                "pred_log_return": [float(v)] * n,
                "pred_price": [100.0] * n,
                "skill": [False] * n,
                "source_model": "m",
            }}
        )
        for v in (1, 2)
    ]
    print("ready", flush=True)
    sys.stdin.readline()  # wait for go: the import time is not part of the race
    i = 0
    while True:
        write_partition(Path(sys.argv[1]), versions[i % 2])
        i += 1
    """
)


def test_kill_9_mid_write_never_leaves_a_partial_partition(tmp_path):
    n = 40_000
    asof = date(2024, 3, 1)
    folder = partition_path(tmp_path, asof).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # Start every child at once so their (slow: torch) imports overlap; each then waits for its turn.
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD.format(n=n), str(tmp_path)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)  # each kill lands mid-write (it waits for the temp file): three are plenty
    ]
    rng = random.Random(7)
    killed_mid_write = 0
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
            child.stdin.write("go\n")
            child.stdin.flush()
            while not partition_path(tmp_path, asof).exists():  # a complete version is always there
                assert child.poll() is None, child.stderr.read()
                time.sleep(0.001)
            # A short random delay, then the kill lands as soon as this child has a temp file open: the
            # parquet write is only part of each loop, and a kill outside it would test nothing.
            time.sleep(rng.uniform(0.02, 0.2))
            mine = f".ledger.parquet.{child.pid}."
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and not any(name.startswith(mine) for name in temps(folder)):
                pass
            child.send_signal(signal.SIGKILL)
            child.wait()
            killed_mid_write += any(name.startswith(mine) for name in temps(folder))

            out = read_ledger(tmp_path)
            assert out.height == n
            assert out.select("ticker", "horizon").is_unique().all()
            values = out["pred_log_return"].unique().to_list()
            assert values in ([1.0], [2.0])  # one complete version, never a mix
            assert out["run_id"].unique().to_list() == [f"v{int(values[0])}"]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdin.close()
            child.stdout.close()
            child.stderr.close()
    assert killed_mid_write >= 1  # at least one kill really interrupted a write
    # A normal write afterwards works and removes what the killed writers left behind.
    write_partition(tmp_path, forecasts(asof, ["AAA"], pred=0.5))
    assert temps(folder) == []
    out = read_ledger(tmp_path)
    assert out.height == n + 2
    assert out.filter(pl.col("ticker") == "AAA")["pred_log_return"].to_list() == [0.5, 0.5]
