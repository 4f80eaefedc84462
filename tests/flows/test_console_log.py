"""A run that stops on a user error: the console shows the CLI's one line, the run loggers (the UI) keep all."""

import logging

import pytest

from flows import console_log
from nightcast.errors import SourceError


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class PrefectConsoleHandler(_Kept):
    """Named as Prefect's console handler is: the filter finds it by that name."""


@pytest.fixture
def loggers():
    """A run logger with a handler of its own (where Prefect's API handler sits) and a console on the root."""
    run, root = logging.getLogger("prefect.flow_runs"), logging.getLogger()
    api, console = _Kept(), PrefectConsoleHandler()
    saved = (run.filters[:], run.level, root.handlers[:])
    run.addHandler(api)
    root.addHandler(console)
    run.setLevel(logging.INFO)
    console_log.install()
    yield run, api, console
    run.removeHandler(api)
    run.filters[:], root.handlers[:] = saved[0], saved[2]
    run.setLevel(saved[1])


def test_a_user_errors_records_reach_the_ui_not_the_console(loggers):
    run, api, console = loggers
    try:
        raise SourceError("no usable data for ['AAA']")
    except SourceError:
        run.error("Encountered exception during execution: SourceError(...)", exc_info=True)
    run.info('Finished in state Failed("Flow run encountered an exception SourceError: no usable data")')
    run.info("Beginning flow run 'nightly'")
    try:
        raise KeyError("a bug")
    except KeyError:
        run.error("Encountered exception during execution: KeyError('a bug')", exc_info=True)
    assert [r.getMessage()[:21] for r in api.records] == [
        "Encountered exception",
        "Finished in state Fai",
        "Beginning flow run 'n",
        "Encountered exception",
    ]
    assert api.records[0].exc_info is None  # no traceback for a message that says it all
    # the console: the run's progress and a bug's traceback, not the user error's copies
    assert [r.getMessage()[:21] for r in console.records] == ["Beginning flow run 'n", "Encountered exception"]
    assert console.records[1].exc_info is not None
