"""Prefect flows, the settings loader and the `nightcast` CLI.

Importing this package sets two defaults. Before anything imports polars: the allocators return freed memory
promptly (`nightcast.memory.configure_allocator`; an environment that sets its own keeps it). And nightcast's
loggers say what they do at INFO, unless a level was set for them: here, not in the CLI, because a flow run that
Prefect starts in a process of its own (`nightcast serve`, a work pool's worker) imports this package but never
the CLI, and its loggers would otherwise inherit the root logger's WARNING, leaving the run's progress and decisions
out of the console and the UI. Prefect's environment is set by `flows.prefect_env.configure`, which the CLI
calls before Prefect is imported.
"""

import logging

from nightcast.memory import configure_allocator

configure_allocator()
if logging.getLogger("nightcast").level == logging.NOTSET:
    logging.getLogger("nightcast").setLevel(logging.INFO)
