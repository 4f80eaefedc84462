"""The vocabulary the results are keyed by: model names and the scope of a metrics row, one place each.

They are `StrEnum`s, so they compare equal to the plain strings stored in Parquet files, settings and
checkpoints, and a misspelling is an AttributeError at import instead of an empty filter at run time.
"""

from __future__ import annotations

from enum import StrEnum

import polars as pl


class Model(StrEnum):
    ATTENTION_LSTM = "attention_lstm"  # the network the nightly trains (published alone or combined)
    ENSEMBLE = "ensemble"  # attention_lstm trained from backtest.ensemble_seeds seeds, forecasts averaged
    COMBINED = "combined"  # attention_lstm shrunk towards hist_mean and the random walk (forecasting/combine.py)
    LSTM = "lstm"  # the same network without attention: the ablation
    BIDIRECTIONAL = "bidirectional"  # attention_lstm whose encoder reads the window both ways
    SELF_ATTENTION = "self_attention"  # attention_lstm with a self-attention + feed-forward block over its states
    DEMEANED = "demeaned"  # attention_lstm learning returns in excess of the universe's (forecasting/relative.py)
    RIDGE = "ridge"
    HIST_MEAN = "hist_mean"
    RANDOM_WALK = "random_walk"  # the benchmark every ratio and Diebold-Mariano test is taken against


# the ablation: every variant of the network, and how its forecasts are pooled, on identical origins
ABLATION = (
    Model.ATTENTION_LSTM,
    Model.LSTM,
    Model.BIDIRECTIONAL,
    Model.SELF_ATTENTION,
    Model.DEMEANED,
    Model.ENSEMBLE,
    Model.COMBINED,
)
# the network the nightly trains, refits and publishes from: alone, or combined with the baselines
# (`publish.forecast`); what publishes under which name is `forecasting.combine.Publishing`, one place
TRAINED_MODEL = Model.ATTENTION_LSTM
BENCHMARK = Model.RANDOM_WALK
BASELINES = (Model.RANDOM_WALK, Model.HIST_MEAN, Model.RIDGE)  # what the guardrail may publish instead
# the live record scores the ledger's forecasts under one label, whichever model (or baseline) made each
PUBLISHED_FORECASTS = "published"
# the order tables and plots list models in: the model first, the benchmark last
DISPLAY_ORDER = (
    Model.ATTENTION_LSTM,
    Model.ENSEMBLE,
    Model.COMBINED,
    Model.BIDIRECTIONAL,
    Model.SELF_ATTENTION,
    Model.DEMEANED,
    Model.LSTM,
    Model.RIDGE,
    Model.HIST_MEAN,
    Model.RANDOM_WALK,
)


class Scope(StrEnum):
    """Pooled rows carry a null ticker, so no real symbol (Allstate trades as ALL) can collide with them."""

    POOLED = "pooled"
    TICKER = "ticker"


def display_order(column: str = "model") -> pl.Expr:
    """A sort key putting a frame's model names in `DISPLAY_ORDER` (unknown names last)."""
    ranks = {m.value: i for i, m in enumerate(DISPLAY_ORDER)}
    return pl.col(column).replace_strict(ranks, default=len(DISPLAY_ORDER), return_dtype=pl.Int32)
