"""benchmarks/nightly.py's bookkeeping (the benchmark itself is not a test: it runs the nightly at scale)."""

from benchmarks.nightly import stage_peaks


def test_stage_peaks_lay_the_stages_back_to_back_from_the_end():
    # the flow returned at t=10; stages of 2 s and 3 s ran over [5, 7] and [7, 10]; samples before 5 are the
    # flow's start-up, not a stage
    samples = [(4.0, 900), (5.5, 100), (6.9, 300), (7.5, 50), (9.9, 70), (10.5, 999)]
    assert stage_peaks(samples, {"ingest": 2.0, "features": 3.0}, end=10.0) == {"features": 70, "ingest": 300}


def test_a_stage_without_samples_peaks_at_zero():
    assert stage_peaks([(0.0, 5)], {"ingest": 1.0}, end=10.0) == {"ingest": 0}
