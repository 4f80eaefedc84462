"""nightcast.io: atomic writes, and what killed writers leave behind."""

import os
import subprocess
import sys

from nightcast.io import atomic_write


def test_the_first_write_into_a_folder_removes_temporary_files_of_dead_writers(tmp_path):
    """A crash test: kill -9 mid-publish left `.predictions.parquet.<pid>.<hex>.tmp` in the metrics folder for
    good (only the ledger cleaned its own). A live writer's temporary file (this process's) stays."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = tmp_path / f".predictions.parquet.{dead.stdout.strip()}.0123456789ab.tmp"
    gone.write_bytes(b"")
    writing = tmp_path / f".forecasts.csv.{os.getpid()}.ba9876543210.tmp"
    writing.write_bytes(b"half")
    mine = tmp_path / "notes.0.tmp"  # not a name atomic_write makes
    mine.write_text("x")
    atomic_write(tmp_path / "forecasts.parquet", lambda tmp: tmp.write_bytes(b"PAR1"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([writing.name, mine.name, "forecasts.parquet"])
