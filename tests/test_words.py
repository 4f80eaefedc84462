from nightcast.words import count


def test_counts_read_as_english():
    assert [count(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
    assert count(1, "forecast origin") == "1 forecast origin"
    assert count(3, "repository", "repositories") == "3 repositories"
