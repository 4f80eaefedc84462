"""Groups one at a time: what polars' grouped iteration yields, in the same order."""

import polars as pl

from nightcast.frames import groups


def test_groups_are_polars_groups_in_order_of_first_appearance_null_keys_included():
    frame = pl.DataFrame(
        {
            "model": ["b", "a", "b", None, "a", None, "b"],
            "horizon": [1, 1, 2, 1, 1, 1, 1],
            "value": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
        }
    )
    mine = list(groups(frame, ["model", "horizon"]))
    theirs = list(frame.group_by("model", "horizon", maintain_order=True))
    assert [k for k, _ in mine] == [k for k, _ in theirs] == [("b", 1), ("a", 1), ("b", 2), (None, 1)]
    assert all(a.equals(b) for (_, a), (_, b) in zip(mine, theirs, strict=True))
    assert mine[0][1]["value"].to_list() == [1.0, 7.0]  # the frame's own row order
    assert list(groups(frame.clear(), ["model"])) == []
    assert [k for k, _ in groups(frame, ["horizon"])] == [(1,), (2,)]
