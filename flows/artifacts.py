"""Small renderers for Prefect artifacts (Markdown shown in the UI)."""

from __future__ import annotations

import polars as pl

from forecasting.metrics import pooled


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


def nightly_markdown(
    metrics: pl.DataFrame,
    forecasts: pl.DataFrame,
    quarantined: dict[str, str],
    version: str,
    decision: str,
    health: list[str],
    attention: str,
) -> str:
    """The nightly run's summary: the evaluation beside the baselines, the model decision, the forecasts."""
    first = forecasts.row(0, named=True) if forecasts.height else {}
    lines = [
        f"# nightcast nightly — as of {first.get('asof_date')}",
        "",
        f"published model `{version}`, trained through {first.get('trained_through')}; its recipe evaluated out "
        f"of sample on {first.get('eval_start')} .. {first.get('eval_end')} (`{first.get('eval_version')}`)",
        "",
        "| horizon | model | MSE | ratio vs random walk | hit rate | always up | DM p |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in pooled(metrics).iter_rows(named=True):
        ratio = "" if r["mse_ratio"] is None else f"{r['mse_ratio']:.4f}"
        p = "" if r["dm_pvalue"] is None else f"{r['dm_pvalue']:.3f}"
        lines.append(
            f"| {r['horizon']} | {r['model']} | {r['mse']:.3e} | {ratio} | {r['hit_rate']:.3f} | "
            f"{r['up_rate']:.3f} | {p} |"
        )
    lines += ["", "## Model", "", decision] + [f"- data health: {p}" for p in health]
    if quarantined:
        lines += ["", "## Quarantined tickers", ""] + [f"- {v}" for v in quarantined.values()]
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
