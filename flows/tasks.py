"""Tasks shared by the flows: thin wrappers over `features` and `forecasting`."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from features import denoise, validate
from features.build import FeatureFrame, build_features
from features.errors import InsufficientDataError
from features.windows import Panel, make_panel
from flows.settings import Settings
from forecasting.backtest import BacktestResult, walk_forward
from forecasting.registry import settings_hash
from forecasting.settings import BacktestSettings


@task(name="require history", cache_policy=NO_CACHE)
def require_history(prices: pl.DataFrame, settings: Settings) -> tuple[pl.DataFrame, dict[str, str]]:
    kept, findings = validate.require_history(prices, settings.validation.min_rows)
    if kept.is_empty():
        raise InsufficientDataError(
            f"no ticker has validation.min_rows={settings.validation.min_rows} rows: "
            + "; ".join(str(f) for f in findings)
        )
    return kept, {f.ticker: str(f) for f in findings}


def _features_key(context, parameters) -> str:
    """Same lake content and same denoise/feature settings: same features, whatever the run."""
    s = parameters["settings"]
    return "features-" + parameters["fingerprint"] + "-" + settings_hash(
        {"denoise": s.denoise.model_dump(mode="json"), "features": s.features.model_dump(mode="json")}
    )


@task(name="features", cache_key_fn=_features_key, cache_expiration=timedelta(days=7), persist_result=True)
def make_features(prices: pl.DataFrame, settings: Settings, fingerprint: str) -> tuple[FeatureFrame, Panel]:
    """Denoise, build features and the panel; cached on the lake fingerprint, so an unchanged lake skips this."""
    ff = build_features(denoise.denoise(prices.sort("ticker", "date"), settings.denoise), settings.features)
    return ff, make_panel(ff, settings.features.max_horizon)


@task(name="walk-forward backtest", cache_policy=NO_CACHE)
def run_backtest(panel: Panel, settings: Settings, backtest: BacktestSettings, fingerprint: str) -> BacktestResult:
    return walk_forward(
        panel,
        backtest,
        settings.model,
        settings.train,
        settings.windows.lookback,
        settings.windows.val_days,
        settings.windows.test_days,
        fingerprint,
        progress=settings.train.progress,
    )
