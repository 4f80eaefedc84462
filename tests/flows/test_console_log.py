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


def test_a_flow_run_process_prefect_starts_logs_nightcast_s_info_lines_unless_a_level_was_set():
    # `nightcast serve` and a work pool's worker run each flow in a process of Prefect's, which imports the flows
    # but never the CLI (which sets INFO itself): the progress lines and decisions must still reach the UI
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import logging, sys\n"
        "from prefect.logging.configuration import setup_logging\n"
        "setup_logging()\n"
        "if sys.argv[1] == 'own': logging.getLogger('nightcast').setLevel(logging.WARNING)\n"
        "import flows\n"
        "print(logging.getLogger('nightcast.forecasting.train').isEnabledFor(logging.INFO))\n"
    )
    root = Path(__file__).resolve().parents[2]

    def enabled(mode: str) -> str:
        run = subprocess.run([sys.executable, "-c", code, mode], cwd=root, capture_output=True, text=True, check=True)
        return run.stdout.strip()

    assert enabled("default") == "True"
    assert enabled("own") == "False"  # a level the user set stands


def test_an_interrupted_runs_crash_records_reach_the_ui_not_the_console(loggers):
    """Ctrl-C printed four or five "Crash detected!" lines beside the CLI's one `interrupted:` line."""
    run, api, console = loggers
    run.error("Crash detected! Execution was aborted by an interrupt signal.")
    run.info("Finished in state Crashed('Execution was aborted by an interrupt signal.')")
    run.error("Crash detected! Execution was interrupted by an unexpected exception: OSError")  # not Ctrl-C: shown
    assert len(api.records) == 3
    assert [r.getMessage() for r in console.records] == [
        "Crash detected! Execution was interrupted by an unexpected exception: OSError"
    ]


def test_once_the_cli_is_interrupted_every_crash_record_is_the_uis(loggers):
    run, api, console = loggers
    run.error("Crash detected! Execution was cancelled by the runtime environment.")  # not interrupted: shown
    console_log.INTERRUPTED.set()
    try:
        run.error("Crash detected! Execution was cancelled by the runtime environment.")  # a worker on the way out
        run.info("Finished in state Crashed('Execution was cancelled by the runtime environment.')")
        run.info("Finished in state Completed()")
    finally:
        console_log.INTERRUPTED.clear()
    assert len(api.records) == 4
    assert [r.getMessage()[:40] for r in console.records] == [
        "Crash detected! Execution was cancelled ",
        "Finished in state Completed()",
    ]
