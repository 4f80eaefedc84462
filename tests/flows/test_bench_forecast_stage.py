"""benchmarks/nightly.py's forecast+publish benchmark: the stage's own work again, on the inputs the flow gave it."""

import polars as pl
import pytest

pytestmark = pytest.mark.slow


def test_the_stage_runs_again_on_the_flows_inputs_and_everything_is_put_back(prefect_harness, settings):
    from benchmarks.nightly import PUBLISH_TASKS, capture_forecast_and_publish, forecast_and_publish_again
    from flows import nightly as module
    from flows import nightly_tasks
    from flows.nightly import nightly

    def wiring():
        return nightly_tasks.forecast.fn, module._publish, [getattr(nightly_tasks, n) for n in PUBLISH_TASKS]

    before = wiring()
    inputs = capture_forecast_and_publish()
    nightly(settings)
    path = next((settings.paths.out_dir / "forecasts").glob("asof=*/forecasts.parquet"))
    published = pl.read_parquet(path)
    steps = forecast_and_publish_again(inputs)
    assert list(steps) == [
        "forecast",
        "publish outputs",
        "record in ledger",
        "live record",
        "inspect attention",
        "finish publishing",
        "cross-section, qlike, metadata",
    ]
    assert all(seconds >= 0 for seconds in steps.values())
    again = pl.read_parquet(path)  # the stage's files written again, with the same forecasts
    assert again.drop("run_id").equals(published.drop("run_id")) and again["run_id"][0] != published["run_id"][0]
    assert wiring() == before  # the flow's tasks and `_publish` as they were
