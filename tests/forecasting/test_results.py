"""The results tables: built once, rendered the same way everywhere."""

from datetime import date

import polars as pl

from forecasting.cross_section import cross_section_table
from forecasting.metrics import metrics_table
from forecasting.results import (
    EVALUATION_COLUMNS,
    across_tickers_markdown,
    evaluation_table,
    markdown_table,
    record_table,
)


def predictions(n_tickers: int) -> pl.DataFrame:
    rows = []
    for day in range(1, 6):
        for t in range(n_tickers):
            y = 0.01 * ((day * 7 + t * 3) % 5 - 2)
            for model, pred in (("attention_lstm", y / 2 + 0.001 * t), ("random_walk", 0.0)):
                rows.append(
                    {
                        "model": model,
                        "ticker": f"T{t}",
                        "asof_date": date(2020, 1, day),
                        "horizon": 1,
                        "target_date": date(2020, 1, day + 1),
                        "y_true": y,
                        "y_pred": pred,
                    }
                )
    return pl.DataFrame(rows)


def test_the_evaluation_table_is_the_pooled_rows_in_one_format():
    metrics = metrics_table(predictions(4))
    table = evaluation_table(metrics)
    assert table["model"].to_list() == ["attention_lstm", "random_walk"]
    assert table.columns[:3] == ["horizon", "model", "mse"]
    text = markdown_table(table, EVALUATION_COLUMNS)
    header, rule, first, second = text.splitlines()
    assert header.startswith("| horizon | model | MSE | ratio vs random walk |")
    ratio = table.row(0, named=True)["mse_ratio"]
    assert f"| {ratio:.4f} |" in first and first.startswith("| 1 | attention_lstm |")
    assert second.split(" | ")[3] == ""  # the benchmark has no ratio to itself: an empty cell, not "None"


def test_across_tickers_shows_the_model_and_says_when_there_is_nothing():
    table = cross_section_table(predictions(4), k=1, cost_bps=5.0)
    lines = across_tickers_markdown(table).splitlines()
    assert len(lines) == 3 and lines[2].startswith("| 1 | attention_lstm | 5 |")  # no row for the random walk
    rank_ic = table.filter(pl.col("model") == "attention_lstm")["rank_ic_mean"].item()
    assert f"| {rank_ic:+.4f} |" in lines[2]
    two = cross_section_table(predictions(2), k=1, cost_bps=5.0)
    assert "nothing to compare across tickers" in across_tickers_markdown(two)


def test_the_record_table_is_pooled_unless_asked_per_ticker():
    record = pl.DataFrame(
        {
            "scope": ["pooled", "ticker", "ticker"],
            "ticker": [None, "A", "B"],
            "horizon": [1, 1, 1],
            "n": [4, 2, 2],
            "mse_ratio": [0.9, 0.8, 1.0],
        }
    )
    assert record_table(record).columns == ["horizon", "n", "mse_ratio"]
    assert record_table(record, by_ticker=True)["ticker"].to_list() == ["A", "B"]


def test_text_in_a_markdown_table_is_shown_as_itself():
    """A security review: a ticker cell of a price file reached the Prefect UI's Markdown as markup, so
    `![x](https://evil.example/p.png)` became an image fetched from elsewhere."""
    import polars as pl

    table = pl.DataFrame(
        {"ticker": ["![X](HTTPS://EVIL.EXAMPLE/P.PNG)", "<img src=x>", "a|b"], "model": ["attention_lstm"] * 3}
    )
    rows = markdown_table(table).splitlines()[2:]
    assert rows[0] == "| \\!\\[X\\](HTTPS://EVIL.EXAMPLE/P.PNG) | attention_lstm |"
    assert rows[1].startswith("| \\<img src=x\\> |") and rows[2].startswith("| a\\|b |")
