"""`nightcast`: the command line.

Errors a user can fix (NightcastError) print as one line without a traceback
and exit with status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

import flows  # noqa: F401  (sets Prefect's offline defaults before Prefect is imported)
from features.errors import NightcastError
from flows.settings import load_settings, to_toml

# Piped output (logs, CI) gets a wide fixed width instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

DESCRIPTION = """\
nightcast: scheduled, leak-free daily price forecasts.

Loads daily prices (bundled sample, a file, or yfinance), validates them into a
Parquet lake, denoises causally, builds features, trains a temporal-attention
LSTM, scores it against the random walk on the last days it never saw, and
publishes forecasts as Parquet and CSV.
"""

SETTINGS_HELP = """\
settings are read from (later wins): defaults, a TOML file (--config, else
$NIGHTCAST_CONFIG, else ./nightcast.toml), NIGHTCAST_<SECTION>__<KEY>
environment variables (e.g. NIGHTCAST_TRAIN__EPOCHS=5), then flags.
`nightcast config` prints every setting with its current value.
"""


def _add_settings_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    p.add_argument("--source", choices=["sample", "file", "yfinance"], help="price source (default: sample)")
    p.add_argument(
        "--path", type=Path, metavar="FILE", help="price file for --source file (CSV or Parquet, long layout)"
    )
    p.add_argument("--tickers", nargs="+", metavar="TICKER", help="tickers to use (default: all in the source)")
    p.add_argument("--out", type=Path, metavar="DIR", help="output directory (default: outputs)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nightcast",
        description=DESCRIPTION,
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=summary,
            description=description,
            epilog=SETTINGS_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_settings_flags(p)
        return p

    command(
        "run",
        "run the nightly job once: ingest, train, evaluate, forecast, publish",
        "Run the nightly job once and print the evaluation table and the files written.",
    )
    ingest = command(
        "ingest",
        "bring the Parquet lake up to date from a source and print a per-ticker summary",
        "Fetch (yfinance, incrementally from each ticker's last stored date) or load (file, sample) prices, "
        "validate them, and upsert them into the lake. Bad tickers are quarantined, never the whole run; "
        "when yfinance is unreachable the stored lake is kept and its staleness reported.",
    )
    ingest.add_argument("--lake", type=Path, metavar="DIR", help="lake directory (default: data/lake)")
    command(
        "config",
        "print the resolved settings as TOML",
        "Print every setting, resolved from defaults, file, environment and flags, as TOML.",
    )
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    source = {k: v for k, v in (("kind", args.source), ("path", args.path), ("tickers", args.tickers)) if v is not None}
    if args.path is not None and args.source is None:
        source["kind"] = "file"
    out: dict = {}
    if source:
        out["source"] = source
    paths = {}
    if args.out is not None:
        paths["out_dir"] = args.out
    if getattr(args, "lake", None) is not None:
        paths["lake_dir"] = args.lake
    if paths:
        out["paths"] = paths
    return out


def _print_ingest(report) -> None:
    table = Table(title=f"Ingest summary (reference date {report.reference})")
    for col in ("ticker", "rows added", "revised", "first date", "last date", "behind", "repaired", "status", "reason"):
        numeric = col in ("rows added", "revised", "behind", "repaired")
        table.add_column(col, justify="right" if numeric else "left", overflow="fold")
    colour = {"ok": "green", "stale": "yellow", "quarantined": "red", "failed": "red"}
    for r in report.summary.iter_rows(named=True):
        table.add_row(
            r["ticker"] if r["status"] != "quarantined" else repr(r["ticker"]).strip("'"),
            str(r["rows_added"]),
            str(r["rows_revised"]),
            str(r["first_date"] or ""),
            str(r["last_date"] or ""),
            "" if r["behind"] is None else str(r["behind"]),
            str(r["repaired"]),
            f"[{colour[r['status']]}]{r['status']}[/]",
            r["reason"],
        )
    console.print(table)


def _print_result(result, elapsed: float) -> None:
    table = Table(
        title=f"Out-of-sample evaluation {result.test_start} .. {result.test_end} (forward log returns, "
        "days the model never trained or early-stopped on)"
    )
    for col in ("horizon", "model MSE", "random-walk MSE", "ratio", "hit rate", "always up"):
        table.add_column(col, justify="right")
    for r in result.metrics.iter_rows(named=True):
        style = "green" if r["mse_ratio"] < 1 else "red"
        table.add_row(
            str(r["horizon"]),
            f"{r['model_mse']:.4e}",
            f"{r['baseline_mse']:.4e}",
            f"[{style}]{r['mse_ratio']:.4f}[/]",
            f"{r['hit_rate']:.3f}",
            f"{r['up_rate']:.3f}",
        )
    console.print(table)
    console.print("ratio < 1 means the model beat the random walk (zero return) on that horizon.")
    if result.quarantined:
        console.print("[yellow]quarantined:[/]")
        for reason in result.quarantined.values():
            console.print(f"  {reason}", markup=False)
    if result.stale:
        console.print(
            "[yellow]stale, not forecast:[/] "
            + ", ".join(f"{t} ({n} sessions behind)" for t, n in result.stale.items())
        )
    console.print(result.attention_summary, markup=False)
    console.print(f"as-of {result.asof}: {result.forecasts.height} forecasts, model {result.model_version}")
    console.print("written:")
    for p in [*result.paths, result.checkpoint]:
        console.print(f"  {p}")
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    console.print(f"done in {elapsed:.1f}s ({stages})")


class _NoTracebackForUserErrors(logging.Filter):
    """Prefect logs a failed task or flow with its traceback; for errors a user can fix the message is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], NightcastError):
            record.exc_info, record.exc_text = None, None
        return True


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.getLogger("nightcast").setLevel(logging.INFO)  # Prefect forwards these to the UI and console
    for name in ("prefect.task_runs", "prefect.flow_runs", "prefect.flow_engine", "prefect.task_engine"):
        logging.getLogger(name).addFilter(_NoTracebackForUserErrors())
    try:
        settings = load_settings(args.config, overrides=_overrides(args))
        if args.command == "config":
            console.print(to_toml(settings), markup=False, highlight=False)
            return 0
        console.print("[bold]nightcast settings[/]")
        console.print(to_toml(settings), markup=False, highlight=False)
        started = time.perf_counter()
        if args.command == "ingest":
            from flows.ingest import ingest_flow  # Prefect is imported only when a flow runs

            report = ingest_flow(settings)
            _print_ingest(report)
            console.print(f"lake: {settings.paths.lake}  ({time.perf_counter() - started:.1f}s)")
            return 0
        from flows.nightly import nightly

        result = nightly(settings)
        _print_result(result, time.perf_counter() - started)
        return 0
    except NightcastError as exc:
        err_console.print(f"[red]error:[/] {exc}", markup=True, highlight=False)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
