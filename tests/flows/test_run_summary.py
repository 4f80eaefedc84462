"""The run summary's data warnings: repairs the published forecasts inherit, kept with what was published."""

from datetime import date

import polars as pl

from features.prices.ingest import IngestReport
from features.prices.validate import Finding
from flows.run_summary import data_warnings, warnings_markdown


def test_only_the_findings_marked_as_warnings_are_data_warnings():
    carried = Finding("AAA", date(2024, 1, 5), "bad_price", "repaired", "1 carried to the end", warn=True)
    findings = [
        Finding("BBB", date(2024, 1, 2), "bad_price", "repaired", "1 invalid closes carried forward"),
        carried,
        Finding("CCC", None, "ticker_symbol", "quarantined", "not a symbol"),
    ]
    warnings = data_warnings(IngestReport(pl.DataFrame(), pl.DataFrame(), findings))
    assert warnings == [str(carried)] and warnings[0].startswith("AAA 2024-01-05 [bad_price] repaired")
    text = warnings_markdown(warnings)
    assert "**Data warnings**" in text and f"- {carried}" in text
    assert warnings_markdown([]) == ""
