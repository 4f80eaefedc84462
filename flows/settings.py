"""The one settings object: defaults, then a TOML file, then NIGHTCAST_* environment, then CLI flags.

pydantic-settings layers the sources (later ones override earlier ones). Each package owns the sections of
its stages; this module only composes them. Unknown sections or keys are errors.

Environment variables: NIGHTCAST_<SECTION>__<KEY>, e.g. NIGHTCAST_TRAIN__EPOCHS=5 or
NIGHTCAST_FEATURES__HORIZONS="[1, 5]" (values are read as TOML values when they parse, otherwise taken
as strings); NIGHTCAST_DATA_DIR is short for NIGHTCAST_PATHS__DATA_DIR; NIGHTCAST_CONFIG names the file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pydantic
from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from features.settings import (
    DenoiseSettings,
    FeatureSettings,
    HealthSettings,
    IngestSettings,
    SourceSettings,
    ValidationSettings,
    WindowSettings,
)
from forecasting.settings import BacktestSettings, ModelSettings, PublishSettings, TrainSettings
from nightcast.errors import ConfigError
from nightcast.settings import Section

ENV_PREFIX = "NIGHTCAST_"
DEFAULT_CONFIG = Path("nightcast.toml")


class PathSettings(Section):
    data_dir: Path = Field(
        Path("data"),
        description="root of what the pipeline stores (lake, models, cache); Prefect's home is data_dir/prefect",
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

    @property
    def backtest(self) -> Path:
        return self.out_dir / "backtest"

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

    @pydantic.field_validator("timezone")
    @classmethod
    def _a_known_zone(cls, zone: str) -> str:
        # checked with the settings: an unknown zone failed inside Prefect's run-name callable, a traceback
        try:
            ZoneInfo(zone)
        except (ValueError, ZoneInfoNotFoundError):
            raise ValueError(
                f"unknown time zone {zone!r} (an IANA name, e.g. America/New_York, Europe/London)"
            ) from None
        return zone

    def today(self) -> date:
        """Today on the schedule's clock (the exchange's): a run at 20:00 in New York is on that day, while the
        machine's UTC date is already tomorrow's."""
        return datetime.now(ZoneInfo(self.timezone)).date()


class RunnerSettings(Section):
    kind: Literal["threads", "dask"] = Field(
        "threads", description="task runner: local threads, or Dask (prefect-dask)"
    )
    dask_address: str | None = Field(None, description="address of an existing Dask scheduler; unset = a local cluster")
    dask_workers: int = Field(2, ge=1, description="workers of the local Dask cluster (threads, one per worker)")
    chunk_size: int = Field(50, ge=1, description="tickers per feature-building (and yfinance ingest) task")
    cache_features: bool = Field(
        False,
        description="cache built features on the lake fingerprint (results kept 7 days under data/prefect/storage). "
        "Off by default: on 500 tickers x 25 years saving them cost 11 s and 700 MB a night, more than building "
        "them (about 2 s), and a new bar changes the fingerprint, so only a rerun of the same night reads them",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        validate_default=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        enable_decoding=False,  # not JSON: environment values are TOML, see `_Environment`
    )

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

    def absolute(self) -> Settings:
        """These settings with every path made absolute (against the current directory): what a deployment
        stores, since a scheduled run or a work pool's worker runs elsewhere (a worker in a temporary folder,
        which a relative `data` put the lake, the champion and the forecasts into, and then deleted)."""
        p = self.paths
        # absolute, not resolved: a `data` that is a link stays the link (its target may differ on another machine)
        paths = {
            "data_dir": p.data_dir.absolute(),
            "out_dir": p.out_dir.absolute(),
            "lake_dir": p.lake_dir.absolute() if p.lake_dir else None,
            "models_dir": p.models_dir.absolute() if p.models_dir else None,
        }
        source = {"path": self.source.path.absolute()} if self.source.path else {}
        return self.model_copy(
            update={"paths": p.model_copy(update=paths), "source": self.source.model_copy(update=source)}
        )

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # `Settings(...)` is a plain model of its arguments, whatever the process environment holds;
        # `load_settings` alone layers the file and the environment in.
        return (init_settings,)


class _Environment(EnvSettingsSource):
    """NIGHTCAST_<SECTION>__<KEY> variables of a given mapping: the CLI passes os.environ, tests their own."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str]:
        names = {n: v for n, v in self.environ.items() if n.startswith(ENV_PREFIX) and n != "NIGHTCAST_CONFIG"}
        if "NIGHTCAST_DATA_DIR" in names:  # the short name of paths.data_dir
            names.setdefault("NIGHTCAST_PATHS__DATA_DIR", names.pop("NIGHTCAST_DATA_DIR"))
        sections = Settings.model_fields
        for name in names:
            section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
            # the library skips variables naming no section; a typo must not silently run the default
            if section not in sections or not key or "__" in key:
                raise ConfigError(
                    f"environment variable {name}: expected NIGHTCAST_<SECTION>__<KEY> with SECTION one of "
                    f"{', '.join(s.upper() for s in sections)}"
                )
        return {n.lower(): v for n, v in names.items()}

    def explode_env_vars(self, field_name: str, field: FieldInfo, env_vars: Mapping[str, str | None]) -> dict:
        # a value is read as TOML, like the file's, when it parses ("[1, 5]", '"a b"', true), else as a string
        return {key: _toml_value(raw) for key, raw in super().explode_env_vars(field_name, field, env_vars).items()}


def _toml_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _file_source(config: Path) -> TomlConfigSettingsSource:
    if not config.is_file():  # the library skips a missing file silently
        raise ConfigError(f"config file not found: {config}")
    try:
        return TomlConfigSettingsSource(Settings, toml_file=config)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {config} is not valid TOML: {exc}") from None


def load_settings(
    config: Path | None = None, environ: Mapping[str, str] | None = None, overrides: Mapping | None = None
) -> Settings:
    """Resolve settings: defaults < TOML file < environment < `overrides` (CLI flags, nested by section).

    `config` defaults to $NIGHTCAST_CONFIG, else ./nightcast.toml if it exists; `environ` to os.environ.
    """
    environ = os.environ if environ is None else environ
    if config is None and environ.get("NIGHTCAST_CONFIG"):
        config = Path(environ["NIGHTCAST_CONFIG"])
    if config is None and DEFAULT_CONFIG.exists():
        config = DEFAULT_CONFIG
    sources = (InitSettingsSource(Settings, dict(overrides or {})), _Environment(environ))  # first wins
    if config is not None:
        sources += (_file_source(config),)
    try:
        # `_build_sources` is pydantic-settings' own hook for passing sources (private: hence the <2.17 pin)
        return Settings(_build_sources=(sources, {}))
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
        unknown = err["type"] == "extra_forbidden"
        msg = "unknown setting" if unknown else err["msg"].removeprefix("Value error, ")  # pydantic's wrapper
        shown = err["type"] == "missing" or isinstance(err["input"], dict) or repr(err["input"]) in msg
        got = "" if shown else f", got {err['input']!r}"  # our validators name the value already
        hint = _did_you_mean(err["loc"]) if unknown else ""
        lines.append(f"setting {loc or '<root>'}: {msg}{got}{hint}")
    if len(lines) == 1:  # errors you can fix are one line (README); several are a line each under a heading
        return f"invalid settings{where}: {lines[0]}"
    return "invalid settings" + where + ":\n  " + "\n  ".join(lines)


# Settings renamed since a release, with what they are now: an old config file then says where its key went.
_RENAMED = {
    "train.retrain_on_new_data": "renamed train.retrain_on_revision in 0.2 (it retrains only when prices it "
    "trained on were revised; train.max_age_days sets the age)",
}


def _did_you_mean(loc: tuple) -> str:
    """A hint for an unknown key at `loc`: its new name, a close spelling in its section, or the section that
    holds it (``"; did you mean train.epochs?"``); empty when nothing is close."""
    import difflib

    dotted = ".".join(str(p) for p in loc)
    if dotted in _RENAMED:
        return f"; {_RENAMED[dotted]}"
    model: Any = Settings
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(str(part))
        if field is None:
            return ""
        model = field.annotation
    key, fields = str(loc[-1]), list(getattr(model, "model_fields", {}))
    if close := difflib.get_close_matches(key, fields, n=1, cutoff=0.75):
        return f"; did you mean {'.'.join([*map(str, loc[:-1]), close[0]])}?"
    elsewhere = [name for name, f in Settings.model_fields.items() if key in getattr(f.annotation, "model_fields", {})]
    return f"; it is {elsewhere[0]}.{key}" if len(loc) == 2 and elsewhere else ""


def to_toml(settings: Settings, changed_only: bool = False) -> str:
    """Render settings as TOML (used to print them at the start of every run). `changed_only`: only those that
    differ from the defaults (a section with none is left out): a file saved from that keeps taking a newer
    nightcast's defaults for everything it does not name, where a file of every setting freezes today's."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    defaults = type(settings).model_construct().model_dump() if changed_only else {}
    blocks = []
    for section, body in settings.model_dump().items():
        body = {k: v for k, v in body.items() if not changed_only or defaults[section].get(k) != v}
        if not body and changed_only:
            continue
        lines = [f"[{section}]"] + [f"{k} = {value(v)}" if v is not None else f"# {k} (unset)" for k, v in body.items()]
        blocks.append("\n".join(lines))
    if changed_only and not blocks:
        return "# every setting at its default\n"
    return "\n\n".join(blocks) + "\n"


def dated_run_name(flow: str):
    """A flow's `flow_run_name`: `flow`-<the night it replays (`asof`), its `run_date`, else today on the exchange's
    clock> (named by the machine's UTC date, a New York run at 20:00 carried tomorrow's)."""

    def name() -> str:
        from prefect.runtime import flow_run  # only inside a run: importing the settings starts no Prefect

        params = flow_run.parameters or {}
        return f"{flow}-{params.get('asof') or params.get('run_date') or run_day(params.get('settings'))}"

    return name


def run_day(settings: object) -> date:
    """Today on the schedule's clock of a flow's `settings` parameter, for its run's name: Settings, or the dict a
    deployment's run passes (JSON), or the default time zone when it is neither."""
    if isinstance(settings, Settings):
        return settings.schedule.today()
    zone = settings.get("schedule", {}).get("timezone") if isinstance(settings, dict) else None
    return ScheduleSettings(**({"timezone": zone} if isinstance(zone, str) else {})).today()
