"""Small renderers for Prefect artifacts (Markdown shown in the UI)."""

from __future__ import annotations

import polars as pl


def markdown_table(frame: pl.DataFrame, float_format: str = "{:.4g}") -> str:
    """A GitHub-style Markdown table of `frame` (None shown as empty)."""

    def cell(v: object) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return float_format.format(v)
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * frame.width]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join(lines)
