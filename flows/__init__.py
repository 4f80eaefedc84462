"""Prefect flows, the settings loader and the `nightcast` CLI.

Importing this package has no side effects: Prefect's environment is set by `flows.prefect_env.configure`,
which the CLI calls before Prefect is imported.
"""
