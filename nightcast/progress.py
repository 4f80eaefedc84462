"""Progress of long work where its user looks: a bar on a terminal, a log line now and then anywhere else.

Rich draws nothing while its console is not a terminal (output to a file, cron, CI, a Prefect worker's flow
process): a fit of several minutes said nothing until it ended. There each step is logged instead, to the
logger given (nightcast's loggers also reach the Prefect UI): the first step, then at most one line per
`every` seconds, and always the last (or the one it stopped at), so a log shows the pace early and the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

LOG_EVERY = 30.0  # seconds between two logged steps (the first and the last are always logged)


class _Template(ProgressColumn):
    """The bar's text: `template` filled with `completed`, `total` and the task's fields."""

    def __init__(self, template: str) -> None:
        super().__init__()
        self.template = template

    def render(self, task: Task) -> Text:
        return Text(self.template.format(completed=int(task.completed), total=int(task.total or 0), **task.fields))


class Steps:
    """`total` steps of work called `label`, each shown as `template` (a `str.format` template of `completed`,
    `total` and the fields given here or to `advance`):

        with Steps("training", 20, "epoch {completed}/{total}  val {val}", log, val="-") as steps:
            ...
            steps.advance(val=f"{loss:.4f}")

    `enabled=False` shows nothing. `interactive`: whether to draw a bar (None: on a terminal or in Jupyter).
    `logger=None`: no lines off a terminal (for work that logs each step itself). A step that raises is not
    logged as done.
    """

    def __init__(
        self,
        label: str,
        total: int,
        template: str,
        logger: logging.Logger | None,
        enabled: bool = True,
        every: float = LOG_EVERY,
        interactive: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        **fields: str,
    ) -> None:
        reserved = {"completed", "total"} & fields.keys()
        if reserved:
            raise ValueError(f"progress fields may not be named {sorted(reserved)}: the template has them already")
        self.label, self.total, self.template, self.logger = label, total, template, logger
        self.enabled, self.every, self.clock, self.fields = enabled, every, clock, dict(fields)
        self.completed = 0
        if interactive is None:
            console = Console()
            interactive = console.is_terminal or console.is_jupyter
        self._bar = None
        if enabled and interactive:
            columns = (TextColumn(f"[bold]{label}"), BarColumn(), _Template(template), TimeElapsedColumn())
            self._bar = Progress(*columns, transient=False)
        self._started, self._logged, self._logged_step = 0.0, None, 0

    def __enter__(self) -> Steps:
        self._started = self.clock()
        self._logged = None
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, **self.fields)
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self.enabled and self.logger and 0 < self.completed < self.total and exc[0] is None:
            if self._logged_step != self.completed:
                self._log(self.clock())  # stopped early (early stopping): where it stopped, always

    def text(self) -> str:
        """The current step as the template says it."""
        return self.template.format(completed=self.completed, total=self.total, **self.fields)

    def advance(self, **fields: str) -> None:
        """One step done; `fields` update what the template shows."""
        self.completed += 1
        self.fields.update(fields)
        if self._bar is not None:
            self._bar.update(self._task, advance=1, **fields)
            return
        if not self.enabled or self.logger is None:
            return
        now = self.clock()
        if self._logged is None or now - self._logged >= self.every or self.completed == self.total:
            self._log(now)

    def _log(self, now: float) -> None:
        self._logged, self._logged_step = now, self.completed
        self.logger.info("%s: %s (%.0f s)", self.label, self.text(), now - self._started)
