"""What the CLI's console shows of Prefect's run logs when a run stops on a user error or is interrupted.

Prefect logs a run that failed on bad input or settings at every level of the run (task, subflow, flow), each
twice ("failed with exception", then "Finished in state Failed"), with tracebacks: six copies of the message
before the CLI prints its one `error:` line (an interrupted run, four or five "Crash detected!" lines before its
`interrupted:` line). The console gets that one line; the Prefect UI keeps every record
(its handler sits on the run loggers themselves, the console's on the root logger, so the two can differ).
"""

from __future__ import annotations

import logging
import re
import threading

from nightcast.errors import NightcastError

RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs", "prefect.flow_engine", "prefect.task_engine")


def _user_error_names() -> str:
    todo, names = [NightcastError], []
    while todo:
        cls = todo.pop()
        names.append(cls.__name__)
        todo += cls.__subclasses__()
    return "|".join(sorted(names))


# How a state message names the exception: "... an exception SourceError: ..." or "SourceError('...')"
_NAMED = re.compile(rf"\b(?:{_user_error_names()})[(:]")
# Prefect's records of a run stopped by Ctrl-C or SIGTERM, four or five of them ("Crash detected! ...", "Finished in
# state Crashed(...)" per task and flow): the CLI says it once ("interrupted: stopped; ..."). Known by their message,
# or, once the CLI has been interrupted (`INTERRUPTED`), by being a crash at all: a task's worker thread may be
# cancelled on the way out ("cancelled by the runtime environment"), which is the same stop
_INTERRUPTED = "aborted by an interrupt signal"
INTERRUPTED = threading.Event()


class _UserErrorRecords(logging.Filter):
    """On the run loggers: a user error's record loses its traceback (the message is enough) and is marked for
    the console filter; the API handler on the same logger still sends it to the UI."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], NightcastError):
            record.exc_info, record.exc_text = None, None
            record.nightcast_user_error = True
        elif record.levelno >= logging.INFO and _NAMED.search(record.getMessage()):  # a run logger's own record
            record.nightcast_user_error = True
        elif _INTERRUPTED in record.getMessage() or (INTERRUPTED.is_set() and _crash(record.getMessage())):
            record.nightcast_user_error = True
        _quiet_console()
        return True


def _crash(message: str) -> bool:
    return message.startswith("Crash detected!") or message.startswith("Finished in state Crashed")


class _NotUserErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "nightcast_user_error", False)


def _quiet_console() -> None:
    """Give Prefect's console handler the filter once it exists (Prefect configures logging when first imported,
    after the CLI has started; the first run record comes after that)."""
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler" and not any(
            isinstance(f, _NotUserErrors) for f in handler.filters
        ):
            handler.addFilter(_NotUserErrors())


def install() -> None:
    for name in RUN_LOGGERS:
        logging.getLogger(name).addFilter(_UserErrorRecords())
