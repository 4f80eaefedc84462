"""Counts in messages read as English: "1 epoch", "2 epochs" (a user's report read "refit 1 epochs")."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and `noun`, the noun in the plural unless n is 1 (plural: `noun` + "s" unless given)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
