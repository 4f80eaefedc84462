"""The one exception hierarchy of nightcast.

Every error a user can cause (bad settings, bad data, a missing file) is a
`NightcastError` whose message names the setting, file, ticker, date or rule
and the value received, so the CLI can print it without a traceback.
"""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what a one-line error
    quotes of a library's multi-line message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class NightcastError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""


class ConfigError(NightcastError):
    """A setting is unknown, has the wrong type, or an invalid value."""


class SourceError(NightcastError):
    """A price source could not be read (missing file, unknown layout, no data)."""


class ValidationError(NightcastError):
    """Price data broke a rule and could not be repaired."""


class LakeError(NightcastError):
    """The Parquet lake could not be read or written."""


class InsufficientDataError(NightcastError):
    """Too little history left to build windows, splits or a model."""
