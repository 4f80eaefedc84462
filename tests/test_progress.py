"""Progress where its user looks: a bar on a terminal, log lines in a log."""

import logging

import numpy as np
import pytest

from nightcast.progress import Steps

LOG = logging.getLogger("nightcast.test_progress")


class Clock:
    def __init__(self, times: list[float]) -> None:
        self.times = iter(times)

    def __call__(self) -> float:
        return next(self.times)


def test_off_a_terminal_the_first_step_then_one_line_per_interval_then_the_last_are_logged(caplog):
    # started at 0; steps end at 1, 2, 20, 31.5, 40, 90, 95 (seven of them)
    clock = Clock([0.0, 1.0, 2.0, 20.0, 31.5, 40.0, 90.0, 95.0])
    with caplog.at_level("INFO", logger=LOG.name):
        with Steps(
            "training",
            7,
            "epoch {completed}/{total}  val {val}",
            LOG,
            interactive=False,
            every=30.0,
            clock=clock,
            val="-",
        ) as steps:
            for k in range(7):
                steps.advance(val=f"{k / 10:.1f}")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "training: epoch 1/7  val 0.0 (1 s)",  # the first: the pace, early
        "training: epoch 4/7  val 0.3 (32 s)",  # 30.5 s after the last line
        "training: epoch 6/7  val 0.5 (90 s)",
        "training: epoch 7/7  val 0.6 (95 s)",  # the last, always
    ]


def test_stopped_early_off_a_terminal_the_step_it_stopped_at_is_logged(caplog):
    clock = Clock([0.0, 1.0, 2.0, 3.0, 3.5])
    with caplog.at_level("INFO", logger=LOG.name):
        with Steps("training", 30, "epoch {completed}/{total}", LOG, interactive=False, clock=clock) as steps:
            for _ in range(3):
                steps.advance()
    assert [r.getMessage() for r in caplog.records] == ["training: epoch 1/30 (1 s)", "training: epoch 3/30 (4 s)"]


def test_disabled_says_nothing_and_on_a_terminal_draws_a_bar_instead_of_logging(caplog):
    with caplog.at_level("INFO", logger=LOG.name):
        with Steps("refit", 3, "epoch {completed}/{total}", LOG, enabled=False, interactive=False) as steps:
            for _ in range(3):
                steps.advance()
        with Steps("refit", 3, "epoch {completed}/{total}", LOG, interactive=True) as steps:
            for _ in range(3):
                steps.advance()
            assert steps.text() == "epoch 3/3" and steps._bar is not None
    assert caplog.records == []


def test_past_its_total_without_a_logger_or_on_an_error_nothing_more_is_logged(caplog):
    with caplog.at_level("INFO", logger=LOG.name):
        with Steps("s", 1, "{completed}/{total}", LOG, interactive=False, clock=Clock([0.0, 1.0, 2.0])) as steps:
            steps.advance()
            steps.advance()  # past the total: no line (a count the caller got wrong says nothing twice)
        with Steps("quiet", 2, "{completed}/{total}", None, interactive=False) as steps:
            steps.advance()
        try:
            with Steps("broken", 3, "{completed}/{total}", LOG, interactive=False, clock=Clock([0.0, 1.0])) as steps:
                steps.advance()
                raise RuntimeError("stop")
        except RuntimeError:
            pass
    assert [r.getMessage() for r in caplog.records] == ["s: 1/1 (1 s)", "broken: 1/3 (1 s)"]
    with pytest.raises(ValueError, match="may not be named"):
        Steps("x", 1, "{completed}", LOG, completed="3")


def test_a_fit_logged_off_a_terminal_says_each_epoch_s_losses(caplog, monkeypatch):
    import types

    # whatever runs the tests (a terminal with -s, or not): a log, as cron's or a Prefect worker's
    monkeypatch.setattr(
        "nightcast.progress.Console", lambda: types.SimpleNamespace(is_terminal=False, is_jupyter=False)
    )
    from features.build import build_features
    from features.denoise import denoise
    from features.settings import DenoiseSettings, FeatureSettings
    from features.windows import date_splits, make_panel
    from forecasting.train import fit
    from tests.conftest import synthetic_prices
    from tests.forecasting.test_train import MODEL, TRAIN, WINDOWS

    prices = synthetic_prices(["AAA", "BBB"], 300, seed=2)
    panel = make_panel(build_features(denoise(prices, DenoiseSettings()), FeatureSettings(horizons=[1, 3])), 3)
    with caplog.at_level("INFO", logger="nightcast.forecasting.train"):
        trained = fit(panel, date_splits(panel, WINDOWS), MODEL, TRAIN.model_copy(update={"progress": True}), 10)
    row = trained.history[0]
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("training: epoch 1/2")]
    assert len(said) == 1 and f"train {row['train_loss']:.4f}  val {row['val_loss']:.4f}" in said[0]
    assert np.isfinite(row["val_loss"])
