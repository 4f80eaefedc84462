"""Feature building is cached on the lake fingerprint: an unchanged lake skips it."""

import pytest
from prefect import flow

from features.sources import load_sample
from flows.settings import load_settings
from flows.tasks import make_features

pytestmark = pytest.mark.slow


def test_unchanged_lake_skips_feature_building(prefect_harness, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prices = load_sample().filter(ticker="NVDA").tail(400)
    settings = load_settings(None, environ={})
    other = load_settings(None, environ={"NIGHTCAST_FEATURES__RSI_WINDOW": "10"})

    @flow
    def build_three_times():
        first = make_features(prices, settings, "lake-a", return_state=True)
        again = make_features(prices, settings, "lake-a", return_state=True)
        changed_lake = make_features(prices, settings, "lake-b", return_state=True)
        changed_settings = make_features(prices, other, "lake-a", return_state=True)
        return [s.name for s in (first, again, changed_lake, changed_settings)], again.result()[1].X.shape

    names, shape = build_three_times()
    assert names == ["Completed", "Cached", "Completed", "Completed"]
    assert shape[0] > 0
