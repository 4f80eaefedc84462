"""Checks that need no data and no Prefect server: a run that cannot work says so in one line, in a second,
before Prefect's server starts or any training begins (a configured server that does not answer included)."""

from __future__ import annotations

import base64
import logging
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import date
from pathlib import Path

import polars as pl

from features.prices.calendar import check_calendar
from features.settings import held_dates
from flows import prefect_env
from flows.lock import check_free
from flows.settings import Settings
from forecasting.names import Model
from forecasting.settings import held_share
from nightcast.errors import ConfigError, SourceError

READABLE = (".csv", ".txt", ".parquet")
FLOW_COMMANDS = ("run", "replay", "train", "backtest", "ingest")
API_TIMEOUT_S = 5.0  # a server on loopback answers in milliseconds; a refused connection fails at once
RUNNER_COMMANDS = ("run", "replay", "train", "backtest")  # the flows given `tasks.task_runner`
DASK_PORT = 8786  # `dask scheduler`'s default, for the message: an address must name its port
DASK_OVER_TCP = ("tcp", "tls", "ws", "wss")  # distributed's transports a plain TCP connection can reach
HEAD_ROWS = 200  # of a price file, read before anything starts: enough to see its layout and date format


def writable_dir(path: Path, what: str) -> None:
    """`path` is a directory this process can write into, or can create: tried for real (permission bits say
    nothing of read-only or special file systems, nor of root), and whatever the try created is removed."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"{what} {path}: {existing} is a file, not a directory")
    created = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".nightcast-write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{what} {path} is not writable: {exc.strerror or exc}") from None
    finally:
        for folder in created:  # deepest first: the check leaves nothing behind
            try:
                folder.rmdir()
            except OSError:
                break


def preflight(settings: Settings, command: str, out_dir: Path | None = None) -> None:
    """Everything about a `command` that can be known to fail before it starts."""
    # `serve` stores these settings in its deployments: what would fail every scheduled run fails here, now
    runs = (*FLOW_COMMANDS, "serve")
    if command in runs and settings.source.kind == "file":
        price_file(settings)
    if command in runs:
        check_calendar(settings.publish.calendar)  # an unknown name failed after the ingest and the features
    if command in FLOW_COMMANDS:
        check_free(settings.paths.data_dir)  # another run holds it: say so now, not after Prefect starts
    if command in runs:
        writable_dir(settings.paths.data_dir, "data directory (paths.data_dir)")
        writable_dir(settings.paths.lake, "lake directory (paths.lake_dir)")
    if command in ("run", "replay", "train", "serve"):
        writable_dir(settings.paths.models, "models directory (paths.models_dir)")
    if command in ("run", "replay", "serve"):
        writable_dir(settings.paths.out_dir, "output directory (--out, paths.out_dir)")
    if command == "backtest" and out_dir is not None:
        writable_dir(out_dir, "backtest output directory (--out)")
    longest = max(settings.features.horizons)
    if command in ("run", "replay", "train", "backtest", "serve") and longest >= settings.windows.test_days:
        raise ConfigError(
            f"features.horizons: the longest horizon ({longest} sessions) must be shorter than the evaluation span "
            f"windows.test_days ({settings.windows.test_days}): no forecast of it could ever be scored there"
        )
    if command in ("run", "replay", "train", "backtest", "serve"):
        early_stopping_span(settings, command)
    if command in RUNNER_COMMANDS and settings.runner.kind == "dask" and settings.runner.dask_address:
        dask_scheduler(settings.runner.dask_address)
    if command in (*FLOW_COMMANDS, "serve"):
        prefect_api(settings, command)  # last: it reads Prefect's settings (~1 s), which the flow needs anyway


def early_stopping_span(settings: Settings, command: str) -> None:
    """The validation span leaves early stopping a date once the combination's share is held out and the longest
    horizon purged before it (`features.windows.splits_before`); else every fit fails, after the ingest."""
    # what the run scores: a backtest its models; a nightly its network and, when it publishes it, the combination
    # (forecasting.combine.Publishing.evaluated, not imported: ~1 s of imports for a check meant to take none)
    combined = [Model.COMBINED] if settings.publish.forecast == "combined" else []
    share = held_share(settings.backtest.models if command == "backtest" else combined, settings.publish)
    val_days, longest = settings.windows.val_days, max(settings.features.horizons)
    held = held_dates(val_days, share)  # (refuses a share that holds no date)
    if held > 0 and val_days - held <= longest:
        raise ConfigError(
            f"windows.val_days {val_days}: with {held} dates held for the combination's weights "
            f"(publish.combination_holdout {share}), the {val_days - held} left to early-stop on are all purged by "
            f"the longest horizon ({longest} sessions): raise windows.val_days or lower the holdout"
        )


def price_file(settings: Settings) -> None:
    """The price file exists, is a file nightcast reads, and its first rows read as the whole file will."""
    path = Path(settings.source.path)
    if not path.is_file():
        raise ConfigError(f"price file not found: {path}" if not path.exists() else f"{path} is not a file")
    if path.suffix.lower() not in READABLE:
        raise ConfigError(f"{path}: unsupported file type {path.suffix!r} (use .csv or .parquet)")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"price file {path} is not readable")
    price_file_head(settings)


def configured_api_url() -> str | None:
    """The Prefect API the flows will talk to, as Prefect resolves it (environment, .env, profile), or None:
    Prefect starts a temporary server of its own. Reads Prefect's settings; starts nothing."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def prefect_api(settings: Settings, command: str, timeout: float = API_TIMEOUT_S) -> None:
    """A configured Prefect server answers its health check; otherwise one line naming the URL and what to do,
    before any work (Prefect would only find out at the first flow run, after a minute of retries and three
    chained tracebacks). `serve` needs a server; other commands run without one when PREFECT_API_URL is unset."""
    s = settings.schedule
    local = f"http://{s.ui_host}:{s.ui_port}/api"
    url = configured_api_url()
    if url is None:
        if command == "serve":
            raise ConfigError(
                "nightcast serve needs a running Prefect server: start `nightcast ui` (or `make ui`) in another "
                f"terminal, then export PREFECT_API_URL={local}"
            )
        return
    problem = _unreachable(url, timeout)
    if problem is None:
        _let_in(url, timeout)
        return
    serves = "" if url.rstrip("/") == local else f", which serves {local}"
    remedy = f"start one with `nightcast ui` (or `make ui`{serves})"
    remedy += " for nightcast serve" if command == "serve" else ", or unset PREFECT_API_URL"
    raise ConfigError(f"no Prefect server answers at PREFECT_API_URL={shown_url(url)} ({problem}): {remedy}")


def _let_in(url: str, timeout: float) -> None:
    """A server with a password (`PREFECT_SERVER_API_AUTH_STRING`) answers its /health to anyone and every other
    call of a client without it with 401, which Prefect raised as a traceback: one line instead."""
    auth = os.environ.get("PREFECT_API_AUTH_STRING")
    try:
        with urllib.request.urlopen(_api_request(url, "admin/version", auth), timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            given = (
                "the one in PREFECT_API_AUTH_STRING is refused" if auth else "set PREFECT_API_AUTH_STRING=user:password"
            )
            raise ConfigError(f"the Prefect server at {shown_url(url)} wants a password: {given}") from None
    except (OSError, ValueError):
        return  # answered /health a moment ago: Prefect's client says what is wrong


def shown_url(url: str) -> str:
    """`url` as it may be printed: a password in it (`user:secret@host`) is masked, never echoed to a terminal
    or a CI log."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _api_request(url: str, path: str, auth: str | None = None) -> urllib.request.Request:
    """`path` of the API at `url`, with `auth` (`user:password`; by default the credentials of a
    `user:password@host` URL, which urllib reads as part of the host name) sent as HTTP basic auth."""
    plain, in_url = prefect_env.credentials_apart(url)
    request = urllib.request.Request(f"{plain.rstrip('/')}/{path}")
    if auth or in_url:
        request.add_header("Authorization", "Basic " + base64.b64encode((auth or in_url).encode()).decode())
    return request


def _unreachable(url: str, timeout: float) -> str | None:
    """Why `url`/health does not answer as a Prefect API, or None when it does. Any HTTP answer but 404 counts
    as a server (one that wants credentials, say, is Prefect's to report)."""
    try:
        with urllib.request.urlopen(_api_request(url, "health"), timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return "HTTP 404 on /health: is it the API's URL, ending in /api?"
        return None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, OSError) and reason.strerror:
            return reason.strerror.lower()
        return str(reason)
    except TimeoutError:
        return f"no answer within {timeout:.0f} s"
    except (OSError, ValueError) as exc:  # a malformed URL, a reset connection
        return str(exc) or type(exc).__name__


def dask_scheduler(address: str) -> None:
    """The Dask scheduler at `address` accepts a connection. Without this check a wrong address failed after the
    ingest, 30 s later (distributed's connect timeout), under three tracebacks from distributed and tornado; and
    with a single feature chunk, when nothing is sent to the cluster, it went unnoticed. Transports over TCP
    (tcp, tls, ws, wss; no scheme is tcp, as for distributed) are tried; others (ucx, inproc) are left to Dask."""
    where = f"the Dask scheduler at {address!r} (--dask-address, runner.dask_address)"
    url = address if "://" in address else f"tcp://{address}"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in DASK_OVER_TCP:
        return
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number
        host = port = None
    if not host or not port:  # distributed has no default port: it fails with "missing port number" later
        raise ConfigError(f"{where}: expected {parts.scheme}://HOST:PORT, e.g. tcp://127.0.0.1:{DASK_PORT}")
    try:
        socket.create_connection((host, port), timeout=API_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError(
            f"{where} does not answer: {exc.strerror or exc}; start one (`dask scheduler`, and `dask worker "
            f"{address}`), or leave the option out to run on local threads"
        ) from None
    if not _dask_handshake(url):
        raise ConfigError(
            f"{where} accepts connections but does not answer as a Dask scheduler within {API_TIMEOUT_S:.0f} s "
            f"(the dashboard's port, 8787, instead of the scheduler's, {DASK_PORT}?)"
        )


def _dask_handshake(address: str) -> bool:
    """Whether a Dask comm to `address` completes distributed's handshake in time: something else listening there
    (a web server, the dashboard) accepted the connection and then hung the run for good once a chunk was sent."""
    import asyncio

    from distributed.comm import connect

    async def handshake() -> None:
        comm = await connect(address, timeout=API_TIMEOUT_S)
        await comm.close()

    try:  # distributed's own timeout does not cover the handshake: bounded here
        asyncio.run(asyncio.wait_for(handshake(), API_TIMEOUT_S))
    except (TimeoutError, OSError):
        return False
    return True


def price_file_head(settings: Settings) -> None:
    """The price file's first rows read as the ingest will read the whole: an empty or corrupt file, a missing
    column, dates in another format fail here in a moment, not after Prefect's server has started (10-17 s)."""
    from features.prices.sources import one_symbol, read_file  # polars: only for a run that reads a file

    try:
        read_file(settings.source.path, one_ticker=one_symbol(settings.source), n_rows=HEAD_ROWS)
    except SourceError as exc:
        raise ConfigError(str(exc)) from None


def _run_data(settings: Settings) -> tuple[pl.DataFrame, list[dict]]:
    """(the source's prices for the run's tickers: the bundled sample or the price file, read whole; the lake's
    manifest entries of the run's tickers (those asked for, else the source's): first_date, last_date, ...)."""
    from features.prices import lake
    from features.prices.sources import load

    said = logging.getLogger("nightcast.features.prices.sources")
    level = said.level
    said.setLevel(logging.ERROR)  # what reading says, the ingest says once, in the run
    try:
        frame, _ = load(settings.source)
    except SourceError as exc:
        raise ConfigError(str(exc)) from None
    finally:
        said.setLevel(level)
    wanted = set(settings.source.tickers) or set(frame["ticker"].unique().to_list())
    return frame, [entry for ticker, entry in lake.read_manifest(settings.paths.lake).items() if ticker in wanted]


def _span(frame: pl.DataFrame, held: list[dict]) -> tuple[date | None, date | None]:
    """(first, last) date of the run's prices, in the source (`frame`) and the lake (`held`)."""
    firsts = [date.fromisoformat(e["first_date"]) for e in held if e.get("first_date")]
    lasts = [date.fromisoformat(e["last_date"]) for e in held if e.get("last_date")]
    if not frame.is_empty():
        firsts.append(frame["date"].min())
        lasts.append(frame["date"].max())
    return min(firsts, default=None), max(lasts, default=None)


def before_the_data(settings: Settings, day: date | None, flag: str, until: date | None = None) -> None:
    """A night (`day`, `flag`'s) the run's data cannot serve is refused in a moment, before Prefect starts (the
    flow said the same after it and the ingest: 13 s on the sample): before the first date of the source's and
    the lake's prices; a replay's span (`day` .. `until`) after their last; and, for `--asof` when the source's
    prices are all there is (the lake holds none of the run's tickers yet), with too little history for a model
    (`features.history`, on prices not yet validated: never stricter than the flow's check). A file or the
    sample only: for yfinance the flow judges."""
    if day is None or settings.source.kind not in ("sample", "file"):
        return  # yfinance: what the ingest fetches (a new ticker's whole history) is not known before it
    from features.history import too_little_history

    frame, held = _run_data(settings)
    first, last = _span(frame, held)
    if first is not None and (until or day) < first:
        raise ConfigError(f"{flag} {until or day}: no stored prices on or before it; the data starts on {first}")
    if until is not None and last is not None and day > last:
        raise ConfigError(f"no session with data between {day} and {until}: the data ends on {last}")
    if flag == "--asof" and not frame.is_empty() and not held:
        cut = frame.filter(pl.col("date") <= day)
        short = too_little_history(day, cut, frame, settings.windows, settings.features, settings.validation.min_rows)
        if short:
            raise ConfigError(short)
