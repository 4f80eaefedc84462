"""The attention report's numbers, computed by hand on three forecasts of two tickers."""

from types import SimpleNamespace

import numpy as np
import pytest

from forecasting.train import Prediction

# three forecasts: AAA twice, BBB once; a window of 3 steps, oldest first (position j is lag 2 - j)
TEMPORAL = np.array([[0.2, 0.3, 0.5], [0.4, 0.4, 0.2], [0.1, 0.1, 0.8]])
INPUT = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8]])
PANEL = SimpleNamespace(tickers=["AAA", "BBB"], ticker_id=np.array([0, 0, 1]), features=["ret_1", "rsi"])


def report_of(monkeypatch, temporal, feature=None, top=2):
    """The one call of `attention_report` in this file, with the model's attention weights given."""
    from forecasting import attention

    n = len(PANEL.ticker_id)
    fake = Prediction(np.zeros((n, 1)), temporal, None, feature)
    monkeypatch.setattr(attention, "predict", lambda trained, panel, ends: fake)
    return attention.attention_report(None, PANEL, np.arange(n), top=top)


def rows(frame, key):
    return {(r["scope"], r["ticker"], r[key]): r["weight"] for r in frame.iter_rows(named=True)}


def test_mean_attention_per_ticker_and_pooled_over_forecasts(monkeypatch):
    report = report_of(monkeypatch, TEMPORAL, INPUT)
    lag = rows(report.per_lag, "lag")
    expected = {
        ("ticker", "AAA", 2): 0.3,  # (0.2 + 0.4) / 2
        ("ticker", "AAA", 1): 0.35,
        ("ticker", "AAA", 0): 0.35,  # (0.5 + 0.2) / 2: lag 0 is the window's last step
        ("ticker", "BBB", 2): 0.1,
        ("ticker", "BBB", 1): 0.1,
        ("ticker", "BBB", 0): 0.8,
        # pooled over the three forecasts, not over the two tickers' means (which would give lag 0 0.575)
        ("pooled", None, 2): 0.7 / 3,
        ("pooled", None, 1): 0.8 / 3,
        ("pooled", None, 0): 0.5,
    }
    assert lag == pytest.approx(expected)
    assert report.per_lag["scope"].to_list()[:3] == ["pooled"] * 3  # pooled rows first
    feature = rows(report.per_feature, "feature")
    assert feature == pytest.approx(
        {
            ("ticker", "AAA", "ret_1"): 0.8,
            ("ticker", "AAA", "rsi"): 0.2,
            ("ticker", "BBB", "ret_1"): 0.2,
            ("ticker", "BBB", "rsi"): 0.8,
            ("pooled", None, "ret_1"): 0.6,
            ("pooled", None, "rsi"): 0.4,
        }
    )
    assert report.summary == (
        "Temporal attention (mean over 3 forecasts): most weight on lag 0 (50.0%), lag 1 (26.7%); the last 5 days "
        "get 100.0% (uniform would give 100.0% to each 5 days, 33.3% per lag). "
        "Input attention: most weight on ret_1 (60.0%), rsi (40.0%) (uniform 50.0%)."
    )


def test_near_uniform_attention_is_called_so(monkeypatch):
    # a window of 6: lag 5 (the oldest step) gets a little more than the rest, max/min = 0.18 / 0.164 < 1.2
    flat = np.array([[0.18, 0.164, 0.164, 0.164, 0.164, 0.164]] * 3)
    report = report_of(monkeypatch, flat, top=1)
    assert report.per_feature is None
    assert report.summary.startswith("Temporal attention is close to uniform (max/min weight 1.10)")
    assert "most weight on lag 5 (18.0%); the last 5 days get 82.0% (uniform would give 83.3% to each 5 days, " in (
        report.summary
    )


def test_a_model_without_attention_has_no_report(monkeypatch):
    assert report_of(monkeypatch, None, None) is None  # the plain-LSTM ablation: nothing to report


def test_a_long_span_is_thinned_by_whole_sessions_from_the_latest():
    from forecasting.attention import spread_sessions

    sessions = np.datetime64("2020-01-01") + np.arange(100).astype("timedelta64[D]")
    dates = np.tile(sessions, 3)  # three tickers, rows grouped by ticker
    ends = np.arange(300)
    assert spread_sessions(ends, dates, limit=300) is ends  # at the limit: every window
    kept = spread_sessions(ends, dates, limit=50)  # every 6th session, the latest first
    expected = sessions[::-1][::6]
    assert set(dates[kept]) == set(expected) and len(kept) == 3 * len(expected) == 51
    assert dates[kept].max() == sessions[-1]
