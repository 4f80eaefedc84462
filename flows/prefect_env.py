"""Prefect's environment for nightcast, set by an explicit call: importing `flows` changes nothing.

Prefect reads its settings (home, logging, analytics) once, when `prefect` is first imported, so
`configure` must run before that: the CLI calls it as soon as the settings are resolved, the test suite
in its conftest. Variables already set in the environment always win.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from collections.abc import MutableMapping
from pathlib import Path


def variables(data_dir: Path) -> dict[str, str]:
    """Offline-safe defaults: no analytics, a longer ephemeral-server startup timeout, our `nightcast.*` loggers
    forwarded to Prefect, Prefect's home in the data directory instead of ~/.prefect, and a temporary server
    that no web page can drive (`browser_safe`)."""
    return {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_EXTRA_LOGGERS": "nightcast",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",  # library code also logs outside flow runs
        "PREFECT_HOME": str(Path(data_dir).resolve() / "prefect"),
    } | browser_safe(None)


def credentials_apart(api_url: str) -> tuple[str, str | None]:
    """An API URL holding a password (`http://user:secret@host/api`) as the URL without it and `user:secret`;
    any other URL as it is, and None."""
    parts = urllib.parse.urlsplit(api_url)
    if parts.password is None:
        return api_url, None
    host = parts.netloc.rsplit("@", 1)[1]
    auth = f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password)}"
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), auth


def browser_safe(origin: str | None) -> dict[str, str]:
    """A Prefect server that a page in the user's browser cannot use: Prefect 3.8 answers every origin's
    cross-origin requests (CORS "*") and takes writes without a CSRF token, so any page visited while a server
    ran on loopback could read every run's logs and, with `nightcast serve` running, start the nightly with
    settings of its choosing. Only `origin` (the UI's own, which needs no CORS: none for the temporary server)
    is allowed, and writes need the token Prefect's client and UI fetch for themselves."""
    return {CORS_ORIGINS: origin or NO_ORIGIN, "PREFECT_SERVER_CSRF_PROTECTION_ENABLED": "true"}


CORS_ORIGINS = "PREFECT_SERVER_CORS_ALLOWED_ORIGINS"
NO_ORIGIN = "https://nightcast.invalid"  # no page has it (.invalid never resolves; "null" is what file:// pages send)


def configure(data_dir: Path, environ: MutableMapping[str, str] = os.environ) -> Path:
    """Set Prefect's defaults for `data_dir` where the environment does not set them; return Prefect's home.

    Args:
        data_dir: the pipeline's data directory (`paths.data_dir`); Prefect's home is `data_dir/prefect`.
        environ: the environment to complete (the process's own by default).
    """
    for key, value in variables(data_dir).items():
        environ.setdefault(key, value)
    api, auth = credentials_apart(environ.get("PREFECT_API_URL", ""))
    if auth:
        # Prefect's client sends a URL's `user:password@` over HTTP but not over its events websocket, which then
        # failed (task runs lost) with the password printed in the warning; and it made its "View at" links from
        # the URL, password and all. Its own setting for a server's password carries it everywhere.
        environ["PREFECT_API_URL"] = api
        environ.setdefault("PREFECT_API_AUTH_STRING", auth)
    home = Path(environ["PREFECT_HOME"]).expanduser()
    # Prefect creates its home without parents; without it the ephemeral server cannot open its database.
    home.mkdir(parents=True, exist_ok=True)
    return home


@contextlib.contextmanager
def no_heartbeat_of_its_own():
    """Around a subflow's call: it runs without a heartbeat thread of its own; its parent's says the process is
    alive. Prefect's heartbeat thread (`flows.heartbeat_frequency`, 180 s by default) sleeps a second at a time
    and a flow run's exit waits for it to wake: 0-1 s at every subflow (the nightly's ingest took 5.2, 6.2 or
    7.3 s across runs of the same code), for nothing a parent's heartbeat does not already say."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
