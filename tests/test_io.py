"""nightcast.io: atomic writes, and what killed writers leave behind."""

import os
import subprocess
import sys

from nightcast.io import atomic_write, scratch_folder


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


def test_the_scratch_sweep_removes_only_folders_of_its_own_making(tmp_path):
    """A security review: with the scratch folder a link to another folder, the sweep of leftovers deleted every
    folder there untouched for a day, whatever it was."""
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "old_project").mkdir(parents=True)
    left = elsewhere / "999999999-0123456789ab"  # a killed run's, by its name: a pid that cannot be running
    left.mkdir()
    day_old = os.stat(elsewhere).st_mtime - 2 * 86_400
    for folder in (elsewhere / "old_project", left):
        os.utime(folder, (day_old, day_old))
    (tmp_path / "scratch").symlink_to(elsewhere)
    with scratch_folder(tmp_path / "scratch") as path:
        assert path.parent == tmp_path / "scratch"
    assert (elsewhere / "old_project").is_dir() and not left.exists()
