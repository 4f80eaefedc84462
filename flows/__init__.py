"""Prefect flows, the settings loader and the `nightcast` CLI.

Importing this package sets offline-safe defaults for Prefect before Prefect is
imported anywhere: no analytics, a longer ephemeral-server startup timeout,
our `nightcast.*` loggers forwarded to Prefect, and PREFECT_HOME inside the
project's data directory instead of ~/.prefect. Explicit environment
variables always win.
"""

import os
from pathlib import Path

_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "nightcast",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",  # library code also logs outside flow runs
    "PREFECT_HOME": str(Path(os.environ.get("NIGHTCAST_DATA_DIR", "data")).resolve() / "prefect"),
}
for _key, _value in _DEFAULTS.items():
    os.environ.setdefault(_key, _value)
# Prefect does not create a custom home; without it the ephemeral server cannot open its database.
Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
