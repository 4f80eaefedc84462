"""A night's publishing as one unit: a journal that says a publish is under way, and what the next run does when
the process was killed before it ended.

Each file of a night is replaced atomically, but the night writes several (forecasts, metrics, the ledger, the
live record, run.json, latest.json), and a kill between two leaves a set from two runs, or forecasts that never
reached the ledger: a crash test killed a first publish of a date just after its forecasts file, and had the next
night run instead of that date again, those forecasts would never have been scored in the live record. So
`<out>/.publishing.json` names the as-of date and run before the first file is written and goes after
`latest.json`. A run that finds one left behind (it holds the data directory's lock, so its writer is dead):

- for its own as-of date: it says so and publishes that date again, which replaces every file;
- for another date: the killed run's forecasts, when it wrote them, go into the ledger (the record of what was
  published; a past date cannot be published again live, only replayed apart), and a warning names the date
  and what may be an earlier run's or missing there (metrics, plots, run.json).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import polars as pl

from forecasting import ledger
from forecasting.publish import partition_dir, stored_forecasts, write_frame
from nightcast.io import atomic_write, remove_leftovers

JOURNAL = ".publishing.json"
PARTITIONS = ("forecasts", "metrics", "ledger", "record", "reports")  # the folders of a night under `<out>`
log = logging.getLogger("nightcast.forecasting.journal")


def begin(out_dir: Path, asof: date, run_id: str, formats: Sequence[str] = ()) -> None:
    """Mend what a killed publish left (`mend`), then mark this one under way, with the `formats` of the forecasts
    file it writes (`publish.formats`)."""
    mend(out_dir, asof)
    body = json.dumps({"asof_date": asof.isoformat(), "run_id": str(run_id), "formats": list(formats)})
    atomic_write(Path(out_dir) / JOURNAL, lambda tmp: tmp.write_text(body))


def end(out_dir: Path) -> None:
    """The night's files are all written (`latest.json` last): the publish is over."""
    (Path(out_dir) / JOURNAL).unlink(missing_ok=True)


def mend(out_dir: Path, asof: date) -> date | None:
    """Deal with the journal a killed publish left, if any (module docstring); returns its as-of date."""
    path = Path(out_dir) / JOURNAL
    if not path.exists():
        return None
    try:
        left = json.loads(path.read_text())
        day, run = date.fromisoformat(left["asof_date"]), str(left["run_id"])
        formats = [str(f) for f in left.get("formats", [])]  # an older journal names none
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:  # cut short by a full disk, say
        log.warning("the publishing journal %s is unreadable (%s): removed", path, exc)
        path.unlink(missing_ok=True)
        return None
    if day == asof:
        log.warning("the publish of %s by run %s was interrupted: this run publishes that date again", day, run)
        return day
    for kind in PARTITIONS:  # the killed run's temporary files: a past date's folders are not written again
        remove_leftovers(partition_dir(Path(out_dir), kind, day))
    folder = partition_dir(Path(out_dir), "forecasts", day)
    stored = _written_by(run, [folder / "forecasts.parquet", folder / "forecasts.csv"])
    if stored is not None:
        ledger.write_partition(Path(out_dir) / "ledger", stored, whole=True)  # the ledger says what the file does
        # a kill between the formats left them apart, or one of them unwritten (a first publish of the date: the
        # CSV of a night killed after its Parquet file never came); every format the run was writing, and any
        # other there, now says what the ledger does
        there = [f for f in ("parquet", "csv") if (folder / f"forecasts.{f}").exists()]
        write_frame(stored, folder, "forecasts", list(dict.fromkeys([*formats, *there])))
        log.warning(
            "the publish of %s by run %s was interrupted after its forecasts were written: they are in the ledger "
            "now (and in every format of its forecasts file); that date's metrics, plots and run.json may be an "
            "earlier run's or missing",
            day,
            run,
        )
    else:
        log.warning(
            "the publish of %s by run %s was interrupted before its forecasts were written: the files of that "
            "date, if any, are an earlier run's",
            day,
            run,
        )
    path.unlink(missing_ok=True)
    return day


def _written_by(run: str, paths: list[Path]) -> pl.DataFrame | None:
    """The forecasts of the first of `paths` that `run` wrote (formats are written one after the other, in the
    order `publish.formats` gives: a kill between them leaves the run's in any one), None when none is."""
    for path in paths:
        stored, _ = stored_forecasts([path])
        if stored is not None and run in stored["run_id"].to_list():
            return stored
    return None
