"""Champion model bookkeeping: which checkpoint the nightly publishes with, and when it is stale.

`<models>/champion.json` names the champion's checkpoint, when and on which
data it was trained, and the settings it was trained with. A retrain makes a
challenger; it becomes the champion only if it beats the champion's
out-of-sample MSE on the same recent span.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

from features.io import atomic_write

CHAMPION = "champion.json"


@dataclass(frozen=True)
class Champion:
    version: str
    checkpoint: str
    trained_on: str  # ISO date the model was trained
    data_fingerprint: str
    settings_hash: str
    recent_mse: float  # mean over horizons of its out-of-sample MSE on the span it was chosen on


def settings_hash(parts: dict) -> str:
    """Hash of the settings that change what a model is (features, windows, model, training)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def read_champion(models_dir: Path) -> Champion | None:
    path = Path(models_dir) / CHAMPION
    if not path.exists():
        return None
    try:
        champion = Champion(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError):
        return None
    return champion if Path(champion.checkpoint).exists() else None


def write_champion(models_dir: Path, champion: Champion) -> Path:
    body = json.dumps(asdict(champion), indent=1)
    return atomic_write(Path(models_dir) / CHAMPION, lambda tmp: tmp.write_text(body))


def staleness(
    champion: Champion | None,
    fingerprint: str,
    config_hash: str,
    today: date,
    max_age_days: int,
    retrain_on_new_data: bool,
) -> str | None:
    """Why the champion must be retrained, or None when it is still good."""
    if champion is None:
        return "no champion model yet"
    if champion.settings_hash != config_hash:
        return "the model, feature or window settings changed"
    age = (today - date.fromisoformat(champion.trained_on)).days
    if age >= max_age_days:
        return f"the champion is {age} days old (train.max_age_days = {max_age_days})"
    if retrain_on_new_data and champion.data_fingerprint != fingerprint:
        return "the lake changed since the champion was trained"
    return None
