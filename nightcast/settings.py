"""The base of every settings section: frozen, typed, no unknown keys.

Every field has a default and a one-line reason. Unknown keys are an error (`extra="forbid"`), so a typo in a
TOML file or environment variable fails loudly instead of silently running the default. Each package owns the
sections of its own stages; `flows.settings` composes them into the one object the CLI loads.
"""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _numeric(annotation: Any) -> bool:
    """An int or float setting (optional or not), not a flag: bool is an int to Python."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return len(args) == 1 and _numeric(args[0])
    return annotation in (int, float)


class Section(BaseModel):
    """Base of every settings section: frozen, typed, no unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @field_validator("*", mode="before")
    @classmethod
    def _a_number_is_written_as_one(cls, value: Any, info: ValidationInfo) -> Any:
        """A numeric setting refuses `true` and `"5"`: pydantic read them as 1 and 5 (a hostile user's
        `NIGHTCAST_TRAIN__EPOCHS=true` trained one epoch), where README promises values of the wrong type are
        errors. Environment values are TOML, so `NIGHTCAST_TRAIN__EPOCHS=5` is the number 5."""
        if isinstance(value, bool | str) and _numeric(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected a number, got {value!r}")
        return value
