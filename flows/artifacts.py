"""What a run leaves in the Prefect UI: Markdown summaries, tables and images the UI renders.

Images travel inside the artifact as data URIs (a local file:// link does not open from a browser), so the
heatmap and the plots show on the run page whatever machine serves the UI.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import polars as pl

from forecasting.results import (
    EVALUATION_COLUMNS,
    across_tickers_markdown,
    evaluation_table,
    markdown_table,
    markdown_text,
)


def nightly_markdown(
    metrics: pl.DataFrame,
    across: pl.DataFrame,
    forecasts: pl.DataFrame,
    quarantined: dict[str, str],
    version: str,
    decision: str,
    health: list[str],
    attention: str,
    publishing: str = "",
) -> str:
    """The nightly run's summary: the evaluation beside the baselines, the model decision, what published at
    each horizon (`publishing`: a Markdown table), the forecasts."""
    first = forecasts.row(0, named=True) if forecasts.height else {}
    lines = [
        f"# nightcast nightly — as of {first.get('asof_date')}",
        "",
        f"published model `{version}`, trained through {first.get('trained_through')}; its recipe evaluated out "
        f"of sample on {first.get('eval_start')} .. {first.get('eval_end')} (`{first.get('eval_version')}`)",
        "",
        markdown_table(evaluation_table(metrics), EVALUATION_COLUMNS),
    ]
    lines += ["", "## Across tickers", "", across_tickers_markdown(across)]
    lines += ["", "## Model", "", decision] + [f"- data health: {p}" for p in health]
    if publishing:
        lines += ["", "## What published", "", publishing]
    if quarantined:
        lines += ["", "## Quarantined tickers", ""] + [f"- {markdown_text(v)}" for v in quarantined.values()]
    lines += [
        "",
        "## Forecasts",
        "",
        "| ticker | horizon | target date | last price | predicted price | interval | skill | from |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in forecasts.iter_rows(named=True):
        band = "" if r["pred_lower"] is None else f"{r['pred_lower']:.2f} .. {r['pred_upper']:.2f}"
        lines.append(
            f"| {r['ticker']} | {r['horizon']} | {r['target_date']} | {r['last_price']:.2f} | "
            f"{r['pred_price']:.2f} | {band} | {r['skill']} | {r['source_model']} |"
        )
    lines += ["", "## Attention", "", attention]
    return "\n".join(lines)


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def image_artifact(png: Path, key: str, description: str) -> None:
    """A PNG on the run's Artifacts tab (and the Artifacts page, by `key`)."""
    from prefect.artifacts import create_image_artifact

    create_image_artifact(image_url=data_uri(png), key=key, description=description)


def inline_images(markdown: str, folder: Path) -> str:
    """`![name](file.png)` links relative to `folder` replaced by the images themselves, for the UI."""

    def embed(match: re.Match) -> str:
        path = folder / match.group(2)
        return f"![{match.group(1)}]({data_uri(path)})" if path.suffix == ".png" and path.exists() else match.group(0)

    return re.sub(r"!\[([^\]]*)\]\(([^)\s]+)\)", embed, markdown)


def files_markdown(paths: list[Path], title: str) -> str:
    """The files a run wrote, as text to copy (no links: a browser will not open local paths from the UI)."""
    return "\n".join([f"# {title}", "", *(f"- `{p}`" for p in paths)])


def forecast_table(coverage: float) -> dict[str, str]:
    """Forecast columns shown in the UI and their headings, led by what a reader looks for."""
    band = f"{coverage:.0%}"
    return {
        "ticker": "ticker",
        "target_date": "target date",
        "horizon": "horizon",
        "last_price": "last price",
        "pred_price": "predicted price",
        "pred_lower": f"low ({band})",
        "pred_upper": f"high ({band})",
        "skill": "skill",
        "source_model": "from",
    }


def forecast_rows(forecasts: pl.DataFrame, coverage: float) -> list[dict]:
    """The forecasts for the UI's table; ids and versions stay in the files."""
    columns = forecast_table(coverage)
    shown = forecasts.select(
        *(pl.col(c).round(2) if c.startswith(("pred_", "last_")) else pl.col(c) for c in columns)
    ).with_columns(pl.col(pl.Date).cast(pl.String))
    return shown.rename(columns).to_dicts()
