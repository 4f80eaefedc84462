"""The ingest flow and `nightcast ingest` under a real (temporary) Prefect server."""

from datetime import date

import polars as pl
import pytest

from flows.cli import main
from flows.settings import load_settings

pytestmark = pytest.mark.slow

WIDE = "date,AAA,BBB\n" + "\n".join(
    f"2024-{m:02d}-{d:02d},{'' if m == 1 else 10 + d},{20 + d}"
    for m in (1, 2, 3)
    for d in range(1, 29)
    if date(2024, m, d).weekday() < 5
)


def test_ingest_flow_and_cli(prefect_harness, tmp_path, monkeypatch):
    # The CLI's table goes to a recording console: capsys must not be active while Prefect
    # runs a flow (its log handler would keep writing to the captured stream after the test).
    from rich.console import Console

    import flows.cli

    recorder = Console(record=True, width=140)
    monkeypatch.setattr(flows.cli, "console", recorder)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "wide.csv"
    path.write_text(WIDE + "\n")
    from flows.ingest import ingest_flow

    settings = load_settings(
        None, environ={}, overrides={"source": {"kind": "file", "path": path}, "paths": {"lake_dir": tmp_path / "lake"}}
    )
    state = ingest_flow(settings, return_state=True)
    assert state.is_completed()
    report = state.result()
    rows = {r["ticker"]: r for r in report.summary.iter_rows(named=True)}
    assert rows["AAA"]["first_date"] == date(2024, 2, 1) and rows["BBB"]["first_date"] == date(2024, 1, 1)
    assert rows["AAA"]["rows_added"] == report.prices.filter(pl.col("ticker") == "AAA").height

    assert main(["ingest", "--path", str(path), "--lake", str(tmp_path / "lake")]) == 0
    out = recorder.export_text()
    assert "Ingest summary" in out and "AAA" in out and "BBB" in out
    summary_lines = [line for line in out.splitlines() if line.startswith("│ AAA") or line.startswith("│ BBB")]
    added = [[c.strip() for c in line.split("│")][2] for line in summary_lines]
    assert added == ["0", "0"]  # nothing new the second time
