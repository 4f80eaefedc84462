"""Publishing: forecast rows for the latest as-of date, written atomically as Parquet and CSV.

Layout: `<out>/forecasts/asof=YYYY-MM-DD/forecasts.{parquet,csv}` and
`<out>/metrics/asof=YYYY-MM-DD/metrics.{parquet,csv}`. Rerunning an as-of date
replaces its files atomically.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import shutil
from collections.abc import Collection, Iterable
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from features.prices.calendar import next_sessions
from features.windows import Panel
from forecasting.intervals import QUANTILE_LEVELS
from nightcast.errors import one_line
from nightcast.io import atomic_write
from nightcast.words import count

log = logging.getLogger("nightcast.forecasting.publish")


def quantile_price_column(level: float) -> str:
    """The published quantile column of `level`, in percent: 0.05 -> "pred_q05", 0.5 -> "pred_q50"."""
    return f"pred_q{round(level * 100):02d}"


# quantiles of the price on the target date (last_price * exp(quantile of the log return)); null when none
QUANTILE_COLUMNS = tuple(quantile_price_column(q) for q in QUANTILE_LEVELS)

# The published forecast contract: one row per (ticker, horizon). The same rows go into the ledger.
FORECAST_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String,  # Prefect flow run id
    "model_version": pl.String,  # the published model: <name>-<weights hash>, checkpoint <models>/<version>.pt
    "asof_date": pl.Date,  # last date of data used
    "ticker": pl.String,
    "horizon": pl.Int32,  # trading days ahead
    "target_date": pl.Date,  # the exchange session `horizon` sessions after asof_date
    "last_price": pl.Float64,  # close on asof_date
    "pred_log_return": pl.Float64,  # forecast log return of the adjusted close, asof_date -> target_date
    "pred_price": pl.Float64,  # last_price * exp(pred_log_return)
    "pred_lower": pl.Float64,  # prediction interval (prices), null when none could be given
    "pred_upper": pl.Float64,
    "pred_vol": pl.Float64,  # forecast standard deviation of the log return to target_date (EWMA volatility)
    **dict.fromkeys(QUANTILE_COLUMNS, pl.Float64),
    "skill": pl.Boolean,  # the evaluation found significant skill at this horizon
    # what made the forecast: attention_lstm, its combination with the baselines ("combined", publish.forecast),
    # or the baseline published in its place (publish.guardrail)
    "source_model": pl.String,
    "trained_through": pl.Date,  # last origin date whose label the published model trained on
    "eval_version": pl.String,  # the evaluation fit that vouches for the recipe (out of sample)
    "eval_start": pl.Date,  # its evaluation span (forecast origins)
    "eval_end": pl.Date,
}
FORECAST_COLUMNS = tuple(FORECAST_SCHEMA)
# columns a forecast may leave null, and that forecasts stored by an older nightcast may lack
NULLABLE = (
    "pred_lower",
    "pred_upper",
    "pred_vol",
    *QUANTILE_COLUMNS,
    "trained_through",
    "eval_version",
    "eval_start",
    "eval_end",
)


def current_rows(panel: Panel, stale: Collection[str] = ()) -> tuple[date, np.ndarray, list[str]]:
    """The as-of date, the last row of each ticker that is current then, and the tickers left out.

    Left out, never forecast as if current: tickers flagged `stale` by ingest (too far behind the reference
    date, e.g. delisted, or not updated because the source was down) and tickers whose data stops before
    the as-of date (the newest date among the others).
    """
    last = panel.last_rows()
    current = np.array([t not in stale for t in panel.tickers], dtype=bool)
    if not current.any():
        return panel.dates[last].max().astype(object), last[:0], list(panel.tickers)
    asof = panel.dates[last[current]].max()
    fresh = current & (panel.dates[last] == asof)
    return asof.astype(object), last[fresh], [t for t, ok in zip(panel.tickers, fresh, strict=True) if not ok]


def forecast_frame(
    panel: Panel,
    rows: np.ndarray,
    y_pred: np.ndarray,
    bounds: tuple[np.ndarray, np.ndarray] | None,
    last_close: np.ndarray,
    asof: date,
    calendar: str,
    sources: list[str],
    skill: list[bool],
    meta: dict,
    sigma: np.ndarray | None = None,
    quantiles: np.ndarray | None = None,
) -> pl.DataFrame:
    """Rows of the forecast contract for predictions `y_pred` (N, K) made at rows `rows`.

    `bounds`: (N, K) lower and upper log-return bounds (NaN where none); `sources`, `skill`: per horizon;
    `meta`: run_id, model_version, trained_through, eval_version, eval_start, eval_end; `sigma`: (N, K) the
    volatility forecast of each log return (NaN where none); `quantiles`: (N, K, L) log-return quantiles at
    `QUANTILE_LEVELS` (NaN where none), published as prices.
    """
    horizons = panel.horizons
    sessions = next_sessions(asof, max(horizons), calendar)
    n, k = len(rows), len(horizons)
    pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    last_price = np.repeat(np.asarray(last_close, dtype=np.float64), k)
    if bounds is None:
        lower = upper = np.full(n * k, np.nan)
    else:
        lower, upper = (np.asarray(b, dtype=np.float64).reshape(-1) for b in bounds)
    frame = pl.DataFrame(
        {
            "asof_date": [asof] * (n * k),
            "ticker": np.repeat(np.asarray(panel.tickers)[panel.ticker_id[rows]], k),
            "horizon": np.tile(np.asarray(horizons, dtype=np.int32), n),
            "target_date": [sessions[h - 1] for h in horizons] * n,
            "last_price": last_price,
            "pred_log_return": pred,
            "pred_price": last_price * np.exp(pred),
            "pred_lower": last_price * np.exp(lower),
            "pred_upper": last_price * np.exp(upper),
            "pred_vol": np.full(n * k, np.nan) if sigma is None else np.asarray(sigma, dtype=np.float64).reshape(-1),
            "skill": list(skill) * n,
            "source_model": [str(s) for s in sources] * n,  # plain strings: a list of enum members is an Enum column
        }
    ).with_columns(_quantile_prices(last_price, quantiles, n * k))
    frame = frame.with_columns(pl.col("pred_lower", "pred_upper", "pred_vol", *QUANTILE_COLUMNS).fill_nan(None))
    constants = {name: meta.get(name) for name in FORECAST_SCHEMA if name not in frame.columns}
    return (
        frame.with_columns(pl.lit(v, dtype=FORECAST_SCHEMA[c]).alias(c) for c, v in constants.items())
        .select(FORECAST_COLUMNS)
        .sort("ticker", "horizon")
    )


def _quantile_prices(last_price: np.ndarray, quantiles: np.ndarray | None, rows: int) -> list[pl.Series]:
    """The quantile columns as prices (a price's quantile is the exp of its log return's: exp is increasing)."""
    q = (
        np.full((rows, len(QUANTILE_COLUMNS)), np.nan)
        if quantiles is None
        else quantiles.reshape(rows, len(QUANTILE_COLUMNS))
    )
    return [pl.Series(c, last_price * np.exp(q[:, i].astype(np.float64))) for i, c in enumerate(QUANTILE_COLUMNS)]


def partition_dir(out_dir: Path, kind: str, asof: date) -> Path:
    return Path(out_dir) / kind / f"asof={asof.isoformat()}"


_WRITERS = {"parquet": lambda f, p: f.write_parquet(p), "csv": lambda f, p: f.write_csv(p)}


def write_frame(frame: pl.DataFrame, directory: Path, stem: str, formats: Iterable[str]) -> list[Path]:
    """Write `frame` as `<directory>/<stem>.<fmt>` for each format, each file atomically.

    A `<stem>` file in a format no longer asked for (`publish.formats` changed since an earlier run wrote it)
    is removed once the new files are in place: left there it would be another run's numbers under this
    run's name (a new user's review read an older run's metrics.csv beside this run's metrics.parquet)."""
    formats = list(formats)
    paths = [atomic_write(directory / f"{stem}.{fmt}", lambda tmp, w=_WRITERS[fmt]: w(frame, tmp)) for fmt in formats]
    _remove_other_formats(directory, stem, formats)
    return paths


def _remove_other_formats(directory: Path, stem: str, formats: list[str]) -> None:
    for fmt in sorted(set(_WRITERS) - set(formats)):
        stale = directory / f"{stem}.{fmt}"
        if stale.exists():
            stale.unlink()
            log.info("removed %s: written by an earlier run, in a format publish.formats no longer asks for", stale)


def set_aside(result, path: Path, keep: Collection[str]) -> None:
    """Write `result`'s predictions whole to `path` (Parquet, atomically) and keep in memory only the columns
    `keep`: what is read of them before they are published (`write_predictions`). At 500 tickers x 25 years the
    columns nothing reads again (the price, the bands, the quantiles) were ~0.19 GiB held through the refit and
    the forecasts, at the nightly's peak."""
    atomic_write(path, lambda tmp: _WRITERS["parquet"](result.predictions, tmp))
    result.predictions = result.predictions.select(c for c in result.predictions.columns if c in keep)
    result.predictions_file = path


def write_predictions(result, directory: Path) -> list[Path]:
    """`result`'s predictions as `<directory>/predictions.parquet`, atomically: the file `set_aside` wrote,
    copied into place and then removed, or else the frame itself."""
    if result.predictions_file is None:
        return write_frame(result.predictions, directory, "predictions", ["parquet"])
    written = atomic_write(directory / "predictions.parquet", lambda tmp: shutil.copyfile(result.predictions_file, tmp))
    result.predictions_file.unlink()
    result.predictions_file = None
    _remove_other_formats(directory, "predictions", ["parquet"])
    return [written]


def prune_predictions(out_dir: Path, keep: int, current: date) -> list[Path]:
    """Remove `predictions.parquet` of every as-of date but the `keep` newest and `current` (the night just
    published, a rerun of an older date included) (0: keep all); returns what went. Nothing reads a past night's
    evaluation predictions again, and they are most of the outputs' growth: the forecasts, the ledger, the
    metrics and the record, which are small, stay."""
    if keep <= 0:
        return []
    found = sorted((Path(out_dir) / "metrics").glob("asof=*/predictions.parquet"), key=lambda p: p.parent.name)
    gone = [p for p in found[:-keep] if p.parent.name != f"asof={current.isoformat()}"]
    for path in gone:
        path.unlink(missing_ok=True)
    if gone:
        log.info(
            "removed the evaluation predictions of %s (publish.keep_predictions = %d)",
            count(len(gone), "older as-of date"),
            keep,
        )
    return gone


def merge_forecasts(
    folder: Path, stem: str, forecasts: pl.DataFrame, universe: Collection[str], formats: Iterable[str]
) -> pl.DataFrame:
    """`forecasts` with the stored rows of tickers outside this run's `universe`, for the same as-of date.

    A run on a subset of tickers (`--tickers NVDA ORCL`) never deletes the rest; a ticker of this run's
    universe that it did not forecast (stale, quarantined) loses its earlier row, as the run says it should.
    """
    # any format an earlier run wrote (publish.formats may have changed since), the asked-for first
    asked = list(formats)
    ordered = [*asked, *(f for f in _WRITERS if f not in asked)]
    stored, stored_path = stored_forecasts([folder / f"{stem}.{f}" for f in ordered])
    if stored is None:
        return forecasts
    lacking = set(forecasts.columns) - set(stored.columns)
    if set(stored.columns) - set(forecasts.columns) or lacking - set(NULLABLE):
        log.warning("%s has other columns (an older nightcast); it is replaced", stored_path)
        return forecasts
    stored = stored.with_columns(pl.lit(None).alias(c) for c in sorted(lacking))  # an older file: kept, not lost
    mine = set(universe) | set(forecasts["ticker"].unique().to_list())
    kept = stored.filter(~pl.col("ticker").is_in(sorted(mine)))
    if not kept.is_empty():
        log.info("kept the forecasts of %d tickers outside this run's universe", kept["ticker"].n_unique())
    return pl.concat([kept.select(forecasts.columns).cast(forecasts.schema), forecasts]).sort("ticker", "horizon")


def stored_forecasts(paths: list[Path]) -> tuple[pl.DataFrame | None, Path | None]:
    """The first of `paths` that exists and reads: a damaged Parquet file falls back to its CSV twin, which a
    subset run would otherwise replace, losing the other tickers' forecasts (a crash test: a truncated Parquet
    file, an intact CSV beside it). None: no file, or none readable (each said in a warning)."""
    for path in paths:
        if not path.exists():
            continue
        try:
            if path.suffix == ".parquet":
                return pl.read_parquet(path), path
            return pl.read_csv(path, schema_overrides=FORECAST_SCHEMA, try_parse_dates=True), path
        except (pl.exceptions.PolarsError, OSError) as exc:
            log.warning("could not read %s to keep its other tickers (%s)", path, one_line(exc))
    if any(path.exists() for path in paths):
        log.warning("no stored forecasts of %s could be read: they are replaced by this run's", paths[0].parent)
    return None, None


PACKAGES = ("nightcast", "torch", "polars", "numpy", "prefect", "scikit-learn", "pywavelets", "yfinance")


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _json_safe(value):
    """NaN and infinities (a DM test with too few periods, a ratio over zero) become null: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_run_metadata(folder: Path, metadata: dict) -> Path:
    """`run.json` beside the forecasts: settings, versions, data fingerprint, checkpoint (written atomically)."""
    body = json.dumps(_json_safe({**metadata, "versions": package_versions()}), indent=1, default=str, allow_nan=False)
    return atomic_write(Path(folder) / "run.json", lambda tmp: tmp.write_text(body))


def update_latest(out_dir: Path, asof: date, files: list[Path]) -> Path | None:
    """Point `<out>/latest.json` at this as-of date's files, unless it already points at a later date.

    Readers open `latest.json` and follow its relative paths; it is replaced atomically, and a
    rerun of an older as-of date never moves it backwards.
    """
    out_dir = Path(out_dir)
    pointer = out_dir / "latest.json"
    if pointer.exists():
        try:
            current = date.fromisoformat(json.loads(pointer.read_text())["asof_date"])
        except (ValueError, KeyError, TypeError, RecursionError):
            current = None
        if current is not None and current > asof:
            return None
    body = json.dumps(
        {
            "asof_date": asof.isoformat(),
            "files": sorted(str(Path(p).resolve().relative_to(out_dir.resolve())) for p in files),
        },
        indent=1,
    )
    return atomic_write(pointer, lambda tmp: tmp.write_text(body))
