"""The nightly's decisions as plain functions: when to retrain, whether a challenger replaces the champion,
how many epochs a refit trains, and what each horizon publishes.

No Prefect here: the flows call these and only wire their inputs and outputs.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date
from typing import Literal

import numpy as np
import polars as pl

from forecasting.metrics import pooled
from forecasting.registry import Champion
from nightcast.words import count

Guardrail = Literal["flag", "baseline_if_worse", "baseline"]


def staleness(
    champion: Champion | None,
    today: date,
    settings_hash: str | Collection[str],
    fingerprint_then: str | None,
    max_age_days: int,
    retrain_on_revision: bool,
    asof: date | None = None,
    tickers: tuple[Collection[str], Collection[str]] | None = None,
) -> str | None:
    """Why the champion must be retrained, or None while it is still good.

    Age is the larger of two counts of calendar days: since the run that trained it (`today` against its
    `trained_on`), and how far the data has moved past the data it was trained with (`asof`, the data's as-of
    date, against its `asof`). Run nightly they agree; a run on data that jumped ahead (a price file weeks
    newer, a lake brought up to date after a pause) ages the champion by the data's days, not the clock's.

    `settings_hash`: today's recipe hash, or every hash it may have been recorded under (`registry.layout_hashes`).
    `fingerprint_then`: today's fingerprint of the prices up to the champion's as-of date. New bars after
    that date are not a reason (the age rule covers them); a change before it is: prices the model trained
    on were revised, or tickers joined or left the universe. `tickers`: (those the champion trained on, those in
    today's data): the ones that left are named, for a revision of which prices cannot be told from the hash.
    """
    if champion is None:
        return "no champion model yet"
    accepted = {settings_hash} if isinstance(settings_hash, str) else set(settings_hash)
    if champion.settings_hash not in accepted:
        # not necessarily the user's doing: a newer nightcast's defaults count too (`nightcast config` shows them)
        return "the settings that define the model differ from the champion's, by yours or a newer nightcast's defaults"
    age = (today - champion.trained_on).days
    data_age = (asof - champion.asof).days if asof is not None else 0
    if data_age > age and data_age >= max_age_days:
        return (
            f"the data reaches {asof}, {data_age} days past the {champion.asof} the champion was trained with "
            f"(train.max_age_days = {max_age_days})"
        )
    if age >= max_age_days:
        return f"the champion is {age} days old (train.max_age_days = {max_age_days})"
    if retrain_on_revision and fingerprint_then is not None and fingerprint_then != champion.data_fingerprint:
        left = sorted(set(tickers[0]) - set(tickers[1])) if tickers else []
        if left:  # it trained on them, so they had prices then: they left the data (a ticker that joined may
            # only have been too short to train on, so it is not named)
            shown = ", ".join(left[:10]) + (f" and {len(left) - 10} more" if len(left) > 10 else "")
            return (
                f"{count(len(left), 'ticker')} the champion trained on {'is' if len(left) == 1 else 'are'} no "
                f"longer in the data: {shown}"
            )
        return f"prices up to {champion.asof} that the champion trained on were revised (or tickers changed)"
    return None


def refit_epochs(best_epoch: int) -> int:
    """Epochs of the refit that publishes: the early-stopped evaluation fit's best epoch count.

    The refit sees the evaluation's training and validation spans and the labels realised since, each
    sample as often as the validated fit saw its samples, on the same learning-rate schedule; with no
    validation span left to stop on, this is the count the data vouched for.
    """
    return max(1, int(best_epoch))


@dataclass(frozen=True)
class Verdict:
    promote: bool
    reason: str  # one sentence for logs, the run summary and run.json
    champion_score: float | None  # mean over horizons of the MSE ratio to the random walk
    challenger_score: float | None
    first_origin: date | None
    last_origin: date | None
    n_forecasts: int


KEY = ["ticker", "asof_date", "horizon"]


def mean_ratio(pairs: pl.DataFrame, column: str) -> float:
    """Mean over horizons of MSE / the random walk's MSE (zero forecast) on the same rows: scale-free, so
    the long horizons' larger errors do not outweigh the short ones.

    Summed in a fixed row order with numpy: identical forecasts must give bit-identical scores (a tie keeps
    the champion), which a multi-threaded group-by does not promise.
    """
    ratios = []
    for (_,), g in sorted(pairs.sort(KEY).group_by("horizon", maintain_order=True), key=lambda kv: kv[0][0]):
        y, p = g["y_true"].to_numpy(), g[column].to_numpy()
        rw = float(np.mean(y**2))
        if rw > 0:
            ratios.append(float(np.mean((y - p) ** 2)) / rw)
    return float(np.mean(ratios)) if ratios else math.nan


def judge(
    champion: pl.DataFrame | None,
    challenger: pl.DataFrame,
    champion_cutoff: date | None,
    challenger_cutoff: date,
) -> Verdict:
    """Does the challenger replace the champion? Only by beating it on identical forecasts that are out of
    sample for both: the same (ticker, origin, horizon) rows, origins on or after both models' cutoffs (every
    label either model saw was realised before its cutoff). A tie keeps the champion.

    `champion`, `challenger`: long predictions (`ticker, asof_date, horizon, y_true, y_pred`).
    """
    if champion is None or champion_cutoff is None:
        return Verdict(True, "no champion to compare with", None, None, None, None, 0)
    start = max(champion_cutoff, challenger_cutoff)
    both = (
        champion.filter(pl.col("asof_date") >= start)
        .select(*KEY, "y_true", pl.col("y_pred").alias("champion"))
        .join(challenger.select(*KEY, pl.col("y_pred").alias("challenger")), on=KEY, how="inner")
    )
    if both.is_empty():
        return Verdict(
            True, f"no forecast origin on or after {start} is out of sample for both models", None, None, None, None, 0
        )
    old, new = mean_ratio(both, "champion"), mean_ratio(both, "challenger")
    first, last = both["asof_date"].min(), both["asof_date"].max()
    span = f"{both.height} forecasts from origins {first} .. {last}, out of sample for both"
    verb = "beats" if new < old else "does not beat"
    why = f"the challenger's mean MSE ratio to the random walk {new:.4f} {verb} the champion's {old:.4f} on {span}"
    return Verdict(new < old, why, old, new, first, last, both.height)


@dataclass(frozen=True)
class Source:
    model: str  # what publishes at this horizon
    skill: bool  # the model beat the random walk significantly on the evaluation span
    worse: bool  # the model was significantly worse than the random walk there


def horizon_sources(
    metrics: pl.DataFrame, model: str, baselines: tuple[str, ...], alpha: float, guardrail: Guardrail
) -> dict[int, Source]:
    """Per horizon, what publishes, from the pooled evaluation of `model` against the random walk.

    - skill: ratio < 1 and the Diebold-Mariano test says so at `alpha`;
    - worse: ratio > 1 and the test says so (the model adds error to doing nothing);
    - `flag` publishes the model everywhere (skill=false where it has none); `baseline_if_worse` (default)
      publishes the best baseline (lowest evaluation MSE) where the model is significantly worse, and the model
      elsewhere; `baseline` publishes the best baseline wherever the model lacks skill.
    """
    rows = pooled(metrics)
    out = {}
    for r in rows.filter(pl.col("model") == model).iter_rows(named=True):
        h = int(r["horizon"])
        ratio, stat, p = r.get("mse_ratio"), r.get("dm_stat"), r.get("dm_pvalue")
        known = None not in (ratio, stat, p) and not any(math.isnan(v) for v in (ratio, stat, p))
        skill = known and ratio < 1 and stat < 0 and p < alpha
        worse = known and ratio > 1 and stat > 0 and p < alpha
        replace = (guardrail == "baseline" and not skill) or (guardrail == "baseline_if_worse" and worse)
        source = model
        if replace:
            candidates = rows.filter((pl.col("horizon") == h) & pl.col("model").is_in(list(baselines)))
            if not candidates.is_empty():
                source = candidates.sort("mse", "model")["model"][0]
        out[h] = Source(str(source), bool(skill), bool(worse))  # a plain str: files and frames store strings
    return out
