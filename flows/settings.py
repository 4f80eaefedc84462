"""The one settings object: TOML file, then NIGHTCAST_* environment, then CLI flags.

Later sources override earlier ones. Each package owns the sections of its
stages; this module only composes them. Unknown sections or keys are errors.

Environment variables: NIGHTCAST_<SECTION>__<KEY>, e.g. NIGHTCAST_TRAIN__EPOCHS=5
or NIGHTCAST_FEATURES__HORIZONS="[1, 5]" (values are parsed as TOML values
when they parse, otherwise taken as strings).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import Field

from features.errors import ConfigError
from features.settings import (
    DenoiseSettings,
    FeatureSettings,
    HealthSettings,
    IngestSettings,
    Section,
    SourceSettings,
    ValidationSettings,
    WindowSettings,
)
from forecasting.settings import BacktestSettings, ModelSettings, PublishSettings, TrainSettings

ENV_PREFIX = "NIGHTCAST_"
DEFAULT_CONFIG = Path("nightcast.toml")


class PathSettings(Section):
    data_dir: Path = Field(
        Path("data"),
        description="root of what the pipeline stores (lake, models); Prefect's home is NIGHTCAST_DATA_DIR/prefect",
    )
    lake_dir: Path | None = Field(None, description="Parquet price lake, one file per ticker (default: data_dir/lake)")
    models_dir: Path | None = Field(None, description="model checkpoints (default: data_dir/models)")
    out_dir: Path = Field(Path("outputs"), description="published forecasts and metrics")

    @property
    def lake(self) -> Path:
        return self.lake_dir or self.data_dir / "lake"

    @property
    def models(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def cache(self) -> Path:
        return self.data_dir / "cache"

    def for_replay(self) -> PathSettings:
        """Where replayed nights go: apart from what was published live (`<out>/replay`, `<models>/replay`).

        A replay simulates nights from today's lake; it must never replace forecasts that were actually
        published, nor take part in the live champion's history. The lake is shared.
        """
        return self.model_copy(update={"out_dir": self.out_dir / "replay", "models_dir": self.models / "replay"})


class ScheduleSettings(Section):
    nightly_cron: str = Field("30 18 * * 1-5", description="when the nightly deployment runs (after the US close)")
    backtest_cron: str = Field("0 7 * * 6", description="when the weekly backtest deployment runs (Saturday morning)")
    timezone: str = Field("America/New_York", description="time zone of both crons")
    skip_closed_days: bool = Field(
        True,
        description="a yfinance nightly run on an exchange holiday or weekend "
        "stops early with 'market closed' instead of republishing stale forecasts",
    )
    ui_host: str = Field("127.0.0.1", description="address `nightcast ui` binds (loopback: not reachable from outside)")
    ui_port: int = Field(4200, ge=1, le=65535, description="port of `nightcast ui`")


class RunnerSettings(Section):
    kind: Literal["threads", "dask"] = Field(
        "threads", description="task runner: local threads, or Dask (prefect-dask)"
    )
    dask_address: str | None = Field(None, description="address of an existing Dask scheduler; unset = a local cluster")
    dask_workers: int = Field(2, ge=1, description="workers of the local Dask cluster (threads, one per worker)")
    chunk_size: int = Field(50, ge=1, description="tickers per feature-building (and yfinance ingest) task")
    cache_features: bool = Field(
        True,
        description="cache built features on the lake fingerprint "
        "(results kept 7 days under data/prefect/storage; off saves disk on big universes)",
    )


class Settings(Section):
    source: SourceSettings = SourceSettings()
    ingest: IngestSettings = IngestSettings()
    validation: ValidationSettings = ValidationSettings()
    health: HealthSettings = HealthSettings()
    denoise: DenoiseSettings = DenoiseSettings()
    features: FeatureSettings = FeatureSettings()
    windows: WindowSettings = WindowSettings()
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()
    backtest: BacktestSettings = BacktestSettings()
    publish: PublishSettings = PublishSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    runner: RunnerSettings = RunnerSettings()
    paths: PathSettings = PathSettings()


def _merge(base: dict, extra: Mapping) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def env_overrides(environ: Mapping[str, str]) -> dict:
    """Nested overrides from NIGHTCAST_<SECTION>__<KEY> variables."""
    out: dict[str, dict] = {}
    sections = Settings.model_fields
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in ("NIGHTCAST_DATA_DIR", "NIGHTCAST_CONFIG"):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) != 2 or parts[0] not in sections:
            raise ConfigError(
                f"environment variable {name}: expected NIGHTCAST_<SECTION>__<KEY> with SECTION one of "
                f"{', '.join(s.upper() for s in sections)}"
            )
        out.setdefault(parts[0], {})[parts[1]] = _parse_env_value(raw)
    return out


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def load_settings(
    config: Path | None = None, environ: Mapping[str, str] | None = None, overrides: Mapping | None = None
) -> Settings:
    """Resolve settings: defaults < TOML file < environment < `overrides` (CLI flags)."""
    environ = os.environ if environ is None else environ
    if config is None and environ.get("NIGHTCAST_CONFIG"):
        config = Path(environ["NIGHTCAST_CONFIG"])
    if config is None and DEFAULT_CONFIG.exists():
        config = DEFAULT_CONFIG
    merged: dict = read_toml(config) if config is not None else {}
    merged = _merge(merged, env_overrides(environ))
    merged = _merge(merged, overrides or {})
    try:
        return Settings.model_validate(merged)
    except pydantic.ValidationError as exc:
        raise ConfigError(_explain(exc, config)) from None


def _explain(exc: pydantic.ValidationError, config: Path | None) -> str:
    where = (
        f" (config file {config}, NIGHTCAST_* environment or flags)"
        if config
        else " (NIGHTCAST_* environment or flags)"
    )
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        got = f", got {err['input']!r}" if err["type"] != "missing" and not isinstance(err["input"], dict) else ""
        msg = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"setting {loc or '<root>'}: {msg}{got}")
    return "invalid settings" + where + ":\n  " + "\n  ".join(lines)


def to_toml(settings: Settings) -> str:
    """Render settings as TOML (used to print them at the start of every run)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    blocks = []
    for section, body in settings.model_dump().items():
        lines = [f"[{section}]"] + [f"{k} = {value(v)}" if v is not None else f"# {k} (unset)" for k, v in body.items()]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
