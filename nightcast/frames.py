"""Groups of a polars frame, one at a time."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import polars as pl


def groups(frame: pl.DataFrame, keys: Sequence[str]) -> Iterator[tuple[tuple, pl.DataFrame]]:
    """(key values, rows) for each distinct combination of `keys`, in the order each first appears, the rows in
    the frame's order: what iterating `frame.group_by(*keys, maintain_order=True)` yields, for a few groups.

    One group is filtered out at a time. Polars' own iteration partitions the whole frame first (every group at
    once: a copy of every column), and an eager `unique` or list aggregation hashes every row: +0.6 GiB and
    +0.23 GiB over the 3.1M-row predictions of a 500 tickers x 25 years walk-forward; this way +0.03 GiB, as
    fast for its 25 (model, horizon) groups. One pass over the frame per group: for many groups (tickers) a
    partition is cheaper.
    """
    distinct = frame.lazy().select(keys).unique(maintain_order=True).collect()
    for key in distinct.iter_rows():
        yield key, frame.filter(*(pl.col(k).eq_missing(v) for k, v in zip(keys, key, strict=True)))
