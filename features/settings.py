"""Typed settings of the stages before the model: sources, ingest, validation, data health, denoising,
features and windows (each field has a default and a one-line reason)."""

from __future__ import annotations

import math
from datetime import date, datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from nightcast.errors import ConfigError
from nightcast.settings import Section


class SourceSettings(Section):
    kind: Literal["sample", "file", "yfinance"] = Field(
        "sample", description="where prices come from: the bundled sample, a CSV/Parquet file, or yfinance"
    )
    path: Path | None = Field(None, description="price file for kind='file' (long layout, see README)")
    tickers: list[str] = Field(
        default_factory=list,
        description="tickers to use; empty means every ticker in the source (required for yfinance)",
    )
    start: str = Field("2000-01-01", description="first date requested from yfinance (YYYY-MM-DD)")

    @field_validator("start", mode="before")
    @classmethod
    def _a_date(cls, value: object) -> str:
        # TOML reads `start = 2024-01-02` (and NIGHTCAST_SOURCE__START=2024-01-02) as a date, not a string
        if isinstance(value, datetime):  # a TOML date-time: its day
            value = value.date()
        if isinstance(value, date):
            return value.isoformat()
        try:
            return date.fromisoformat(str(value)).isoformat()
        except ValueError:
            raise ValueError(f"expected a date YYYY-MM-DD, got {value!r}") from None

    @field_validator("tickers")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(t.strip().upper() for t in value))  # symbols are case-insensitive; keep order

    @model_validator(mode="after")
    def _kind_needs(self) -> SourceSettings:
        if self.kind == "file" and self.path is None:
            raise ValueError("source.kind='file' needs source.path (--path FILE)")
        if self.kind == "yfinance" and not self.tickers:
            raise ValueError("source.kind='yfinance' needs source.tickers (--tickers AAPL MSFT ...)")
        return self


class IngestSettings(Section):
    chunk_size: int = Field(
        50, ge=1, description="tickers per yfinance download call (batched, never one giant request)"
    )
    max_concurrent: int = Field(
        4, ge=1, description="cap on concurrent HTTP requests to Yahoo in the process (parallel chunks share it)"
    )
    timeout: float = Field(20.0, gt=0, description="seconds before one yfinance HTTP request is abandoned")
    retries: int = Field(3, ge=0, description="extra attempts for tickers that failed with a transient error")
    backoff: float = Field(
        2.0, ge=0, description="base seconds of the exponential backoff (full jitter) between attempts"
    )
    backoff_max: float = Field(60.0, ge=0, description="longest single wait between attempts")
    overlap_days: int = Field(
        5, ge=0, description="stored trading days re-fetched to catch revisions (a split or dividend: see README)"
    )
    stale_after: int = Field(
        5, ge=0, description="a ticker more than this many trading days behind the rest is flagged stale"
    )


class ValidationSettings(Section):
    max_fill: int = Field(
        3, ge=0, description="longest run of missing/invalid closes repaired by carrying the last price forward"
    )
    min_rows: int = Field(
        300, ge=1, description="tickers with fewer valid rows are quarantined: too short to window and split"
    )


class HealthSettings(Section):
    enabled: bool = Field(True, description="run the data-health gate before training")
    window_days: int = Field(21, ge=1, description="recent trading sessions the gate inspects")
    max_missing: int = Field(
        2, ge=0, description="most missing sessions per ticker in that window before training stops"
    )
    max_jump: float = Field(0.4, gt=0, description="largest plausible absolute daily log return in that window")
    block_on_stale: bool = Field(True, description="stale tickers (ingest.stale_after) block training too")


class DenoiseSettings(Section):
    method: Literal["hampel", "ewma", "kalman", "wavelet", "none"] = Field(
        "hampel", description="causal filter applied to log adj_close before features (targets stay raw)"
    )
    hampel_window: int = Field(21, ge=3, description="trailing window (days) of the Hampel return clipper")
    hampel_sigmas: float = Field(5.0, gt=0, description="returns beyond this many robust sigmas are clipped")
    ewma_span: float = Field(5.0, ge=1, description="span (days) of the causal EWMA on log prices")
    kalman_q: float = Field(
        1e-5, gt=0, description="local-level Kalman: variance of the daily level change (log units)"
    )
    kalman_r: float = Field(1e-4, gt=0, description="local-level Kalman: variance of the observation noise (log units)")
    wavelet: str = Field("db4", description="PyWavelets wavelet of the trailing-window shrinkage")
    wavelet_window: int = Field(64, ge=8, description="trailing window (days) decomposed at every date")
    wavelet_level: int = Field(2, ge=1, description="decomposition levels whose details are soft-thresholded")

    @field_validator("wavelet")
    @classmethod
    def _known_wavelet(cls, value: str) -> str:
        import pywt

        if value not in pywt.wavelist(kind="discrete"):
            raise ValueError(f"unknown discrete wavelet {value!r} (e.g. db4, sym5, haar)")
        return value


FEATURE_FAMILIES = (
    "returns",
    "lags",
    "volatility",
    "rsi",
    "macd",
    "bollinger",
    "denoise_gap",
    "range",
    "volume",
    "calendar",
    "market",
)
# Families built unless `features.families` says otherwise. "market" is opt-in: it reads every ticker of a
# date (cross-sectional values) and context series, and is kept or dropped on the validation span (README).
DEFAULT_FAMILIES = tuple(f for f in FEATURE_FAMILIES if f != "market")


class FeatureSettings(Section):
    families: list[Literal[FEATURE_FAMILIES]] = Field(  # type: ignore[valid-type]
        list(DEFAULT_FAMILIES),
        description="feature families to build (README, 'Features'); all but 'market' by default",
    )
    horizons: list[int] = Field([1, 2, 3, 4, 5], description="forecast horizons in trading days; targets y_h{h}")
    return_windows: list[int] = Field([1, 5, 10, 21, 63], description="past log-return horizons (days): ret_{w}")
    return_lags: list[int] = Field([1, 2, 3, 5], description="lagged daily log returns: ret_1_lag{k} = ret_1 at t-k")
    vol_windows: list[int] = Field([5, 21, 63], description="rolling volatility windows of daily log returns")
    rsi_window: int = Field(14, ge=2, description="Wilder RSI window")
    macd: tuple[int, int, int] = Field((12, 26, 9), description="MACD fast, slow and signal spans")
    bollinger_window: int = Field(20, ge=2, description="Bollinger %b window (2 standard deviations)")
    volume_window: int = Field(21, ge=2, description="volume z-score window")
    market: list[str] | None = Field(
        None,
        description="context series of the 'market' family (the first that is not ^VIX is the market): unset = "
        "the index tickers in the data (^GSPC, else SPY; ^VIX when present), yfinance also fetching ^GSPC and "
        "^VIX; [] = none (market and VIX columns neutral). Series not among source.tickers are context only",
    )

    @field_validator("horizons", "return_windows", "return_lags", "vol_windows")
    @classmethod
    def _positive_sorted_unique(cls, value: list[int]) -> list[int]:
        if not value or any(v < 1 for v in value):
            raise ValueError(f"must be a non-empty list of positive integers, got {value}")
        return sorted(set(value))

    @field_validator("macd")
    @classmethod
    def _fast_before_slow(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        fast, slow, signal = value
        if not 1 <= fast < slow or signal < 1:
            raise ValueError(f"MACD spans (fast, slow, signal) must be positive with fast < slow, not {list(value)}")
        return value

    @field_validator("market")
    @classmethod
    def _symbols(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        return list(dict.fromkeys(t.strip().upper() for t in value))  # as source.tickers: case-insensitive

    @field_validator("families")
    @classmethod
    def _some_family(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one feature family is needed")
        return [f for f in FEATURE_FAMILIES if f in value]  # canonical order, no duplicates

    @property
    def max_horizon(self) -> int:
        return max(self.horizons)


class WindowSettings(Section):
    lookback: int = Field(40, ge=2, description="days of history the model sees per forecast")
    test_days: int = Field(
        250, ge=1, description="last trading days held out to evaluate the model against the random walk"
    )
    val_days: int = Field(
        250,
        ge=1,
        description="trading days before the test span that validate: early stopping, and the combination's weights "
        "on their latest publish.combination_holdout share",
    )


def held_dates(val_days: int, share: float) -> int:
    """How many of the validation span's `val_days` dates, the latest, a held `share` keeps out of early stopping
    (`features.windows.splits_before`); the tolerance keeps 0.29 of 100 at 29 where float products fall short.
    A share that holds no date is refused: the weights would silently be fit on the early-stopping span."""
    held = math.floor(val_days * share + 1e-9)
    if share > 0 and held == 0:
        raise ConfigError(
            f"publish.combination_holdout {share} of windows.val_days {val_days} holds no date for the "
            "combination's weights: raise either, or set the holdout to 0"
        )
    return held
