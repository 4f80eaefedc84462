"""The base of every settings section: frozen, typed, no unknown keys.

Every field has a default and a one-line reason. Unknown keys are an error (`extra="forbid"`), so a typo in a
TOML file or environment variable fails loudly instead of silently running the default. Each package owns the
sections of its own stages; `flows.settings` composes them into the one object the CLI loads.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every settings section: frozen, typed, no unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)
