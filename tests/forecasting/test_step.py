"""The training step: padded batches, the closed-form schedule, the batch rule, device-resident data; and on a
GPU, the CUDA-graph step against the eager one."""

import dataclasses
import gc
import math

import numpy as np
import pytest
import torch

from features.windows import Scaler, column_moments, date_splits
from forecasting.batching import BatchPlan, batch_plan
from forecasting.device_data import (
    column_moments_at,
    resident,
    resident_count,
    standardise,
    standardise_in_place,
    tensor_moments,
)
from forecasting.model import DataShape, Forecast, ModelConfig, TemporalAttentionLSTM
from forecasting.settings import ModelSettings, TrainSettings
from forecasting.step import EagerStep, GraphStep, cosine_lr, loss_of
from forecasting.train import fit, gather_windows, predict
from tests.forecasting.test_train import MODEL, TRAIN, WINDOWS, panel  # noqa: F401  (the module's fixture)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_a_padded_batch_has_the_loss_and_gradient_of_its_real_rows():
    torch.manual_seed(0)
    mean = torch.randn(7, 2, requires_grad=True)
    quantiles = torch.randn(7, 2, 3, requires_grad=True)
    target = torch.randn(7, 2)
    levels = torch.tensor([0.1, 0.5, 0.9])
    weight = torch.tensor([1.0] * 5 + [0.0] * 2)  # rows 5 and 6 are filler
    for levels_or_none in (None, levels):
        out_full = Forecast(mean, None, quantiles)
        padded = loss_of(out_full, target, levels_or_none, weight)
        (g_padded,) = torch.autograd.grad(padded, quantiles if levels_or_none is not None else mean)
        real = Forecast(mean[:5], None, quantiles[:5])
        unpadded = loss_of(real, target[:5], levels_or_none)
        (g_real,) = torch.autograd.grad(unpadded, quantiles if levels_or_none is not None else mean)
        torch.testing.assert_close(padded, unpadded, rtol=1e-6, atol=0)
        torch.testing.assert_close(g_padded, g_real, rtol=1e-6, atol=1e-9)
        assert torch.count_nonzero(g_padded[5:]) == 0  # filler rows teach nothing


def test_the_closed_form_schedule_is_torchs_cosine_annealing():
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=40, eta_min=3e-4)
    for step in range(45):  # past the end too: it stays at the floor
        expected = optimizer.param_groups[0]["lr"]
        assert math.isclose(cosine_lr(step, 40, 3e-3, 3e-4), expected, rel_tol=1e-9) or step > 40
        optimizer.step()
        schedule.step()
    assert cosine_lr(45, 40, 3e-3, 3e-4) == pytest.approx(3e-4)


def test_the_batch_grows_only_on_a_gpu_with_the_data_and_the_learning_rate_by_its_square_root():
    ts = TrainSettings(batch_size=256, learning_rate=1e-3, max_batch_size=4096, min_steps_per_epoch=100)
    cpu, gpu = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    assert batch_plan(2_800_000, ts, cpu) == (256, 1e-3)  # the CPU keeps today's fit
    assert batch_plan(10_000, ts, gpu) == (256, 1e-3)  # the bundled sample: too few samples to grow
    assert batch_plan(60_000, ts, gpu) == (512, pytest.approx(1e-3 * math.sqrt(2)))  # 117 steps per epoch
    assert batch_plan(2_800_000, ts, gpu) == (4096, pytest.approx(4e-3))  # capped; 683 steps per epoch
    assert batch_plan(2_800_000, ts.model_copy(update={"max_batch_size": 256}), gpu) == (256, 1e-3)
    batch, _ = batch_plan(500_000, ts, gpu)
    assert batch % 256 == 0 and 500_000 / batch >= 100


def test_standardising_on_a_device_is_bit_identical_to_the_scaler():
    rng = np.random.default_rng(1)
    X = rng.normal(3, 2, size=(500, 4)).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    scaler = Scaler.fit(X[:300])
    np.testing.assert_array_equal(standardise(torch.from_numpy(X), scaler).numpy(), scaler.transform(X))
    mean, std = torch.from_numpy(scaler.mean), torch.from_numpy(scaler.std)
    overwritten = torch.from_numpy(X.copy())
    np.testing.assert_array_equal(standardise_in_place(overwritten, mean, std).numpy(), scaler.transform(X))
    np.testing.assert_array_equal(overwritten.numpy(), scaler.transform(X))


def _moments_case():
    rng = np.random.default_rng(4)
    X = (rng.normal(size=(900, 4)) * [1, 100, 1, 1] + [0, 5e3, 0, 2]).astype(np.float32)
    X[rng.random(X.shape) < 0.1] = np.nan
    X[:500, 0] = np.nan  # missing from whole blocks
    X[:, 2] = np.nan  # never seen
    X[:, 3] = 2.0  # constant
    return X, np.sort(rng.choice(900, 600, replace=False))


def test_column_moments_on_a_device_agree_with_the_host():
    """The GPU's scaler figures (`tensor_moments`, run here on CPU tensors) agree with `column_moments` to
    float64 rounding, block by block, with a row subset, a column never seen and a constant one."""
    X, rows = _moments_case()
    for index in (rows, None):
        host = column_moments(X, index)
        device = tensor_moments(torch.from_numpy(X), None if index is None else torch.from_numpy(index), block=128)
        for a, b in zip(host, device, strict=True):
            np.testing.assert_allclose(b.numpy(), a, rtol=1e-12, atol=1e-12)
    assert column_moments_at(X, rows, torch.device("cpu"))[1].tobytes() == column_moments(X, rows)[1].tobytes()


@pytest.mark.cuda
@CUDA
def test_column_moments_on_the_gpu_agree_with_the_host():
    X, rows = _moments_case()
    host, device = column_moments(X, rows), column_moments_at(X, rows, torch.device("cuda"))
    for a, b in zip(host, device, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)
    scaler = Scaler.from_moments(*device[1:])
    assert scaler.mean[2] == 0.0 and scaler.std[2] == 1.0 and scaler.std[3] == 1.0


def test_a_resident_array_is_copied_once_and_released_with_the_array():
    meta = torch.device("meta")  # a device without data: the bookkeeping of a GPU's copies, on any machine
    before = resident_count()
    array = np.arange(12, dtype=np.float32).reshape(4, 3)
    first = resident(array, meta)
    assert first.device == meta and first.shape == (4, 3)
    assert resident(array, meta) is first and resident_count() == before + 1
    other = array.copy()  # equal values, another array: another entry
    assert resident(other, meta) is not first
    del array, other, first
    gc.collect()
    assert resident_count() == before


def _steps(kind: str, rows: list[torch.Tensor], X, Y, lookback: int, config: ModelConfig):
    """Five optimiser steps of one model with a constant learning rate, fp32, either kind of step."""
    torch.manual_seed(0)
    model = TemporalAttentionLSTM(config).to(X.device)
    inputs = lambda idx: (gather_windows(X, idx, lookback), torch.zeros_like(idx))  # noqa: E731
    no_autocast = lambda: torch.autocast(device_type=X.device.type, enabled=False)  # noqa: E731
    if kind == "eager":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
        step = EagerStep(
            model, inputs, Y, opt, None, 1.0, no_autocast, schedule=torch.optim.lr_scheduler.ConstantLR(opt, 1.0)
        )
    else:
        lr = torch.tensor(1e-2, device=X.device)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=True, capturable=True)
        step = GraphStep(model, inputs, Y, opt, None, 1.0, no_autocast, batch_size=32, lr=lr, lr_at=lambda s: 1e-2)
    for idx in rows:
        step(idx)
    return model, step.total.item()


@pytest.mark.cuda
@CUDA
def test_the_graph_step_trains_exactly_as_the_eager_step():
    """Steps 4 and on are graph replays, the last batch is padded: same weights as kernel by kernel (fp32)."""
    device = torch.device("cuda")
    g = torch.Generator().manual_seed(5)
    X, Y = torch.randn(400, 3, generator=g).to(device), torch.randn(400, 2, generator=g).to(device)
    config = ModelConfig(ModelSettings(hidden_size=8, attention_size=4, dropout=0.0), DataShape(3, 2, lookback=6))
    rows = [torch.randint(6, 400, (32,), generator=g).to(device) for _ in range(6)] + [
        torch.randint(6, 400, (19,), generator=g).to(device)
    ]
    eager, eager_total = _steps("eager", rows, X, Y, 6, config)
    graphed, graph_total = _steps("graph", rows, X, Y, 6, config)
    for (name, a), b in zip(eager.state_dict().items(), graphed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
    assert graph_total == pytest.approx(eager_total, rel=1e-5)


@pytest.mark.cuda
@CUDA
def test_a_graphed_fit_is_deterministic_and_matches_the_eager_fit(panel):  # noqa: F811
    splits = date_splits(panel, WINDOWS)
    cuda = TRAIN.model_copy(update={"device": "cuda", "epochs": 3, "batch_size": 48})  # a padded last batch
    assert len(splits.train) % 48
    a = fit(panel, splits, MODEL, cuda, WINDOWS.lookback)
    b = fit(panel, splits, MODEL, cuda, WINDOWS.lookback)
    eager = fit(panel, splits, MODEL, cuda.model_copy(update={"cuda_graph": False}), WINDOWS.lookback)
    for wa, wb in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(wa, wb)
    graph_val = [h["val_loss"] for h in a.history]
    eager_val = [h["val_loss"] for h in eager.history]
    print("graph", graph_val, "eager", eager_val)
    np.testing.assert_allclose(graph_val, eager_val, rtol=0.02)
    pa = predict(a, panel, splits.test).mean
    np.testing.assert_array_equal(pa, predict(b, panel, splits.test).mean)


@pytest.mark.cuda
@CUDA
def test_every_model_variant_trains_as_a_cuda_graph(panel):  # noqa: F811
    """The seed's variants, quantiles, embedding and input attention all inside one captured step: finite,
    non-crossing, and the same weights twice."""
    splits = date_splits(panel, WINDOWS)
    variants = MODEL.model_copy(
        update={
            "bidirectional": True,
            "self_attention": True,
            "attention_kind": "dot",
            "attention_heads": 2,
            "quantiles": [0.1, 0.5, 0.9],
            "ticker_embedding": 3,
            "input_attention": True,
        }
    )
    cuda = TRAIN.model_copy(update={"device": "cuda", "epochs": 3})
    a = fit(panel, splits, variants, cuda, WINDOWS.lookback)
    b = fit(panel, splits, variants, cuda, WINDOWS.lookback)
    for wa, wb in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(wa, wb)
    got = predict(a, panel, splits.test)
    assert np.isfinite(got.mean).all() and np.all(np.diff(got.quantiles, axis=-1) >= 0)
    assert a.history[-1]["train_loss"] < a.history[0]["train_loss"] * 1.5


def test_a_refit_trains_with_the_batch_plan_it_is_given_and_records_it(panel):  # noqa: F811
    """On a GPU the batch grows with the span: the nightly's refit (a longer span) takes its evaluated fit's
    batch and learning rate instead of choosing bigger ones for the epochs the evaluation counted."""
    splits = date_splits(panel, WINDOWS)
    evaluated = fit(panel, splits, MODEL, TRAIN, WINDOWS.lookback)
    assert evaluated.batch_plan == (TRAIN.batch_size, TRAIN.learning_rate)  # a CPU keeps the base batch
    refit_splits = dataclasses.replace(splits, val=splits.val[:0])
    given = BatchPlan(2 * TRAIN.batch_size, 1.5 * TRAIN.learning_rate)
    refit = fit(panel, refit_splits, MODEL, TRAIN, WINDOWS.lookback, stop_after=2, plan=given)
    assert refit.batch_plan == given
    assert all((h["batch_size"], h["learning_rate"]) == given for h in refit.history)
    default = fit(panel, refit_splits, MODEL, TRAIN, WINDOWS.lookback, stop_after=2)
    assert default.history[-1]["train_loss"] != refit.history[-1]["train_loss"]  # it really trained differently
