"""Fits taking turns (`forecasting/together.py`): each fit is the one `fit` trains alone, whatever runs beside it;
a walk-forward scores the same whether its fits take turns or not; on a GPU, many graphs on many streams."""

import dataclasses
from datetime import date

import numpy as np
import polars as pl
import pytest
import torch

from features.windows import date_splits, splits_before
from forecasting import backtest, together
from forecasting.backtest import Intervals, Schedule, make_forecasters, walk_forward
from forecasting.settings import BacktestSettings, PublishSettings, held_share
from forecasting.together import fit_many, width
from forecasting.train import FitJob, TrainedModel, fit
from nightcast.errors import NightcastError
from tests.forecasting.test_backtest import PRICES
from tests.forecasting.test_backtest import panel_of as backtest_panel
from tests.forecasting.test_train import MODEL, TRAIN, WINDOWS, panel  # noqa: F401  (the module's fixture)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _jobs(panel, train=TRAIN, model=MODEL, warm: bool = True) -> list[FitJob]:  # noqa: F811
    """Fits that differ in every way a walk-forward's do: seed, training span, early stopping, a fixed-epoch
    refit, the ablation, and (`warm`) a warm start."""
    full = date_splits(panel, WINDOWS)
    shorter = splits_before(
        panel, WINDOWS.lookback, panel.dates[full.val[0]] - np.timedelta64(30, "D"), WINDOWS.val_days
    )
    long = train.model_copy(update={"epochs": 6, "patience": 1})
    refit = dataclasses.replace(full, val=full.val[:0])
    jobs = [
        FitJob(panel, full, model, long, WINDOWS.lookback),
        FitJob(panel, shorter, model, train.model_copy(update={"seed": 11}), WINDOWS.lookback),
        FitJob(panel, refit, model, long, WINDOWS.lookback, stop_after=3),
        FitJob(panel, full, model.model_copy(update={"attention": False}), long, WINDOWS.lookback),
    ]
    if warm:
        warm_from = fit(panel, full, model, train, WINDOWS.lookback)
        jobs.append(FitJob(panel, full, model, train.model_copy(update={"seed": 4}), WINDOWS.lookback, init=warm_from))
    return jobs


def _alone(job: FitJob) -> TrainedModel:
    return fit(job.panel, job.splits, job.model_settings, job.train_settings, job.lookback, init=job.init,
               stop_after=job.stop_after)  # fmt: skip


def _assert_same_fit(a: TrainedModel, b: TrainedModel, exact: bool = True) -> None:
    for (name, wa), wb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        if exact:
            assert torch.equal(wa.cpu(), wb.cpu()), name
        else:
            torch.testing.assert_close(wa.cpu(), wb.cpu(), rtol=0, atol=1e-6, msg=name)
    assert [h.get("val_loss") for h in a.history] == pytest.approx([h.get("val_loss") for h in b.history])
    assert a.best_epoch == b.best_epoch and a.cutoff == b.cutoff


DROPOUT = MODEL.model_copy(update={"dropout": 0.2})


def test_fits_taking_turns_train_exactly_as_each_fit_alone(panel):  # noqa: F811
    """Three at a time over five jobs (so a finished fit hands its turn to a waiting one): every fit's weights,
    validation losses and best epoch are bit-identical to `fit`'s, dropout masks included (each fit has its
    own random state)."""
    jobs = _jobs(panel, model=DROPOUT)
    turns = fit_many(jobs, at_once=3)
    alone = [_alone(job) for job in jobs]
    for a, b in zip(turns, alone, strict=True):
        _assert_same_fit(a, b)
    # the jobs really differ: another epoch count, a refit, a warm start
    assert len(turns[0].history) != len(turns[2].history) == 3
    assert "val_loss" not in turns[2].history[0]


def test_a_cpu_trains_them_one_after_another_through_fit(panel):  # noqa: F811
    """On a CPU there is no idle device to fill: one at a time, and so the same fits even with dropout on."""
    jobs = _jobs(panel, model=DROPOUT, warm=False)[:3]
    assert width(jobs, torch.device("cpu")) == 1
    assert width(jobs, torch.device("cuda")) == 3  # a device object needs no GPU: at most concurrent_fits
    for a, b in zip(fit_many(jobs), [_alone(job) for job in jobs], strict=True):
        _assert_same_fit(a, b)
    assert fit_many([]) == []


def test_dropout_between_stacked_layers_trains_one_fit_at_a_time_on_a_gpu(panel):  # noqa: F811
    """cuDNN keeps one dropout state per device for every LSTM: fits in turns would share it."""
    gpu = torch.device("cuda")  # a device object needs no GPU
    stacked = _jobs(panel, model=MODEL.model_copy(update={"num_layers": 2, "dropout": 0.1}), warm=False)[:3]
    assert width(stacked, gpu) == 1
    no_dropout = [dataclasses.replace(j, model_settings=MODEL.model_copy(update={"num_layers": 2})) for j in stacked]
    assert width(no_dropout, gpu) == 3


def test_a_failing_fit_ends_the_turns_and_leaves_the_process_as_it_was(panel, monkeypatch):  # noqa: F811
    """Ctrl-C (or any error) in one fit's turn: it propagates, every other fit is closed, and the random state
    and thread count are those from before the call."""
    from forecasting import train

    calls = {"n": 0}

    def stop_at_the_tenth_step() -> None:
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt("training interrupted")

    monkeypatch.setattr(train, "_check_stop", stop_at_the_tenth_step)
    threads, state = torch.get_num_threads(), torch.get_rng_state()
    with pytest.raises(KeyboardInterrupt):
        fit_many(_jobs(panel, model=DROPOUT, warm=False), at_once=3)
    assert calls["n"] == 10 and torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), state)


def test_a_job_with_neither_a_validation_span_nor_an_epoch_count_is_refused_in_turns_too(panel):  # noqa: F811
    refit = dataclasses.replace(date_splits(panel, WINDOWS), val=np.array([], dtype=np.int64))
    bad = FitJob(panel, refit, MODEL, TRAIN, WINDOWS.lookback)
    for at_once in (1, 2):
        with pytest.raises(NightcastError, match="either a validation span"):
            fit_many([bad, bad], at_once=at_once)


def _cold_walk_forward():
    bt = BacktestSettings(
        test_start=date(2011, 3, 1),
        test_end=date(2011, 5, 20),
        refit_every=20,
        conformal_min=5,
        warm_start=False,
        ensemble_seeds=2,
        models=["attention_lstm", "lstm", "ensemble", "combined", "random_walk"],
    )
    prices = backtest_panel(PRICES)
    schedule = Schedule.from_settings(
        prices, bt, lookback=10, val_days=40, test_days=60, held_share=held_share(bt.models, PublishSettings())
    )
    forecasters = make_forecasters(bt, MODEL, TRAIN, lookback=10)
    return walk_forward(prices, forecasters, schedule, Intervals.from_settings(bt), progress=False)


def test_a_cold_start_walk_forward_scores_the_same_with_every_fit_trained_up_front(monkeypatch):
    """With cold starts every fold's fits are trained before the first fold is scored (on a GPU, all at once):
    each model's forecasts must be those of the fold-by-fold run, none swapped between models or folds."""
    one_by_one = _cold_walk_forward()
    calls = []

    def three_at_once(jobs, device):
        calls.append(len(jobs))
        return min(3, len(jobs))

    monkeypatch.setattr(together, "width", three_at_once)  # what a GPU would choose, here on the CPU
    monkeypatch.setattr(backtest, "width", three_at_once)
    up_front = _cold_walk_forward()
    folds = one_by_one.folds.height
    assert folds >= 3 and calls == [4, 4 * folds]  # attention, lstm, two ensemble seeds a fold; all folds at once
    key = ["model", "ticker", "asof_date", "horizon"]
    a, b = one_by_one.predictions.sort(key), up_front.predictions.sort(key)
    assert a.select(key).equals(b.select(key))
    np.testing.assert_array_equal(a["y_pred"].to_numpy(), b["y_pred"].to_numpy())
    neural = {m: a.filter(pl.col("model") == m)["y_pred"].to_numpy() for m in ("attention_lstm", "lstm", "ensemble")}
    assert min(v.std() for v in neural.values()) > 0  # real forecasts, and three different ones
    assert not np.allclose(neural["attention_lstm"], neural["lstm"])
    assert not np.allclose(neural["attention_lstm"], neural["ensemble"])


@pytest.mark.cuda
@CUDA
def test_fits_on_their_own_streams_train_as_each_fit_alone(panel):  # noqa: F811
    """Four graphed fits replayed in turn, each on its own stream and random state, against the same fits alone
    (each of those also on a stream of its own): the same kernels and masks in the same order per fit, so the
    same weights (dropout on)."""
    cuda = TRAIN.model_copy(update={"device": "cuda", "batch_size": 48, "concurrent_fits": 4})
    jobs = _jobs(panel, train=cuda, model=DROPOUT)
    turns = fit_many(jobs)
    alone = [_alone(job) for job in jobs]
    worst = max(
        float((a - b).abs().max())
        for x, y in zip(turns, alone, strict=True)
        for a, b in zip(x.model.state_dict().values(), y.model.state_dict().values(), strict=True)
    )
    print(f"largest weight difference, in turns vs alone: {worst:.3g}")
    for a, b in zip(turns, alone, strict=True):
        _assert_same_fit(a, b)


@pytest.mark.cuda
@CUDA
def test_fits_with_dropout_between_stacked_layers_train_one_after_another_as_alone(panel):  # noqa: F811
    cuda = TRAIN.model_copy(update={"device": "cuda", "concurrent_fits": 4})
    jobs = _jobs(panel, train=cuda, model=MODEL.model_copy(update={"num_layers": 2, "dropout": 0.2}), warm=False)[:3]
    for a, b in zip(fit_many(jobs), [_alone(job) for job in jobs], strict=True):
        _assert_same_fit(a, b)


@pytest.mark.cuda
@CUDA
def test_many_graphs_replayed_on_many_streams_with_dropout(panel):  # noqa: F811
    """Issue 15's crash: eight graphs with dropout replayed round-robin on eight streams, twice more jobs than
    streams. Finite, the same weights on a second run, and the first fit's those of `fit` alone."""
    splits = date_splits(panel, WINDOWS)
    cuda = TRAIN.model_copy(update={"device": "cuda", "epochs": 4, "concurrent_fits": 8})
    model = MODEL.model_copy(update={"dropout": 0.2})
    jobs = [FitJob(panel, splits, model, cuda.model_copy(update={"seed": s}), WINDOWS.lookback) for s in range(16)]
    first, second = fit_many(jobs), fit_many(jobs)
    for a, b in zip(first, second, strict=True):
        for wa, wb in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
            assert torch.isfinite(wa).all() and torch.equal(wa, wb)
    assert len({round(m.best_val_loss, 7) for m in first}) > 1  # sixteen different fits
    _assert_same_fit(first[0], _alone(jobs[0]))
