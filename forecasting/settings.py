"""Typed settings of the model, training, evaluation and publishing stages."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Literal

from pydantic import Field, field_validator, model_validator

from forecasting.names import Model
from nightcast.settings import Section


class ModelSettings(Section):
    hidden_size: int = Field(
        96, ge=1, description="LSTM hidden units per layer (96: best validation MSE of 64/96/128 on the sample)"
    )
    num_layers: int = Field(1, ge=1, description="stacked LSTM layers")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout between LSTM layers and in the head")
    attention: bool = Field(True, description="temporal attention over encoder states; false = plain LSTM ablation")
    attention_kind: Literal["additive", "dot"] = Field(
        "additive", description="temporal attention scorer: additive (Bahdanau) or scaled dot-product"
    )
    attention_heads: int = Field(
        1, ge=1, description="heads of the scaled dot-product attention (hidden_size must divide)"
    )
    attention_size: int = Field(32, ge=1, description="width of the additive attention scorer")
    input_attention: bool = Field(False, description="DA-RNN-style attention over the input variables, once per window")
    bidirectional: bool = Field(
        False,
        description="the encoder reads the window both ways (still causal: the window holds only the past); "
        "its two directions are merged back to hidden_size",
    )
    self_attention: bool = Field(
        False,
        description="a transformer block over the encoder states (multi-head self-attention with attention_heads "
        "heads, then a feed-forward layer, each with a residual and layer norm): encode -> attend -> FFN -> output",
    )
    quantiles: list[float] = Field(
        default_factory=list,
        description="quantile levels to forecast as well (e.g. [0.1, 0.5, 0.9]); empty = mean only",
    )
    ticker_embedding: int = Field(0, ge=0, description="size of a learned per-ticker embedding; 0 = none")

    @field_validator("quantiles")
    @classmethod
    def _levels(cls, value: list[float]) -> list[float]:
        if any(not 0 < q < 1 for q in value) or len(set(value)) != len(value):
            raise ValueError(f"quantiles must be distinct levels strictly between 0 and 1, got {value}")
        return sorted(value)

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelSettings:
        if (self.attention_kind == "dot" or self.self_attention) and self.hidden_size % self.attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by attention_heads {self.attention_heads}"
            )
        return self


# Marks a training setting that says how and when a fit runs, not what it learns: it is left out of the recipe
# (the hash whose change retrains, and what a kept champion's refit reuses). Every other setting is recipe,
# so a new field retrains by default instead of being silently ignored.
RUN_ONLY = {"recipe": False}


class TrainSettings(Section):
    epochs: int = Field(30, ge=1, description="maximum passes over the training span")
    batch_size: int = Field(256, ge=1, description="samples per optimisation step (on a GPU: the smallest)")
    max_batch_size: int = Field(
        4096,
        ge=1,
        description="on a GPU the batch grows with the training span up to this, the learning rate by the square "
        "root of the growth (forecasting/batching.py); equal to batch_size = never",
    )
    min_steps_per_epoch: int = Field(
        100, ge=1, description="on a GPU the batch grows only while an epoch keeps at least this many steps"
    )
    learning_rate: float = Field(1e-3, gt=0, description="AdamW peak learning rate (cosine decay over epochs)")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    grad_clip: float = Field(1.0, gt=0, description="maximum global gradient norm")
    patience: int = Field(5, ge=1, description="epochs without validation improvement before stopping")
    seed: int = Field(7, description="seed for weights and batch order: same seed and thread count, same model on CPU")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        "auto", description="auto picks cuda > mps > cpu", json_schema_extra=RUN_ONLY
    )
    cuda_graph: bool = Field(
        True,
        description="on a GPU, capture the whole training step as one CUDA graph (false: launch kernel by kernel)",
        json_schema_extra=RUN_ONLY,
    )
    concurrent_fits: int = Field(
        8,
        ge=1,
        le=32,
        description="on a GPU, fits trained at once (a walk-forward's models, an ensemble's seeds, cold-start "
        "refits), each on its own CUDA stream, taking turns step by step; 1 = one after another. Each holds its "
        "own scaled copy of the panel on the device: memory grows with this. A CPU always trains them one after "
        "another",
        json_schema_extra=RUN_ONLY,
    )
    threads: int = Field(
        0,
        ge=0,
        description="CPU threads for torch; 0 = one per core not busy with other processes (re-measured)",
        json_schema_extra=RUN_ONLY,
    )
    progress: bool = Field(
        True,
        description="show progress while training and backtesting: a bar on a terminal, elsewhere (a log file, a "
        "Prefect worker) a log line for the first step, then at most one each 30 s, and the last",
        json_schema_extra=RUN_ONLY,
    )
    max_age_days: int = Field(
        7,
        ge=0,
        description="the nightly retrains (evaluates a challenger and refits) when the champion is this old",
        json_schema_extra=RUN_ONLY,
    )
    retrain_on_revision: bool = Field(
        True,
        description="the nightly retrains when prices the champion trained on were revised (or tickers changed)",
        json_schema_extra=RUN_ONLY,
    )
    timeout_s: int = Field(
        3600, ge=1, description="time limit of a training or backtest task (seconds)", json_schema_extra=RUN_ONLY
    )


def training_recipe(training: TrainSettings) -> dict:
    """The training settings that define what a fit learns (all but those marked RUN_ONLY), JSON-ready."""
    dumped = training.model_dump(mode="json")
    return {
        name: dumped[name]
        for name, info in TrainSettings.model_fields.items()
        if (info.json_schema_extra or {}).get("recipe", True)
    }


class BacktestSettings(Section):
    test_start: date | None = Field(
        None, description="first forecast origin (default: the last windows.test_days dates)"
    )
    test_end: date | None = Field(None, description="last forecast origin (default: the last date with known targets)")
    refit_every: int = Field(63, ge=0, description="trading days between refits; 0 = fit once, at the test start")
    window: Literal["expanding", "rolling"] = Field("expanding", description="training window before each refit")
    rolling_days: int = Field(2520, ge=50, description="length of a rolling training window (trading days)")
    warm_start: bool = Field(True, description="a refit starts from the previous fold's weights (false: cold start)")
    models: list[Model] = Field(
        [Model.ATTENTION_LSTM, Model.COMBINED, Model.LSTM, Model.RANDOM_WALK, Model.HIST_MEAN, Model.RIDGE],
        description="models scored on identical origins (combined: what the nightly publishes by default)",
    )

    @model_validator(mode="after")
    def _span_in_order(self) -> BacktestSettings:
        # known without any data: said before a run starts, not after ingest and features (~13 s)
        if self.test_start is not None and self.test_end is not None and self.test_start > self.test_end:
            raise ValueError(f"backtest.test_start {self.test_start} is after backtest.test_end {self.test_end}")
        return self

    @model_validator(mode="after")
    def _combined_needs_its_model(self) -> BacktestSettings:
        if Model.COMBINED in self.models and Model.ATTENTION_LSTM not in self.models:
            raise ValueError("backtest.models: 'combined' combines attention_lstm, which must be listed too")
        return self

    ensemble_seeds: int = Field(5, ge=1, description="seeds of the 'ensemble' model (attention_lstm, averaged)")
    ridge_alpha: float | None = Field(
        None,
        ge=0,
        description="L2 penalty of the ridge baseline (standardised features); none = chosen per horizon "
        "among ridge_alphas on the validation span",
    )
    ridge_alphas: list[float] = Field(
        [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6], description="penalties the ridge baseline chooses from"
    )
    interval: Literal["conformal", "quantile", "none"] = Field(
        "conformal", description="prediction intervals: conformal on past residuals, or the quantile head"
    )
    coverage: float = Field(0.8, gt=0, lt=1, description="nominal coverage of the prediction intervals")
    vol_fast_weight: float = Field(
        0.25,
        ge=0,
        le=1,
        description="the volatility forecast's variance: this weight on a fast EWMA (lambda 0.94), the rest on a "
        "slow one (0.995, the long-run level); chosen on the development universe's validation span",
    )
    interval_scale: Literal["ewma", "none"] = Field(
        "ewma",
        description="conformal intervals in units of each origin's EWMA volatility forecast (wide when markets are "
        "wild, narrow when calm); none = one width per model and horizon",
    )
    conformal_window: int = Field(
        60,
        ge=1,
        description="past target dates whose out-of-sample residuals (every ticker's) set the conformal intervals "
        "and quantiles, per model and horizon; chosen on the development universe before 2017",
    )
    conformal_min: int = Field(50, ge=5, description="fewest past residuals before an interval is given")
    dm_alpha: float = Field(0.05, gt=0, lt=1, description="Diebold-Mariano significance level for 'skill'")
    long_short_k: int = Field(
        5, ge=1, description="names held long and short each day by the long-short score (fewer tickers: half each)"
    )
    cost_bps: float = Field(5.0, ge=0, description="cost of the long-short score, basis points per unit of turnover")
    ic_min_tickers: int = Field(3, ge=2, description="fewest tickers on a date for its information coefficients")


class PublishSettings(Section):
    forecast: Literal["combined", "model"] = Field(
        "combined",
        description="what the nightly publishes from the network it trains: 'combined' (the network's forecast "
        "shrunk towards the historical mean and the random walk, per horizon, by weights fit on the latest "
        "combination_holdout share of the evaluation fit's validation span: forecasting/combine.py) or 'model' "
        "(the network's forecast alone)",
    )
    combination_holdout: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="share of the validation span, its latest dates, that the network does not early-stop on and "
        "the combination's weights are fit on (a purge of the longest horizon between them); 0 = the weights on "
        "the early-stopping span itself. Applies to every network of a backtest that scores 'combined'",
    )
    calendar: str = Field(
        "XNYS",
        description="exchange calendar the universe is modelled on (exchange_calendars name: XNYS, XLON, XTKS, 24/7): "
        "target dates, closed bars, sessions behind, the health gate; rows on other days are left out of the model",
    )
    guardrail: Literal["flag", "baseline_if_worse", "baseline"] = Field(
        "baseline_if_worse",
        description="what publishes where the evaluation finds no skill: 'baseline_if_worse' publishes the best "
        "baseline where the model is significantly worse than the random walk and flags the rest skill=false; "
        "'flag' always publishes the model; 'baseline' publishes the best baseline wherever it lacks skill",
    )
    formats: list[Literal["parquet", "csv"]] = Field(
        ["parquet", "csv"],
        min_length=1,  # none: a run said "25 forecasts" and moved latest.json with no forecasts file written
        description="file formats written under outputs/",
    )
    keep_predictions: int = Field(
        0,
        ge=0,
        description="as-of dates whose evaluation predictions.parquet is kept, newest first (0: all); older ones "
        "are removed after a night publishes (1.5 MB a night on the sample, in proportion to the tickers); "
        "forecasts, ledger, metrics and record are never removed",
    )


def publishing_recipe(publishing: PublishSettings) -> dict:
    """The publish settings that belong to the recipe (a change retrains: the champion's evaluation, guardrail
    and contest were judged on what it published). The plain model adds nothing, so a champion recorded
    before `publish.forecast` existed (which published the plain model) keeps its recipe hash under it; the
    combination's holdout changes nothing a plain model's evaluation trains (`held_share`), so it counts only
    when the combination publishes."""
    if publishing.forecast == "model":
        return {}
    return {"forecast": publishing.forecast, "combination_holdout": publishing.combination_holdout}


def held_share(models: Iterable[str], publishing: PublishSettings) -> float:
    """The share of the validation span a backtest of `models` holds out of early stopping: the combination's
    (`publish.combination_holdout`) when it scores `combined`, for every network it trains (one protocol for
    the ablation); none otherwise (a network published alone early-stops on the whole span)."""
    return publishing.combination_holdout if Model.COMBINED in set(models) else 0.0


# Settings of the recipe added after champions were recorded, oldest first, each group with the values that
# train what nightcast trained before the group existed (`registry.layout_hashes`): a champion recorded without
# them is the same recipe while they hold these values. A new recipe setting with such a value is appended here
# (and tests/forecasting/test_registry.py's hashes of earlier nightcasts' defaults must still be accepted). The
# GPU batch rule (train.max_batch_size, min_steps_per_epoch, 2026-11-27) is not: no value of it trains as a GPU
# trained before it, so a champion from before it is evaluated against a new challenger.
ADDED_TO_RECIPE: tuple[dict[tuple[str, str], object], ...] = (
    {("model", "bidirectional"): False, ("model", "self_attention"): False},  # 2026-11-27, 2f7d09a
    {("features", "market"): None},  # no market context; 2026-11-27, 1f3dee8
    {("publish", "combination_holdout"): 0.0},  # weights on the early-stopping span; 2026-11-28, 4a43271
)
