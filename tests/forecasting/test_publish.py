import os
from datetime import date

import numpy as np
import polars as pl
import pytest

from features.build import build_features
from features.denoise import denoise
from features.settings import DenoiseSettings, FeatureSettings
from features.windows import make_panel
from forecasting.backtest import long_predictions
from forecasting.publish import FORECAST_COLUMNS, current_rows, forecast_frame, partition_dir, write_frame
from tests.conftest import synthetic_prices


@pytest.fixture(scope="module")
def panel():
    prices = synthetic_prices(["AAA", "BBB", "CCC"], 200, seed=4, start=date(2014, 3, 3))
    # CCC stops early: a stale ticker
    prices = prices.filter(~((pl.col("ticker") == "CCC") & (pl.col("date") > date(2014, 12, 1))))
    ff = build_features(denoise(prices, DenoiseSettings()), FeatureSettings())
    return make_panel(ff, max_horizon=5)


def test_forecast_schema_rows_and_trading_days(panel):
    asof, rows, left_out = current_rows(panel)
    assert asof == date(2014, 12, 5)
    assert [panel.tickers[panel.ticker_id[r]] for r in rows] == ["AAA", "BBB"] and left_out == ["CCC"]
    # a ticker ingest flagged stale is never forecast, even where its last bar is the newest
    assert current_rows(panel, stale={"BBB"})[1:] == (rows[:1], ["BBB", "CCC"])
    nothing = current_rows(panel, stale={"AAA", "BBB", "CCC"})
    assert nothing[1].size == 0 and nothing[2] == ["AAA", "BBB", "CCC"]
    y = np.full((len(rows), 5), 0.01)
    close = np.array([10.0, 20.0])
    lower, upper = y - 0.02, y + 0.03
    lower[0, 4] = upper[0, 4] = np.nan  # no interval there
    sources = ["m", "m", "m", "m", "random_walk"]
    meta = {"run_id": "run-1", "model_version": "m-1", "trained_through": date(2014, 11, 28), "eval_version": "e-1"}
    frame = forecast_frame(
        panel, rows, y, (lower, upper), close, asof, "XNYS", sources, [True, False] * 2 + [False], meta
    )
    assert tuple(frame.columns) == FORECAST_COLUMNS
    assert frame.height == 2 * 5
    aaa = frame.filter(pl.col("ticker") == "AAA").sort("horizon")
    assert aaa["source_model"].to_list() == sources and aaa["skill"].to_list() == [True, False, True, False, False]
    assert aaa["pred_lower"][0] == pytest.approx(10.0 * np.exp(-0.01)) and aaa["pred_upper"][0] == pytest.approx(
        10.0 * np.exp(0.04)
    )
    assert aaa["pred_lower"][4] is None and aaa["pred_upper"][4] is None
    assert (frame["trained_through"] == date(2014, 11, 28)).all() and frame["eval_start"].null_count() == 10
    assert (frame["run_id"] == "run-1").all() and (frame["model_version"] == "m-1").all()
    assert frame.filter(pl.col("ticker") == "AAA")["target_date"].to_list() == [
        date(2014, 12, 8),
        date(2014, 12, 9),
        date(2014, 12, 10),
        date(2014, 12, 11),
        date(2014, 12, 12),
    ]
    bbb = frame.filter(pl.col("ticker") == "BBB").row(0, named=True)
    assert bbb["last_price"] == 20.0 and bbb["pred_price"] == pytest.approx(20.0 * np.exp(0.01))


def test_long_predictions_align_targets_and_dates(panel):
    ends = panel.ends(40)[:3]
    frame = long_predictions(panel, ends, np.zeros((3, 5)), "random_walk")
    assert frame.height == 15
    first = frame.filter(pl.col("horizon") == 3).row(0, named=True)
    assert first["y_true"] == pytest.approx(float(panel.Y[ends[0], 2]))
    assert first["target_date"] == panel.dates[ends[0] + 3].astype(object)


def test_rerun_replaces_files_atomically(tmp_path):
    target = partition_dir(tmp_path, "forecasts", date(2014, 12, 31))
    assert target == tmp_path / "forecasts" / "asof=2014-12-31"
    write_frame(pl.DataFrame({"a": [1]}), target, "forecasts", ["parquet", "csv"])
    paths = write_frame(pl.DataFrame({"a": [2, 3]}), target, "forecasts", ["parquet", "csv"])
    assert pl.read_parquet(paths[0])["a"].to_list() == [2, 3]
    assert (target / "forecasts.csv").read_text() == "a\n2\n3\n"
    assert sorted(p.name for p in target.iterdir()) == ["forecasts.csv", "forecasts.parquet"]
    umask = os.umask(0)
    os.umask(umask)
    assert paths[0].stat().st_mode & 0o777 == 0o666 & ~umask  # normal file mode, not a temp file's 0600


def test_a_subset_run_keeps_the_other_tickers_forecasts(panel, tmp_path):
    from forecasting.publish import merge_forecasts

    asof, rows, _ = current_rows(panel)
    meta = {"run_id": "run-1", "model_version": "m-1"}

    def frame(y: float, which: slice, run: str):
        return forecast_frame(
            panel,
            rows[which],
            np.full((len(rows[which]), 5), y),
            None,
            np.array([10.0, 20.0])[which],
            asof,
            "XNYS",
            ["m"] * 5,
            [False] * 5,
            meta | {"run_id": run},
        )

    folder = partition_dir(tmp_path, "forecasts", asof)
    both = ["parquet", "csv"]
    write_frame(frame(0.01, slice(0, 2), "all"), folder, "forecasts", both)
    only_bbb = frame(0.02, slice(1, 2), "subset")
    merged = merge_forecasts(folder, "forecasts", only_bbb, ["BBB"], both)
    assert merged.height == 10 and merged["ticker"].unique().sort().to_list() == ["AAA", "BBB"]
    assert merged.filter(pl.col("ticker") == "AAA")["run_id"].unique().to_list() == ["all"]  # kept
    assert merged.filter(pl.col("ticker") == "BBB")["pred_log_return"].unique().to_list() == [0.02]  # replaced
    # AAA in this run's universe but not forecast (stale, quarantined): its earlier row goes, as the run says
    assert merge_forecasts(folder, "forecasts", only_bbb, ["AAA", "BBB"], both).height == 5
    (folder / "forecasts.parquet").unlink()  # only the CSV left: read back with the contract's types
    assert merge_forecasts(folder, "forecasts", only_bbb, ["BBB"], ["csv"]).equals(merged)
    # publish.formats changed to Parquet only: the earlier CSV still keeps AAA's row
    assert merge_forecasts(folder, "forecasts", only_bbb, ["BBB"], ["parquet"]).equals(merged)
    # a damaged Parquet file (a crash test: truncated by hand) falls back to its intact CSV twin
    (folder / "forecasts.parquet").write_bytes(b"PAR1 not really")
    assert merge_forecasts(folder, "forecasts", only_bbb, ["BBB"], both).equals(merged)
    (folder / "forecasts.csv").write_text("garbage")  # nothing readable left: replaced, with warnings
    assert merge_forecasts(folder, "forecasts", only_bbb, ["BBB"], both).equals(only_bbb)


def test_a_format_no_longer_asked_for_is_not_left_with_another_runs_numbers(tmp_path):
    """A new user's review: after publish.formats = ["parquet"], metrics.csv still held the earlier run's."""
    write_frame(pl.DataFrame({"a": [1]}), tmp_path, "metrics", ["parquet", "csv"])
    write_frame(pl.DataFrame({"b": [1]}), tmp_path, "other", ["csv"])
    write_frame(pl.DataFrame({"a": [2]}), tmp_path, "metrics", ["parquet"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.parquet", "other.csv"]  # only its own stem
    write_frame(pl.DataFrame({"a": [3]}), tmp_path, "metrics", ["csv"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "other.csv"]


def test_quantile_columns_are_prices_and_older_files_without_them_merge(panel, tmp_path):
    from forecasting.publish import QUANTILE_COLUMNS, merge_forecasts

    asof, rows, _ = current_rows(panel)
    y = np.full((2, 5), 0.01)
    offsets = np.array([-0.05, -0.03, 0.0, 0.03, 0.05])
    quantiles = y[:, :, None] + offsets[None, None, :]
    quantiles[1, 4] = np.nan  # too few residuals for a source: null, not NaN
    meta = {"run_id": "new", "model_version": "m-1"}
    args = (panel, rows, y, None, np.array([10.0, 20.0]), asof, "XNYS", ["combined"] * 5, [False] * 5)
    frame = forecast_frame(*args, meta, None, quantiles)
    assert QUANTILE_COLUMNS == ("pred_q05", "pred_q10", "pred_q50", "pred_q90", "pred_q95")
    first = frame.row(0, named=True)
    assert [first[c] for c in QUANTILE_COLUMNS] == pytest.approx(10.0 * np.exp(0.01 + offsets), rel=1e-12)
    assert first["pred_q50"] == first["pred_price"]
    assert frame.filter((pl.col("ticker") == "BBB") & (pl.col("horizon") == 5))["pred_q05"].null_count() == 1
    # a file written before the quantile (and volatility) columns existed keeps its other tickers' rows
    folder = partition_dir(tmp_path, "forecasts", asof)
    old = forecast_frame(*args, meta | {"run_id": "old"}).drop(*QUANTILE_COLUMNS, "pred_vol")
    for fmt in ("parquet", "csv"):
        write_frame(old, folder, "forecasts", [fmt])
        merged = merge_forecasts(folder, "forecasts", frame.filter(pl.col("ticker") == "BBB"), ["BBB"], [fmt])
        assert merged.columns == list(FORECAST_COLUMNS) and merged.height == 10, fmt
        kept = merged.filter(pl.col("ticker") == "AAA")
        assert kept["run_id"].unique().to_list() == ["old"] and kept["pred_q05"].null_count() == 5, fmt
        (folder / f"forecasts.{fmt}").unlink()


def test_predictions_set_aside_are_published_whole_and_the_scratch_file_goes(tmp_path):
    """`set_aside` writes the predictions whole and keeps some columns in memory; `write_predictions` puts that
    file in place (atomically, an older CSV of them removed) and removes the scratch copy; without one, the frame."""
    from dataclasses import dataclass
    from pathlib import Path

    from forecasting.publish import set_aside, write_predictions

    @dataclass
    class Result:
        predictions: pl.DataFrame
        predictions_file: Path | None = None

    frame = pl.DataFrame({"model": ["a", "b"], "y_pred": [0.1, 0.2], "q0.5": [0.1, 0.2], "last_price": [1.0, 2.0]})
    result, scratch, folder = Result(frame), tmp_path / "scratch" / "p.parquet", tmp_path / "metrics"
    folder.mkdir()
    (folder / "predictions.csv").write_text("an older run's\n")
    set_aside(result, scratch, keep=("model", "y_pred", "not_there"))
    assert result.predictions.columns == ["model", "y_pred"] and result.predictions_file == scratch
    assert write_predictions(result, folder) == [folder / "predictions.parquet"]
    assert pl.read_parquet(folder / "predictions.parquet").equals(frame)
    assert not scratch.exists() and result.predictions_file is None and not (folder / "predictions.csv").exists()
    # nothing set aside: the frame in memory is what is written
    write_predictions(Result(frame.head(1)), folder)
    assert pl.read_parquet(folder / "predictions.parquet").height == 1


def test_a_runs_scratch_folder_is_its_own_and_goes_when_the_run_ends_even_on_failure(tmp_path):
    """Each run gets a new folder under the root, removed when it ends; a killed run's old folder is cleared, a
    recent one (another run's, maybe) is left alone."""
    import subprocess
    import sys
    import time

    from nightcast.io import scratch_folder

    root = tmp_path / "scratch" / "nightly"
    # folders of this function's own naming, "<pid>-<12 hex>": a live pid's untouched for two days, and a recent one
    old, recent = root / f"{os.getpid()}-aaaaaaaaaaaa", root / f"{os.getpid()}-bbbbbbbbbbbb"
    old.mkdir(parents=True)
    recent.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed_today = root / f"{gone.stdout.strip()}-0123456789ab"  # a run killed minutes ago: its process is gone
    killed_today.mkdir()
    (killed_today / "predictions.parquet").write_text("z")
    (old / "predictions.parquet").write_text("x")
    os.utime(old, (time.time() - 2 * 86_400, time.time() - 2 * 86_400))
    with pytest.raises(RuntimeError), scratch_folder(root) as inside:
        assert inside.parent == root and list(inside.iterdir()) == []
        assert not old.exists() and not killed_today.exists() and recent.exists()
        (inside / "set aside").write_text("y")
        raise RuntimeError("the run failed")
    assert sorted(p.name for p in root.iterdir()) == [recent.name]  # another run's: the root stays
    recent.rmdir()
    with scratch_folder(root) as inside:
        assert inside.exists()
    assert not root.exists() and not root.parent.exists()  # nothing left behind once no run holds a folder


def test_older_evaluation_predictions_are_pruned_only_when_asked(tmp_path):
    """An operator's finding: predictions.parquet is most of the outputs' growth (1.5 of 1.7 MB a night on the
    sample) and nothing pruned it. publish.keep_predictions keeps the newest and tonight's; 0 keeps all."""
    from forecasting.publish import prune_predictions

    days = [date(2024, 3, d) for d in (1, 4, 5, 6, 7)]
    for day in days:
        write_frame(pl.DataFrame({"x": [1]}), partition_dir(tmp_path, "metrics", day), "predictions", ["parquet"])
        write_frame(pl.DataFrame({"x": [1]}), partition_dir(tmp_path, "metrics", day), "metrics", ["parquet"])
    assert prune_predictions(tmp_path, 0, days[-1]) == []
    gone = prune_predictions(tmp_path, 2, days[0])  # a rerun of the oldest night keeps its own
    assert [p.parent.name for p in gone] == ["asof=2024-03-04", "asof=2024-03-05"]
    left = sorted(p.parent.name for p in (tmp_path / "metrics").glob("*/predictions.parquet"))
    assert left == ["asof=2024-03-01", "asof=2024-03-06", "asof=2024-03-07"]
    assert len(list((tmp_path / "metrics").glob("*/metrics.parquet"))) == 5  # the metrics stay
