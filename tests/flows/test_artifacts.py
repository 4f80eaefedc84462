"""What the Prefect UI shows: images inside the artifacts, a forecasts table a person can read."""

import base64
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from flows.artifacts import data_uri, files_markdown, forecast_rows, forecast_table, inline_images

PNG = b"\\x89PNG\\r\\n\\x1a\\n" + b"\\x00" * 16


def test_images_travel_inside_the_markdown(tmp_path):
    (tmp_path / "plot.png").write_bytes(PNG)
    text = inline_images(
        "# report\\n\\n![cumulative error](plot.png)\\n\\n![missing](gone.png) [a link](x.csv)", tmp_path
    )
    uri = data_uri(tmp_path / "plot.png")
    assert f"![cumulative error]({uri})" in text and base64.b64decode(uri.split(",", 1)[1]) == PNG
    assert "![missing](gone.png)" in text and "[a link](x.csv)" in text  # left as they were


def test_the_forecasts_table_leads_with_what_a_reader_wants():
    forecasts = pl.DataFrame(
        {
            "run_id": ["0b4f..."],
            "model_version": ["attention_lstm-1"],
            "ticker": ["NVDA"],
            "target_date": [date(2015, 1, 2)],
            "horizon": [1],
            "last_price": [20.049999],
            "pred_price": [20.1234],
            "pred_lower": [19.5],
            "pred_upper": [None],
            "skill": [False],
            "source_model": ["attention_lstm"],
        },
        schema_overrides={"pred_upper": pl.Float64},
    )
    (row,) = forecast_rows(forecasts, 0.9)
    assert list(row) == list(forecast_table(0.9).values()) and "run_id" not in row and "low (90%)" in row
    assert row["ticker"] == "NVDA" and row["target date"] == "2015-01-02" and row["predicted price"] == 20.12
    assert "- `out/f.csv`" in files_markdown([Path("out/f.csv")], "Files")


def test_a_night_without_plots_leaves_no_earlier_plot_behind(tmp_path):
    from flows.nightly_tasks import _png

    path = tmp_path / "attention.png"
    drawn = _png(lambda p: p.write_bytes(b"png") and p, path, with_plots=True)
    assert drawn == [path] and path.read_bytes() == b"png"
    assert _png(lambda p: pytest.fail("drawn without plots"), path, with_plots=False) == []
    assert not path.exists()  # another run's picture of other numbers is not left beside this run's files
