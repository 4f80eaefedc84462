import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from features.prices import lake
from features.prices.schema import VALUE_COLUMNS
from nightcast.errors import ValidationError
from tests.conftest import synthetic_prices


def test_upsert_is_idempotent(tmp_path):
    frame = synthetic_prices(["AAA"], 50)
    first = lake.upsert_ticker(tmp_path, frame)
    assert (first.rows_added, first.rows_revised) == (50, 0)
    before = first.path.read_bytes()
    again = lake.upsert_ticker(tmp_path, frame.with_columns(pl.lit("other").alias("source")))
    assert (again.rows_added, again.rows_revised) == (0, 0)
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
    assert (result.rows_added, result.rows_revised) == (10, 1)
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


def test_a_close_only_upsert_keeps_the_stored_bars(tmp_path):
    frame = synthetic_prices(["AAA"], 30)
    lake.upsert_ticker(tmp_path, frame)
    close_only = frame.select("ticker", "date", "close", "adj_close", "source", "ingested_at")
    result = lake.upsert_ticker(tmp_path, close_only)
    assert (result.rows_added, result.rows_revised, result.rows_filled) == (0, 0, 0)
    assert lake.read_ticker(tmp_path, "AAA").equals(lake.conform(frame))  # open/high/low/volume kept
    revised = close_only.with_columns(
        pl.when(pl.col("date") == frame["date"][5])
        .then(pl.col("close") * 1.01)
        .otherwise(pl.col("close"))
        .alias("close")
    )
    result = lake.upsert_ticker(tmp_path, revised)
    assert (result.rows_added, result.rows_revised) == (0, 1)  # a real revision is reported as one
    stored = lake.read_ticker(tmp_path, "AAA")
    assert stored["close"][5] == frame["close"][5] * 1.01 and stored["open"].equals(frame["open"])


VALUES = ("open", "high", "low", "close", "adj_close", "volume")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.lists(
            st.tuples(st.integers(0, 7), st.sampled_from(VALUES), st.one_of(st.none(), st.integers(1, 4))),
            min_size=1,
            max_size=12,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_no_sequence_of_upserts_loses_a_stored_value(tmp_path_factory, batches):
    """Each batch sets some (day, field) cells to a value or to null; a stored value survives unless the
    same field is revised to another value."""
    from datetime import date, timedelta

    folder = tmp_path_factory.mktemp("lake")
    expected: dict[tuple[int, str], float] = {}
    for batch in batches:
        cells: dict[int, dict[str, float | None]] = {}
        for day, field, value in batch:
            cells.setdefault(day, {})[field] = None if value is None else float(value)
        rows = [
            {"ticker": "AAA", "date": date(2024, 1, 1) + timedelta(days=d)} | {c: v.get(c) for c in VALUES}
            for d, v in cells.items()
        ]
        lake.upsert_ticker(folder, pl.DataFrame(rows, schema_overrides={c: pl.Float64 for c in VALUES}))
        for day, values in cells.items():
            for field, value in values.items():
                if value is not None:
                    expected[(day, field)] = value
        stored = lake.read_ticker(folder, "AAA")
        got = {
            ((r["date"] - date(2024, 1, 1)).days, c): r[c]
            for r in stored.iter_rows(named=True)
            for c in VALUES
            if r[c] is not None
        }
        assert got == expected


def test_fingerprint_hashes_slices_as_one_csv(monkeypatch):
    # hashed a slice of rows at a time, it is still the hash of the whole frame's CSV text (stored fingerprints
    # of champions and manifests stay valid)
    import hashlib

    frame = synthetic_prices(["BBB", "AAA"], 7).with_columns(pl.col("close") / 3.0)  # long decimals
    body = frame.select("ticker", "date", *VALUE_COLUMNS).sort("ticker", "date")
    whole = hashlib.sha256(body.write_csv(float_precision=10).encode()).hexdigest()[:16]
    monkeypatch.setattr(lake, "FINGERPRINT_ROWS", 3)  # 14 rows in 5 slices
    assert lake.fingerprint(frame) == whole
    assert lake.fingerprint(frame.head(0)) == hashlib.sha256(body.head(0).write_csv().encode()).hexdigest()[:16]


def test_the_manifest_from_rows_held_reads_no_file(tmp_path, monkeypatch):
    # the ingest reads the lake back once; the manifest's entries come from those rows, not from a second read
    frame = synthetic_prices(["BBB", "AAA", "CCC"], 30)
    lake.upsert(tmp_path, frame)
    from_files = lake.update_manifest(tmp_path, ["AAA", "BBB", "CCC", "DDD"])
    stored = lake.read_prices(tmp_path, ["AAA", "BBB", "CCC"])

    def no_read(*args):
        raise AssertionError("the manifest reread a lake file")

    monkeypatch.setattr(lake, "read_ticker", no_read)
    held = lake.update_manifest(tmp_path, ["AAA", "BBB", "CCC", "DDD"], stored=stored)
    strip = lambda m: {t: {k: v for k, v in e.items() if k != "updated_at"} for t, e in m.items()}  # noqa: E731
    assert strip(held) == strip(from_files) and set(held) == {"AAA", "BBB", "CCC"}
    assert held["BBB"]["fingerprint"] == lake.fingerprint(frame.filter(pl.col("ticker") == "BBB"))
    # rows of a ticker in more than one run (not as read_prices gives them) are still gathered
    shuffled = stored.sample(fraction=1.0, shuffle=True, seed=1)
    assert strip(lake.update_manifest(tmp_path, ["AAA", "BBB", "CCC"], stored=shuffled)) == strip(from_files)


def test_read_prices_can_cut_each_file_to_some_columns(tmp_path):
    # the live record reads three columns of the whole lake: cut per file, the same rows as a cut of everything
    lake.upsert(tmp_path, synthetic_prices(["BBB", "AAA"], 30))
    columns = ("ticker", "date", "adj_close")
    whole = lake.read_prices(tmp_path, ["AAA", "BBB", "ZZZ"])
    cut = lake.read_prices(tmp_path, ["AAA", "BBB", "ZZZ"], columns=columns)
    assert_frame_equal(cut, whole.select(columns), check_exact=True)
    assert lake.read_prices(tmp_path, [], columns=columns).columns == list(columns)


@pytest.mark.parametrize("batch_rows", [1, 45, 10_000])
def test_the_manifest_from_rows_held_cuts_one_text_of_many_tickers(tmp_path, monkeypatch, batch_rows):
    # the text of many tickers is made at once and cut at their first lines: the same hashes as one text per
    # ticker (made from the files), in batches that end inside, at or past a ticker's rows
    frame = synthetic_prices(["BBB", "AAA", "CCC", "DDD"], 30)
    lake.upsert(tmp_path, frame)
    tickers = ["AAA", "BBB", "CCC", "DDD", "EEE"]
    from_files = lake.update_manifest(tmp_path, tickers)
    monkeypatch.setattr(lake, "FINGERPRINT_ROWS", batch_rows)
    stored = lake.read_prices(tmp_path, tickers)
    held, whole = lake.manifest_and_fingerprint(tmp_path, tickers, stored, ["AAA", "CCC", "DDD"])
    strip = lambda m: {t: {k: v for k, v in e.items() if k != "updated_at"} for t, e in m.items()}  # noqa: E731
    assert strip(held) == strip(from_files) and set(held) == {"AAA", "BBB", "CCC", "DDD"}
    assert whole == lake.fingerprint(stored.filter(pl.col("ticker").is_in(["AAA", "CCC", "DDD"])))


def test_upsert_onto_rows_just_read_equals_reading_each_file(tmp_path, monkeypatch):
    # the ingest hands the upsert the rows it validated with; a ticker it did not read is still read from its
    # file (never treated as new, which would overwrite its history), and the results are the same either way
    base = synthetic_prices(["AAA", "BBB", "CCC"], 40)
    later = synthetic_prices(["AAA", "BBB", "CCC", "DDD"], 50).with_columns(close=pl.col("close") * 1.01)
    for folder in ("files", "held"):
        lake.upsert(tmp_path / folder, base)
    expected = lake.upsert(tmp_path / "files", later)
    stored = lake.read_prices(tmp_path / "held", ["BBB", "AAA", "DDD"])  # CCC not read: its file must be
    reads = []
    real = lake.read_ticker
    monkeypatch.setattr(lake, "read_ticker", lambda d, t: reads.append(t) or real(d, t))
    got = lake.upsert(tmp_path / "held", later, stored, ["BBB", "AAA", "DDD"])
    assert reads == ["CCC"]
    key = lambda r: (r.ticker, r.rows_added, r.rows_revised, r.rows_filled)  # noqa: E731
    assert [key(r) for r in got] == [key(r) for r in expected] and got[2].rows_revised == 40
    monkeypatch.setattr(lake, "read_ticker", real)
    tickers = ["AAA", "BBB", "CCC", "DDD"]
    assert_frame_equal(
        lake.read_prices(tmp_path / "held", tickers).drop("ingested_at"),
        lake.read_prices(tmp_path / "files", tickers).drop("ingested_at"),
        check_exact=True,
    )


def test_read_prices_and_stored_rows_sort_whatever_the_order_asked(tmp_path):
    lake.upsert(tmp_path, synthetic_prices(["BBB", "AAA", "CCC"], 20))
    ordered = lake.read_prices(tmp_path, ["AAA", "BBB", "CCC"])
    assert_frame_equal(lake.read_prices(tmp_path, ["CCC", "ZZZ", "AAA", "BBB"]), ordered, check_exact=True)
    assert ordered.select("ticker", "date").is_duplicated().sum() == 0
    assert ordered.equals(ordered.sort("ticker", "date"))
    results = lake.upsert(tmp_path, synthetic_prices(["BBB", "AAA", "CCC"], 25))
    assert (
        lake.stored_rows(results[::-1])
        .drop("ingested_at")
        .equals(lake.read_prices(tmp_path, ["AAA", "BBB", "CCC"]).drop("ingested_at"))
    )


def test_upsert_never_overwrites_a_file_whose_rows_were_not_handed_over(tmp_path):
    # `stored` lacks AAA although AAA is said to be read: its file is read and merged, not replaced
    lake.upsert(tmp_path, synthetic_prices(["AAA", "BBB"], 30))
    stored = lake.read_prices(tmp_path, ["BBB"])
    one_more = synthetic_prices(["AAA"], 31).tail(1)
    lake.upsert(tmp_path, one_more, stored, ["AAA", "BBB"])
    assert lake.read_prices(tmp_path, ["AAA"]).height == 31
    # a ticker asked twice is read once: no row twice
    twice = lake.read_prices(tmp_path, ["AAA", "AAA", "BBB"])
    assert twice.height == 61 and not twice.select("ticker", "date").is_duplicated().any()


def test_an_upsert_logs_one_line_for_all_its_tickers(tmp_path, caplog, monkeypatch):
    from tests.conftest import synthetic_prices

    prices = synthetic_prices(["AAA", "BBB", "CCC"], 30, seed=5)
    with caplog.at_level("INFO", logger="nightcast"):
        lake.upsert(tmp_path, prices)
        lake.upsert(tmp_path, prices)  # again: nothing changes
    infos = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    per_ticker = [
        f"lake: {t} +30 rows, 0 revised, 0 filled -> {lake.ticker_path(tmp_path, t)}" for t in "AAA BBB CCC".split()
    ]
    assert infos == [
        *per_ticker,  # few tickers: a line each as well
        f"lake: 3 tickers written in {tmp_path} (+90 rows, 0 revised, 0 filled), 0 unchanged",
        f"lake: 3 tickers unchanged in {tmp_path}",
    ]
    caplog.clear()
    monkeypatch.setattr(lake, "TICKER_LINES", 2)  # many: the one line only
    with caplog.at_level("INFO", logger="nightcast"):
        lake.upsert(tmp_path / "other", prices)
    assert [r.getMessage() for r in caplog.records if r.levelname == "INFO"] == [
        f"lake: 3 tickers written in {tmp_path / 'other'} (+90 rows, 0 revised, 0 filled), 0 unchanged"
    ]


def test_a_manifest_nested_past_pythons_stack_is_the_unreadable_manifest_error(tmp_path):
    """A security review: a deeply nested manifest raised an uncaught RecursionError (a traceback)."""
    (tmp_path / lake.MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(lake.LakeError, match="is unreadable .* delete it to rebuild"):
        lake.read_manifest(tmp_path)
