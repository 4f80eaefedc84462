"""`nightcast`: the command line.

Errors a user can fix (NightcastError) print as one line without a traceback
and exit with status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import date
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from flows import console_log, prefect_env
from flows.settings import load_settings, to_toml
from nightcast.errors import ConfigError, NightcastError
from nightcast.words import count

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


# A few lines a user can copy, under each command's --help (a new user's review: none had an example).
EXAMPLES = {
    "run": [
        "nightcast run                                        # the bundled sample, offline",
        "nightcast run --path prices.csv --tickers AAPL MSFT  # your file (or a saved yf.download frame)",
        "nightcast run --source yfinance --tickers AAPL MSFT --out /srv/forecasts",
        "nightcast run --asof 2014-12-01                      # as of a past session, from data up to it",
    ],
    "replay": ["nightcast replay --start 2014-11-03 --end 2014-12-31   # then: nightcast record --replay"],
    "record": ["nightcast record --by-ticker", "nightcast record --replay --asof 2014-12-15"],
    "ingest": [
        "nightcast ingest --source yfinance --tickers AAPL MSFT NVDA",
        "nightcast ingest --path prices.parquet --lake /srv/lake",
    ],
    "backtest": [
        "nightcast backtest --test-start 2012-01-01 --horizons 1,5 --refit-every 63",
        "NIGHTCAST_TRAIN__EPOCHS=5 nightcast backtest --refit-every 0 --out /tmp/bt  # fit once, quick",
    ],
    "train": ["nightcast train --path prices.csv"],
    "ui": [
        "nightcast ui                      # then, in another shell:",
        "PREFECT_API_URL=http://127.0.0.1:4200/api nightcast run",
    ],
    "serve": [
        "PREFECT_API_URL=http://127.0.0.1:4200/api nightcast serve --source yfinance --tickers AAPL MSFT",
        "PREFECT_API_URL=http://127.0.0.1:4200/api nightcast serve --pool nightcast   # then: prefect worker start "
        "--pool nightcast",
    ],
    "config": [
        "nightcast config --config nightcast.toml",
        "NIGHTCAST_TRAIN__EPOCHS=5 nightcast config",
        "nightcast config --changed --source yfinance --tickers AAPL MSFT > nightcast.toml",
    ],
}


def _epilog(command: str) -> str:
    lines = EXAMPLES.get(command, [])
    return ("examples:\n" + "".join(f"  {line}\n" for line in lines) + "\n" if lines else "") + SETTINGS_HELP


def _common_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, metavar="FILE", help="TOML settings file")
    p.add_argument("-v", "--verbose", action="store_true", help="print the resolved settings first")


def _source_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", choices=["sample", "file", "yfinance"], help="price source (default: sample)")
    p.add_argument(
        "--path",
        type=Path,
        metavar="FILE",
        help="price file (CSV or Parquet): long layout date,ticker,close[,open,high,low,adj_close,volume] or "
        "wide layout date + one adjusted-close column per ticker, or a yf.download frame saved with to_csv or "
        "to_parquet; implies --source file",
    )
    p.add_argument("--tickers", nargs="+", metavar="TICKER", help="tickers to use (default: all in the source)")


def _out_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="output directory (default: outputs), which runs write and record reads: forecasts in DIR/forecasts "
        "and DIR/ledger, backtests in DIR/backtest, replays in DIR/replay",
    )


def _runner_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runner", choices=["threads", "dask"], help="task runner (default: threads)")
    p.add_argument("--dask-address", metavar="ADDR", help="existing Dask scheduler, e.g. tcp://10.0.0.5:8786")


def _changed_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--changed",
        action="store_true",
        help="only the settings that differ from the defaults: a nightcast.toml saved from this keeps taking a "
        "newer nightcast's defaults for the rest (one saved from every setting freezes today's)",
    )


def _pool_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pool",
        metavar="NAME",
        help="register the deployments on this Prefect process work pool (made if missing) and return, instead of "
        "serving them here",
    )


def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--asof",
        metavar="DATE",
        help="replay the night of a past date, YYYY-MM-DD: every stage sees only data up to it; outputs go to "
        "<out>/replay, apart from what was published live",
    )


def _replay_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start", metavar="DATE", required=True, help="first night, YYYY-MM-DD")
    p.add_argument("--end", metavar="DATE", required=True, help="last night, YYYY-MM-DD")


def _record_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--asof", metavar="DATE", help="the record as it stood on DATE (default: everything known)")
    p.add_argument("--by-ticker", action="store_true", help="also print the per-ticker rows")
    p.add_argument(
        "--replay", action="store_true", help="the record of replayed nights (outputs/replay) instead of live ones"
    )


def _ingest_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lake", type=Path, metavar="DIR", help="lake directory (default: paths.lake_dir, <data dir>/lake)")


def _backtest_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--test-start",
        metavar="DATE",
        help="first forecast origin, YYYY-MM-DD (default: the last windows.test_days dates with known targets)",
    )
    p.add_argument(
        "--test-end",
        metavar="DATE",
        help="last forecast origin, YYYY-MM-DD (default: the last origin whose longest-horizon target is known)",
    )
    p.add_argument("--horizons", metavar="H,H", help="forecast horizons, e.g. 1,5 (default: 1,2,3,4,5)")
    p.add_argument(
        "--refit-every", type=int, metavar="N", help="trading days between refits; 0 = fit once (default 63)"
    )
    p.add_argument(
        "--cold-start",
        action="store_true",
        default=None,  # absent leaves backtest.warm_start to the settings
        help="refit from fresh weights instead of the previous fold's",
    )


# name: (summary in the command list, description, flag groups after --config and --verbose)
COMMANDS: dict[str, tuple[str, str, tuple[Callable[[argparse.ArgumentParser], None], ...]]] = {
    "run": (
        "run the nightly job once: ingest, evaluate, refit, forecast, publish, score the ledger",
        "Run the nightly job once and print the evaluation table, the live record and the files written. "
        "The recipe is judged out of sample on the last windows.test_days origins; the model that publishes is "
        "the same recipe refit on every label realised by the as-of date.",
        (_source_flags, _out_flag, _runner_flags, _run_flags),
    ),
    "replay": (
        "run the nightly as of every session between two dates, retraining only when the champion rules say so",
        "Bring the lake up to date once, then run the nightly as of each session from --start to --end that has "
        "data, in order, each from data up to its night only. Replayed nights are kept apart from what was "
        "published live: outputs under <out>/replay, champion decisions under <models>/replay. The replay ends "
        "with the live record its nights would have had (`nightcast record --replay`).",
        (_source_flags, _out_flag, _runner_flags, _replay_flags),
    ),
    "record": (
        "print the live record: every published forecast whose target date has passed, scored",
        "Score the ledger (outputs/ledger; replayed nights: outputs/replay/ledger) against the lake's adjusted "
        "closes: per horizon, pooled and per ticker, the MSE ratio to the random walk on the same forecasts, hit "
        "rate beside 'always up', Diebold-Mariano p, interval coverage and counts. Reads files only; starts no "
        "Prefect.",
        (_out_flag, _record_flags),
    ),
    "ingest": (
        "bring the Parquet lake up to date from a source and print a per-ticker summary",
        "Fetch (yfinance, incrementally from ingest.overlap_days before each ticker's last stored date, to catch "
        "revisions) or load (file, sample) prices, "
        "validate them, and upsert them into the lake. Bad tickers are quarantined, never the whole run; "
        "when yfinance is unreachable the stored lake is kept and its staleness reported. Exits 1 when no "
        "ticker could be updated.",
        (_source_flags, _runner_flags, _ingest_flags),
    ),
    "backtest": (
        "walk-forward backtest of the model, its combination, its LSTM ablation and the baselines on identical origins",
        "Refit every N trading days on labels realised before each refit, forecast every trading day of the "
        "test span, and write predictions.*, metrics.*, cross_section.*, folds.*, quantile_scores.*, "
        "coverage_by_volatility.*, volatility_qlike.*, PNG plots and report.md into <out>/backtest (default: "
        "outputs/backtest).",
        (_source_flags, _out_flag, _runner_flags, _backtest_flags),
    ),
    "train": (
        "evaluate a challenger now; it replaces the champion only by beating it out of sample",
        "Ingest, check data health, build features, evaluate a challenger recipe on the last windows.test_days "
        "origins beside the champion's evaluation fit (out of sample for both), and refit the winner on every "
        "realised label; the nightly publishes with the champion.",
        (_source_flags, _runner_flags),
    ),
    "ui": (
        "start a local Prefect server and UI (on schedule.ui_host, 127.0.0.1 by default) for nightcast's runs",
        "Starts `prefect server start` on schedule.ui_host:ui_port with its database in data/prefect and "
        "analytics off, waits until it answers, and keeps it running until Ctrl-C. Point runs at it with "
        "PREFECT_API_URL=http://<ui_host>:<ui_port>/api (by default http://127.0.0.1:4200/api).",
        (),
    ),
    "serve": (
        "register the nightly and weekly-backtest deployments and run them on their schedules",
        "Serves a `nightly` deployment (schedule.nightly_cron in schedule.timezone) and a `weekly-backtest` "
        "deployment until Ctrl-C, each run with the settings resolved now (file, environment and these flags; "
        "paths made absolute; on the threads runner): restart it after changing them. With --pool, registers them "
        "on a Prefect process work pool instead and returns, for `prefect worker start --pool NAME` (on any "
        "machine with nightcast installed) to run. Needs a running server: start `nightcast ui` and set "
        "PREFECT_API_URL.",
        (_source_flags, _out_flag, _pool_flag),
    ),
    "config": (
        "print the resolved settings as TOML",
        "Print every setting, resolved from defaults, file, environment and flags, as TOML.",
        (_source_flags, _out_flag, _runner_flags, _changed_flag),
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nightcast",
        description=DESCRIPTION,
        epilog=SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"nightcast {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.commands = {}  # each command's own parser: an unknown flag is answered with that command's usage
    for name, (summary, description, groups) in COMMANDS.items():
        p = parser.commands[name] = sub.add_parser(
            name,
            help=summary,
            description=description,
            epilog=_epilog(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for add in (_common_flags, *groups):
            add(p)
    return parser


def _error(message: str) -> None:
    """One line on stderr, printed literally: rule names like [too_short] are not rich markup, and a long
    message is not broken at the console's width (140 columns when piped) but left to the terminal to wrap."""
    err_console.print(Text("error: ", style="red") + Text(message), highlight=False, soft_wrap=True)


def _version() -> str:
    from nightcast.version import package_version

    return package_version()


def _date(flag: str, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{flag}: expected a date like 2014-07-01, got {value!r}") from None


def _horizons(value: str) -> list[int]:
    try:
        return [int(h) for h in value.split(",") if h.strip()]
    except ValueError:
        raise ConfigError(f"--horizons: expected comma-separated integers like 1,5, got {value!r}") from None


def _always(value: Any) -> Callable[[Any], Any]:
    return lambda _: value


# Every flag that sets a setting: (argparse dest, settings path, converter). A later row wins: the kind that
# --path or --dask-address implies comes first, so an explicit --source or --runner agreeing with it stands
# (one that contradicts it is an error: `_contradictions`).
SETTING_FLAGS: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("path", "source.kind", _always("file")),
    ("dask_address", "runner.kind", _always("dask")),
    ("source", "source.kind", str),
    ("path", "source.path", Path),
    ("tickers", "source.tickers", list),
    ("out", "paths.out_dir", Path),
    ("lake", "paths.lake_dir", Path),
    ("runner", "runner.kind", str),
    ("dask_address", "runner.dask_address", str),
    ("test_start", "backtest.test_start", str),
    ("test_end", "backtest.test_end", str),
    ("refit_every", "backtest.refit_every", int),
    ("cold_start", "backtest.warm_start", _always(False)),
    ("horizons", "features.horizons", _horizons),
)


# flag, the kind it needs, the flag that names the kind: `--path x --source sample` ran the sample and ignored
# the file without a word (a new user's review)
_NEEDS = (("path", "file", "source"), ("dask_address", "dask", "runner"))


def _contradictions(args: argparse.Namespace) -> None:
    for dest, kind, chooser in _NEEDS:
        chosen = getattr(args, chooser, None)
        if getattr(args, dest, None) is not None and chosen is not None and chosen != kind:
            flag, other = "--" + dest.replace("_", "-"), "--" + chooser
            raise ConfigError(f"{flag} is only read with {other} {kind}, but {other} is {chosen}: drop one of them")


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The settings the flags set, nested by section as `load_settings` takes them."""
    _contradictions(args)
    out: dict[str, dict[str, Any]] = {}
    for dest, path, convert in SETTING_FLAGS:
        value = getattr(args, dest, None)  # each command carries only its own flags
        if value is not None:
            section, key = path.split(".")
            out.setdefault(section, {})[key] = convert(value)
    return out


def _print_ingest(report) -> None:
    table = Table(title=f"Ingest summary (reference date {report.reference})")
    columns = ("ticker", "rows added", "revised", "filled", "first date", "last date", "behind", "repaired")
    for col in (*columns, "status", "reason"):
        numeric = col in ("rows added", "revised", "filled", "behind", "repaired")
        table.add_column(col, justify="right" if numeric else "left", overflow="fold")
    colour = {"ok": "green", "stale": "yellow", "quarantined": "red", "failed": "red"}
    # context-only series (the market family's, never forecast) last, marked as such
    rows = [(r, "") for r in report.summary.iter_rows(named=True)]
    rows += [(r, " (context)") for r in report.context.iter_rows(named=True)]
    for r, role in rows:
        table.add_row(
            # literally: a ticker cell of a price file is anyone's text ("[/x]" crashed the table as markup)
            Text((r["ticker"] if r["status"] != "quarantined" else repr(r["ticker"]).strip("'")) + role),
            str(r["rows_added"]),
            str(r["rows_revised"]),
            str(r["rows_filled"]),
            str(r["first_date"] or ""),
            str(r["last_date"] or ""),
            "" if r["behind"] is None else str(r["behind"]),
            str(r["repaired"]),
            f"[{colour[r['status']]}]{r['status']}[/]",
            Text(r["reason"] or ""),  # literally: rule names like [non_numeric] are not markup
        )
    console.print(table)


def _rich_table(frame, columns, title: str) -> Table:
    """A results table (`forecasting.results`) for the terminal: the same headings and rounding as the
    Markdown reports, the ratio to the random walk green below 1 and red above."""
    from forecasting.results import columns_of, rows_as_text

    table = Table(title=title)
    for c in columns_of(frame, columns):
        table.add_column(c.label, justify="left" if c.key in ("model", "ticker") else "right")
    ratio_at = frame.columns.index("mse_ratio") if "mse_ratio" in frame.columns else None
    for raw, cells in zip(frame.iter_rows(), rows_as_text(frame, columns), strict=True):
        if ratio_at is not None and raw[ratio_at] is not None:
            cells[ratio_at] = f"[{'green' if raw[ratio_at] < 1 else 'red'}]{cells[ratio_at]}[/]"
        table.add_row(*cells)
    return table


_FOLD_COLUMNS = ("refit_date", "train_samples", "val_samples", "origins", "neural_fit_s")


def _folds_table(folds) -> Table:
    """One row per refit: samples, origins, the networks' fit seconds and epochs (`folds.*` names them so, with
    '_' for the spaces here, and adds each model's seconds). Every column at once was wider than a terminal
    and cut each header to a few letters (a new user's review)."""
    shown = [c for c in folds.columns if c in _FOLD_COLUMNS or c.endswith("_epochs")]
    title = "Refits (folds.*, which adds each model's seconds)"
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False)
    rows = [["" if v is None else str(v) for v in row] for row in folds.select(shown).iter_rows()]
    for k, c in enumerate(shown):
        header = c.replace("_", " ")
        # as wide as its longest word or value: narrower, rich cuts them
        widest = max([len(w) for w in header.split()] + [len(r[k]) for r in rows])
        table.add_column(header, justify="right", min_width=widest, max_width=widest)
    for row in rows:
        table.add_row(*row)
    return table


def _print_across_tickers(path) -> None:
    """The backtest judged across tickers (rank IC, long-short after costs, up/down AUC), from its file."""
    import polars as pl

    from forecasting.results import CROSS_SECTION_COLUMNS, cross_section_view

    view = cross_section_view(pl.read_parquet(path))
    if not view.is_empty():
        console.print(_rich_table(view, CROSS_SECTION_COLUMNS, "Across tickers (per date, then averaged)"))


def _metrics_table(metrics, title: str) -> Table:
    """Pooled per-horizon rows: each model's MSE, ratio to the random walk, hit rate, DM test, coverage."""
    from forecasting.results import EVALUATION_COLUMNS, evaluation_table

    return _rich_table(evaluation_table(metrics), EVALUATION_COLUMNS, title)


def _record_table(record, title: str, by_ticker: bool = False) -> Table:
    """The live record: per horizon (and ticker), the published forecasts scored against what happened."""
    from forecasting.results import RECORD_COLUMNS, record_table

    return _rich_table(record_table(record, by_ticker), RECORD_COLUMNS, title)


def _print_result(result, elapsed: float) -> None:
    console.print(
        _metrics_table(
            result.metrics,
            f"Out-of-sample evaluation of the recipe {result.test_start} .. {result.test_end} (forward log returns, "
            "days its evaluation fit never trained or early-stopped on)",
        )
    )
    published = result.publishing.name  # the model, alone or combined with the baselines (publish.forecast)
    flagged = [h for h, s in result.sources.items() if not s.skill and s.model == published]
    worse = [h for h, s in result.sources.items() if s.worse]
    replaced = {h: s.model for h, s in result.sources.items() if s.model != published}
    if flagged:
        console.print(
            f"[bold red]no skill[/] at horizons {flagged}: not significantly better than the random walk; "
            "forecasts for them carry skill=false"
        )
    if worse:
        console.print(f"[bold red]significantly worse than the random walk[/] at horizons {worse}")
    if replaced:
        console.print(
            "published a baseline instead of the model (publish.guardrail) at horizons "
            + ", ".join(f"{h} ({s})" for h, s in replaced.items())
        )
    console.print(
        "ratio < 1 beats the random walk (zero return); a negative DM stat with p < 0.05 makes that "
        "significant (a positive one: significantly worse)."
    )
    if result.quarantined:
        console.print("[yellow]quarantined:[/]")
        for reason in result.quarantined.values():
            console.print(f"  {reason}", markup=False)
    if result.stale:
        console.print(
            "[yellow]stale, not forecast:[/] "
            + ", ".join(f"{t} ({count(n, 'session')} behind)" for t, n in result.stale.items())
        )
    console.print(f"model: {result.decision}", markup=False)
    for problem in result.health:
        console.print(f"[yellow]data health:[/] {problem}")
    console.print(result.attention_summary, markup=False)
    if result.record.height:
        console.print(_record_table(result.record, f"Live record as of {result.asof} (published forecasts, scored)"))
    console.print(_waiting(result.waiting, result.unpriced))
    console.print(
        f"as-of {result.asof}: {result.forecasts.height} forecasts{_by_source(result.forecasts)}; model "
        f"{result.model_version}, trained through {result.trained_through}; recipe evaluated by "
        f"{result.evaluation_version}"
    )
    if _baselines_only(result.forecasts):
        console.print(
            "[yellow]no forecast is the model's:[/] the combination gives it no weight at any horizon (chosen on "
            "its validation span), so every forecast is a baseline's (run.json: published_as)"
        )
    console.print("written:")
    for p in [*result.paths, result.checkpoint]:
        console.print(f"  {p}")
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items())
    console.print(f"done in {elapsed:.1f}s ({stages})")


def _by_source(forecasts) -> str:
    """(by source: combined 60, random_walk 40): what the forecasts are, from their `source_model` (a horizon
    where the combination gives the network no weight is labelled with the baseline it publishes)."""
    if forecasts.is_empty() or "source_model" not in forecasts.columns:
        return ""
    counts = forecasts.group_by("source_model").len().sort("source_model")
    return " (by source: " + ", ".join(f"{m} {n}" for m, n in counts.iter_rows()) + ")"


def _baselines_only(forecasts) -> bool:
    from forecasting.names import Model

    if forecasts.is_empty() or "source_model" not in forecasts.columns:
        return False
    return set(forecasts["source_model"].unique().to_list()) <= {str(Model.RANDOM_WALK), str(Model.HIST_MEAN)}


def _waiting(waiting: int, unpriced: int) -> str:
    text = f"{waiting} published forecasts still wait for their target date"
    return text + (f"; {unpriced} came due without an adjusted close in the lake to score them" if unpriced else "")


def _record(settings, asof, by_ticker: bool, replay: bool) -> int:
    """`nightcast record`: the ledger scored against the lake, from files only."""
    from forecasting import ledger, live

    paths = settings.paths.for_replay() if replay else settings.paths
    if not paths.out_dir.is_dir():
        if replay:
            raise NightcastError(f"no replay has been run yet (none at {paths.out_dir}): `nightcast replay` makes one")
        raise NightcastError(f"no outputs directory at {paths.out_dir}: is --out (paths.out_dir) right?")
    book = live.score_ledger(paths.out_dir / "ledger", paths.lake, asof)
    if book.ledger.is_empty():
        first = ledger.first_asof(paths.out_dir / "ledger")
        if first is not None:  # forecasts, only none by --asof
            console.print(
                f"the ledger ({paths.out_dir / 'ledger'}) holds no forecast made by {asof}: its first is of {first}"
            )
            return 0
        hint = "nightcast replay" if replay else "nightcast run (or nightcast record --replay for replayed nights)"
        console.print(f"the ledger ({paths.out_dir / 'ledger'}) holds no forecast yet: {hint}")
        return 0
    record = live.live_record(book.scored)
    first, last = book.ledger["asof_date"].min(), book.ledger["asof_date"].max()
    kind = "replayed" if replay else "published"
    console.print(_record_table(record, f"Live record: forecasts {kind} {first} .. {last}, scored against the lake"))
    if by_ticker:
        console.print(_record_table(record, "per ticker", by_ticker=True))
    console.print(f"{book.scored.height} forecasts scored; " + _waiting(book.waiting, book.unpriced) + ".")
    console.print(
        "ratio < 1 beats the random walk on the same forecasts; 'always up' is the directional baseline.",
        highlight=False,
    )
    return 0


def _replay(settings, start, end) -> int:
    from flows.replay import replay_flow
    from flows.tasks import task_runner

    result = replay_flow.with_options(task_runner=task_runner(settings))(settings, start, end)
    nights = result.nights
    console.print(
        f"replayed {nights.height} nights {nights['night'].min()} .. {nights['night'].max()}: "
        f"{result.retrains} retrains, {result.seconds:.0f} s"
    )
    for r in nights.filter(nights["retrained"] | nights["decision"].str.starts_with("failed")).iter_rows(named=True):
        console.print(f"  {r['night']}: {r['decision']}", markup=False, highlight=False)
    last = result.last
    console.print(_record_table(last.record, f"Live record of the replayed nights as of {last.asof}"))
    console.print(_waiting(last.waiting, last.unpriced))
    console.print(f"written under {settings.paths.for_replay().out_dir} (nightcast record --replay prints it again)")
    return 0


def _ui(settings) -> int:
    from flows.deploy import start_server, stop_server, wait_healthy

    log_file = settings.paths.data_dir / "prefect" / "server.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a plain `kill` also stops the server it started
    process = start_server(settings, log_file)
    try:
        url = wait_healthy(settings, process)
        console.print(f"Prefect UI: {url.removesuffix('/api')}   (server log: {log_file})")
        console.print(f"In another shell:  export PREFECT_API_URL={url}  then  make run  or  nightcast serve")
        console.print("Ctrl-C stops the server.")
        process.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        stop_server(process)


def _interrupt(signum, frame) -> None:
    """Ctrl-C, SIGTERM or a closed terminal: stop a fit that runs in a worker thread too, then unwind the main
    thread (so Prefect records the run as crashed and stops its temporary server on the way out)."""
    train = sys.modules.get("forecasting.train")
    if train is not None:
        train.STOP.set()
    console_log.INTERRUPTED.set()  # Prefect's crash records of this stop are the UI's: the CLI says it once
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is not threading.main_thread():  # signals can only be handled there
        return _main(argv)
    # a signal the caller chose to ignore (nohup: SIGHUP; a background job: SIGINT) stays ignored
    signals = [sig for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if signal.getsignal(sig) != signal.SIG_IGN]
    previous = {sig: signal.signal(sig, _interrupt) for sig in signals}
    try:
        code = _main(argv)
    except KeyboardInterrupt:  # a second one while the first one's stop was being reported: stopped all the same
        code = 130
    finally:
        # the program itself, stopped by a signal, has said so and exits 130: another SIGINT from here on (a second
        # Ctrl-C, or Prefect interrupting the main thread from a worker as it shuts down) ends it at once with that
        # status. Installed in place of the default handler, never after it: the default's KeyboardInterrupt,
        # escaping at exit, ended the process by the signal itself (status -2, seen in parallel test suites)
        stopped = console_log.INTERRUPTED.is_set() and argv is None
        for sig, handler in previous.items():
            signal.signal(sig, _exit_interrupted if stopped and sig == signal.SIGINT else handler)
        train = sys.modules.get("forecasting.train")
        if train is not None:
            train.STOP.clear()  # an interrupt stops this command, not the next one in the same process
        console_log.INTERRUPTED.clear()
    return code


def _exit_interrupted(signum, frame) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


FLOW_COMMANDS = ("run", "replay", "train", "backtest", "ingest")


@contextmanager
def _started(settings, command: str) -> Iterator[float]:
    """Check what can be known to fail before anything starts; for a flow command, take the data directory's
    lock and start Prefect's temporary server; yield the start time. The lock is held from here to the end of
    the command, so of two runs started at the same instant the second is refused in a second, before its
    Prefect server starts, not by its flow 20 s later with a Failed flow run left in the UI."""
    from flows.preflight import preflight

    preflight(settings, command, settings.paths.backtest if command == "backtest" else None)
    with ExitStack() as held:
        if command in FLOW_COMMANDS:
            from flows.lock import data_lock

            held.enter_context(data_lock(settings.paths.data_dir, command))
        started = time.perf_counter()
        if command in FLOW_COMMANDS:
            from flows.deploy import start_ephemeral_server

            start_ephemeral_server()
        yield started


def _config_command(settings, args: argparse.Namespace) -> int:
    # Written as is, not through rich: its console wraps long lines at its width (140 when piped), and a string
    # split across lines is not TOML (`config --changed > nightcast.toml` with a long --out path broke).
    sys.stdout.write(to_toml(settings, changed_only=args.changed) + "\n")
    return 0


def _record_command(settings, args: argparse.Namespace) -> int:
    return _record(settings, _date("--asof", args.asof), args.by_ticker, args.replay)


def _run_command(settings, args: argparse.Namespace) -> int:
    asof = _date("--asof", args.asof)
    if asof is not None and asof > date.today():
        raise ConfigError(f"--asof {asof} is in the future: a night can only be replayed from data it had")
    from flows.preflight import before_the_data  # (polars: only for a run that names a night)

    before_the_data(settings, asof, "--asof")
    with _started(settings, "run") as started:
        from flows.nightly import MarketClosed, nightly
        from flows.tasks import task_runner

        result = nightly.with_options(task_runner=task_runner(settings))(settings, asof=asof)
        if isinstance(result, MarketClosed):
            console.print(result.message)
            return 0
        _print_result(result, time.perf_counter() - started)
    return 0


def _replay_command(settings, args: argparse.Namespace) -> int:
    start, end = _date("--start", args.start), _date("--end", args.end)
    if end < start:
        raise ConfigError(f"--end {end} is before --start {start}")
    from flows.preflight import before_the_data

    before_the_data(settings, start, "--end", until=end)
    with _started(settings, "replay"):
        return _replay(settings, start, end)


def _train_command(settings, args: argparse.Namespace) -> int:
    with _started(settings, "train"):
        from flows.tasks import task_runner
        from flows.train import train_flow

        choice = train_flow.with_options(task_runner=task_runner(settings))(settings)
    console.print(_metrics_table(choice.evaluation.metrics, "Out-of-sample evaluation of the champion's recipe"))
    console.print(f"model: {choice.decision}", markup=False)
    for problem in choice.health:
        console.print(f"[yellow]data health:[/] {problem}")
    return 0


def _ingest_command(settings, args: argparse.Namespace) -> int:
    with _started(settings, "ingest") as started:
        from flows.ingest import ingest_flow  # Prefect is imported only when a flow runs

        report = ingest_flow(settings)
    _print_ingest(report)
    console.print(f"lake: {settings.paths.lake}  ({time.perf_counter() - started:.1f}s)")
    requested = report.summary["ticker"].to_list()
    if requested and all(t in report.fetch_failed or t in report.quarantined for t in requested):
        # a scheduler must see this: nothing was brought up to date (the lake itself is untouched)
        reasons = "; ".join(sorted({why[:160] for why in report.fetch_failed.values()})) or "all quarantined"
        _error(f"no ticker could be updated: {reasons}")
        return 1
    return 0


def _backtest_command(settings, args: argparse.Namespace) -> int:
    with _started(settings, "backtest") as started:
        from flows.backtest import backtest_flow
        from flows.tasks import task_runner

        result, paths = backtest_flow.with_options(task_runner=task_runner(settings))(settings)
    console.print(_metrics_table(result.metrics, f"Walk-forward backtest {result.test_start} .. {result.test_end}"))
    console.print(
        "ratio < 1 beats the random walk (zero return); a negative DM stat with p < 0.05 makes that "
        "significant (a positive one: significantly worse)."
    )
    across = next((p for p in paths if p.name == "cross_section.parquet"), None)
    if across is not None:
        _print_across_tickers(across)
    console.print(_folds_table(result.folds))
    console.print("written:\n  " + "\n  ".join(str(p) for p in paths))
    console.print(f"done in {time.perf_counter() - started:.1f}s (backtest {result.seconds:.1f}s)")
    return 0


def _ui_command(settings, args: argparse.Namespace) -> int:
    with _started(settings, "ui"):
        return _ui(settings)


def _serve_command(settings, args: argparse.Namespace) -> int:
    with _started(settings, "serve"):
        from flows.deploy import register_on_pool, serve

        if not args.pool:
            serve(settings)
            return 0
        names = register_on_pool(settings, args.pool)
    console.print(f"registered {' and '.join(names)} on work pool {args.pool!r}", markup=False)
    console.print(
        f"run them with a worker (PREFECT_API_URL set as here): prefect worker start --pool {args.pool}",
        markup=False,
    )
    return 0


HANDLERS: dict[str, Callable[[Any, argparse.Namespace], int]] = {
    "run": _run_command,
    "replay": _replay_command,
    "record": _record_command,
    "ingest": _ingest_command,
    "backtest": _backtest_command,
    "train": _train_command,
    "ui": _ui_command,
    "serve": _serve_command,
    "config": _config_command,
}


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # argparse would print the top-level usage, which lists commands, not this command's flags
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    console_log.install()  # a user error is the one `error:` line below, not six Prefect copies before it
    try:
        settings = load_settings(args.config, overrides=_overrides(args))
        prefect_env.configure(settings.paths.data_dir)  # before any command imports Prefect
        if args.verbose and args.command != "config":
            console.print("[bold]nightcast settings[/]")
            console.print(to_toml(settings), markup=False, highlight=False)
        return HANDLERS[args.command](settings, args)
    except NightcastError as exc:
        _error(str(exc))
        return 2
    except OSError as exc:  # the disk filled up, a permission changed mid-run: the machine, not a bug to trace
        if getattr(args, "verbose", False):
            err_console.print_exception()
        where = f": {exc.filename}" if exc.filename else ""
        _error(f"{exc.strerror or exc}{where}")
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted: stopped; every file is replaced atomically, so nothing is half-written")
        return 130


if __name__ == "__main__":
    sys.exit(main())
