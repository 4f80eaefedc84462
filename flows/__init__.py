"""Prefect flows, the settings loader and the `nightcast` CLI.

Importing this package sets one default, before anything imports polars: its allocator returns freed memory
promptly (`nightcast.memory.configure_allocator`; an environment that sets `_RJEM_MALLOC_CONF` keeps its own).
Prefect's environment is set by `flows.prefect_env.configure`, which the CLI calls before Prefect is imported.
"""

from nightcast.memory import configure_allocator

configure_allocator()
