"""Champion bookkeeping: which models publish, as of which date, and on what evidence.

`<models>/champion.json` holds the history of decisions: a challenger promoted, or the champion kept after
a contest (its recipe refit on newer data). Each record names two checkpoints of one recipe (the settings
that define a model): the *evaluation* fit, trained only on labels realised before its evaluation span and
scored out of sample there, and the *published* refit of the same recipe on every label realised by the
as-of date. The champion as of a date is the latest decision made with data up to that date, so replaying a
past night never uses a model that saw its future, and a replay never unseats today's champion.
Checkpoint paths are stored relative to the models directory: moving the data directory keeps the champion.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import date
from pathlib import Path

from nightcast.errors import NightcastError, one_line
from nightcast.io import atomic_write

log = logging.getLogger("nightcast.forecasting.registry")

CHAMPION = "champion.json"
FORMAT = 3  # 3: `combination` (the published weights); 2 (nightcast 0.3-0.4) reads as the network alone
READABLE = (2, 3)


@dataclass(frozen=True)
class Champion:
    version: str  # the published model, `<name>-<weights hash>`
    checkpoint: str  # its file, relative to the models directory
    evaluation_version: str  # the evaluation fit that vouched for the recipe
    evaluation_checkpoint: str
    asof: date  # last date of the data the decision (and the published refit) was made with
    trained_on: date  # the run date of the decision (the replayed date in a replay): the age rule counts from it
    trained_through: date  # last origin whose label the published model trained on
    cutoff: date  # the evaluation fit's cutoff: origins from here on are out of sample for it
    data_fingerprint: str  # of the prices up to `asof`, then
    settings_hash: str  # the settings the decision was made under: a change retrains
    inputs_hash: str  # denoise, features and lookback: what the models read; equal -> they can score today's data
    eval_start: date  # the evaluation span that vouched for it when promoted
    eval_end: date
    eval_score: float  # its mean MSE ratio to the random walk there
    event: str = "promoted"  # or "kept": the champion's recipe won a contest and was refit
    # per horizon, the weights (network, historical mean) of the combination it publishes (`combine.Publishing`),
    # chosen on its evaluation fit's validation span; None: the network alone (and every record made before)
    combination: list[list[float]] | None = None


def settings_hash(parts: dict) -> str:
    """Hash of settings (a JSON-able dict): same settings, same hash, whatever the key order."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def layout_hashes(parts: dict, added: Sequence[Mapping[tuple[str, str], object]]) -> list[str]:
    """`settings_hash` of `parts` as each earlier layout of the settings wrote them, newest first: `added` holds,
    oldest first, the groups of (section, name) settings each nightcast added, each with the value that does what
    nightcast did before it existed; layout k leaves out the k newest groups, while they hold those values. A
    champion recorded before a setting existed is then the same recipe while the setting keeps that value: an
    upgrade does not retrain every champion for settings nobody changed."""
    hashes, layout = [settings_hash(parts)], parts
    for group in reversed(added):
        if any(isinstance(layout.get(s), dict) and layout[s].get(k, v) != v for (s, k), v in group.items()):
            break  # set otherwise: no layout from before this group can say so
        layout = {
            section: {k: v for k, v in value.items() if (section, k) not in group} if isinstance(value, dict) else value
            for section, value in layout.items()
        }
        hashes.append(settings_hash(layout))
    return hashes


def _record(raw: dict) -> Champion:
    dates = {f.name for f in fields(Champion) if f.type == "date"}
    return Champion(**{k: date.fromisoformat(v) if k in dates else v for k, v in raw.items()})


class ChampionRecordError(NightcastError):
    """`champion.json` cannot be read as a champion history: never silently replaced, or its history is lost."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"champion record {path} {problem}; move it away to train a new champion")


def read_history(models_dir: Path) -> list[Champion]:
    """Every decision (promoted or kept), oldest first.

    A file that cannot be read as a history (not JSON, another layout, a newer format, a malformed record) is a
    `ChampionRecordError`: writing the next decision over it would lose the champion history. Only the flat
    record of nightcast <= 0.1 is superseded (a warning, and a new champion is trained).
    """
    path = Path(models_dir) / CHAMPION
    if not path.exists():
        return []
    try:
        body = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ChampionRecordError(path, f"is unreadable ({one_line(exc)})") from None
    if isinstance(body, dict) and "format" not in body and "version" in body and "checkpoint" in body:
        # champion.json of nightcast <= 0.1 (one flat record, no evaluation fit): superseded, not an error
        log.warning("champion record %s is from an older nightcast; a new champion will be trained", path)
        return []
    if not isinstance(body, dict) or body.get("format") not in READABLE:
        found = body.get("format") if isinstance(body, dict) else type(body).__name__
        raise ChampionRecordError(path, f"has an unknown format ({found!r}; this nightcast reads format {FORMAT})")
    try:
        return [_record(r) for r in body["history"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ChampionRecordError(path, f"is malformed ({type(exc).__name__}: {one_line(exc)})") from None


def champion_as_of(models_dir: Path, asof: date) -> Champion | None:
    """The latest decision made with data up to `asof` whose checkpoints still exist. When a later decision's
    checkpoint is gone (deleted by hand), it says which, as a warning: the run then falls back to an earlier
    champion, or trains one, and "no champion model yet" alone would hide why."""
    decided = sorted((c for c in read_history(models_dir) if c.asof <= asof), key=lambda c: c.asof)  # stable
    # of two decisions with the same as-of date, the later-written one wins
    for c in reversed(decided):
        missing = [p for p in (c.checkpoint, c.evaluation_checkpoint) if not (Path(models_dir) / p).exists()]
        if not missing:
            return c
        log.warning(
            "the champion decided on %s is not usable: %s missing in %s; an earlier one (or a new fit) takes its place",
            c.asof,
            ", ".join(str(p) for p in missing),
            models_dir,
        )
    return None


def record_decision(models_dir: Path, champion: Champion) -> Path:
    """Append a decision (the champion from now on) to the history, atomically. A history an older nightcast
    wrote in an older format is first copied aside as it was (`champion.format<N>.json`): that nightcast
    cannot read the newer format, so going back to it would otherwise lose its champion."""
    history = [asdict(c) for c in read_history(models_dir)] + [asdict(champion)]
    path = Path(models_dir) / CHAMPION
    older = _older_format(path)
    if older is not None:
        kept, body = path.with_name(f"{path.stem}.format{older}{path.suffix}"), path.read_bytes()
        # an older nightcast run again since (its history grown) replaces the copy: the newest is the way back
        if not kept.exists() or kept.read_bytes() != body:
            atomic_write(kept, lambda tmp: tmp.write_bytes(body))
            log.info("%s was written by an older nightcast (format %s): kept as %s", path, older, kept)
    body = json.dumps({"format": FORMAT, "history": history}, indent=1, default=str)
    return atomic_write(path, lambda tmp: tmp.write_text(body))


def _older_format(path: Path) -> int | None:
    """The format of the history at `path` when an older nightcast wrote it (None: none, or this format)."""
    try:
        found = json.loads(path.read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, int) and found < FORMAT else None
