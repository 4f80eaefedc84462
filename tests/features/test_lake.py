import polars as pl
import pytest

from features import lake
from features.errors import ValidationError
from tests.conftest import synthetic_prices


def test_upsert_is_idempotent(tmp_path):
    frame = synthetic_prices(["AAA"], 50)
    first = lake.upsert_ticker(tmp_path, frame)
    assert (first.rows_added, first.rows_changed) == (50, 0)
    before = first.path.read_bytes()
    again = lake.upsert_ticker(tmp_path, frame.with_columns(pl.lit("other").alias("source")))
    assert (again.rows_added, again.rows_changed) == (0, 0)
    assert first.path.read_bytes() == before  # not rewritten


def test_upsert_adds_new_days_and_takes_revisions(tmp_path):
    frame = synthetic_prices(["AAA"], 50)
    lake.upsert_ticker(tmp_path, frame.head(40))
    revised = (
        frame.slice(35)
        .with_row_index()
        .with_columns(pl.when(pl.col("index") == 0).then(pl.col("close") + 1).otherwise(pl.col("close")).alias("close"))
        .drop("index")
    )
    result = lake.upsert_ticker(tmp_path, revised)
    assert (result.rows_added, result.rows_changed) == (10, 1)
    stored = lake.read_ticker(tmp_path, "AAA")
    assert stored.height == 50 and stored["date"].is_sorted() and stored["date"].is_unique().all()
    assert stored["close"][35] == frame["close"][35] + 1


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    frame = synthetic_prices(["AAA"], 30)
    path = lake.upsert_ticker(tmp_path, frame.head(20)).path
    before = path.read_bytes()

    def crash(self, file, *args, **kwargs):
        with open(file, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", crash)
    with pytest.raises(OSError, match="disk full"):
        lake.upsert_ticker(tmp_path, frame)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["AAA.parquet"]  # no temporary left behind


@pytest.mark.parametrize("ticker", ["../evil", "a/b", "", "..", ".hidden", "X" * 16, "AB\nC", "/abs"])
def test_ticker_paths_cannot_escape(tmp_path, ticker):
    with pytest.raises(ValidationError, match="invalid ticker symbol"):
        lake.ticker_path(tmp_path, ticker)


def test_index_symbols_are_valid_paths(tmp_path):
    assert lake.ticker_path(tmp_path, "^GSPC").name == "^GSPC.parquet"
    assert lake.ticker_path(tmp_path, "BRK-B").parent == (tmp_path / "prices").resolve()


def test_fingerprint_ignores_provenance_but_not_prices():
    frame = synthetic_prices(["AAA", "BBB"], 30)
    same = frame.with_columns(pl.lit("elsewhere").alias("source")).reverse()
    assert lake.fingerprint(frame) == lake.fingerprint(same)
    assert lake.fingerprint(frame) != lake.fingerprint(frame.with_columns(pl.col("close") * 1.0001))
