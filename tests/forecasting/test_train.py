import numpy as np
import pytest
import torch

from features.build import build_features
from features.denoise import denoise
from features.settings import DenoiseSettings, FeatureSettings, WindowSettings
from features.windows import Panel, date_splits, make_panel
from forecasting.settings import ModelSettings, TrainSettings
from forecasting.train import fit, load_checkpoint, predict, save_checkpoint
from nightcast.errors import NightcastError
from tests.conftest import synthetic_prices

MODEL = ModelSettings(hidden_size=8, attention_size=4, dropout=0.0)
TRAIN = TrainSettings(epochs=2, batch_size=64, progress=False, threads=1, seed=3)
WINDOWS = WindowSettings(lookback=10, test_days=40, val_days=40)


@pytest.fixture(scope="module")
def panel() -> Panel:
    prices = synthetic_prices(["AAA", "BBB"], 300, seed=2)
    ff = build_features(denoise(prices, DenoiseSettings()), FeatureSettings(horizons=[1, 3]))
    return make_panel(ff, max_horizon=3)


def test_same_seed_same_weights_and_checkpoint_round_trip(panel, tmp_path):
    splits = date_splits(panel, WINDOWS)
    a = fit(panel, splits, MODEL, TRAIN, WINDOWS.lookback)
    b = fit(panel, splits, MODEL, TRAIN, WINDOWS.lookback)
    for (name, wa), wb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(wa, wb), name
    pa, attn = predict(a, panel, splits.test)[:2]
    assert pa.shape == (len(splits.test), 2) and attn.shape == (len(splits.test), 10)
    restored = load_checkpoint(save_checkpoint(a, tmp_path / "m.pt"))
    pr = predict(restored, panel, splits.test).mean
    np.testing.assert_array_equal(pa, pr)
    assert restored.features == panel.features and restored.lookback == 10
    other = fit(panel, splits, MODEL, TRAIN.model_copy(update={"seed": 4}), WINDOWS.lookback)
    assert not np.array_equal(predict(other, panel, splits.test).mean, pa)


def test_the_model_can_learn_a_real_signal():
    """Targets that are a deterministic function of the window: the loss must fall far below the variance."""
    rng = np.random.default_rng(0)
    R, F, L = 1200, 3, 8
    X = rng.normal(size=(R, F)).astype(np.float32)
    y = np.zeros((R, 1), dtype=np.float32)
    y[L:, 0] = 0.01 * (X[L:, 0] + 0.5 * X[L - 3 : R - 3, 1])  # today's first feature and one from 3 steps back
    dates = np.datetime64("2000-01-03") + np.arange(R).astype("timedelta64[D]")
    panel = Panel(
        X, y, dates, np.ones(R), dates + 1, np.zeros(R, np.int32), np.array([0, R]), ["AAA"], ["a", "b", "c"], [1]
    )
    splits = date_splits(panel, WindowSettings(lookback=L, test_days=100, val_days=100))
    trained = fit(
        panel,
        splits,
        ModelSettings(hidden_size=32, dropout=0.0),
        TrainSettings(epochs=25, batch_size=64, learning_rate=3e-3, progress=False, threads=1, patience=25),
        L,
    )
    pred = predict(trained, panel, splits.test).mean
    mse = float(np.mean((pred - y[splits.test]) ** 2))
    assert mse < 0.1 * float(np.var(y[splits.test]))
    assert trained.history[-1]["train_loss"] < 0.1 * trained.history[0]["train_loss"]


def test_explicit_missing_device_is_an_error():
    from forecasting.train import resolve_device
    from nightcast.errors import ConfigError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto").type in ("cpu", "mps")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trains_on_cuda_with_bf16(panel):
    splits = date_splits(panel, WINDOWS)
    trained = fit(panel, splits, MODEL, TRAIN.model_copy(update={"device": "cuda"}), WINDOWS.lookback)
    assert trained.device.type == "cuda"
    pred = predict(trained, panel, splits.test).mean
    assert np.isfinite(pred).all()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_checkpoint_means_the_same_on_any_device(panel, tmp_path):
    """Exactly the same forecasts on the device it was saved from; within 1e-5 (log return) across devices."""
    splits = date_splits(panel, WINDOWS)
    for trained_on, other in (("cuda", "cpu"), ("cpu", "cuda")):
        trained = fit(panel, splits, MODEL, TRAIN.model_copy(update={"device": trained_on}), WINDOWS.lookback)
        before = predict(trained, panel, splits.test).mean
        path = save_checkpoint(trained, tmp_path / f"{trained_on}.pt")
        same = load_checkpoint(path, trained_on)
        np.testing.assert_array_equal(predict(same, panel, splits.test).mean, before)
        moved = load_checkpoint(path, other)
        assert moved.device.type == other
        np.testing.assert_allclose(predict(moved, panel, splits.test).mean, before, rtol=0, atol=1e-5)


def test_quantiles_embedding_and_input_attention_train_and_round_trip(panel, tmp_path, monkeypatch):
    splits = date_splits(panel, WINDOWS)
    settings = MODEL.model_copy(
        update={
            "quantiles": [0.1, 0.5, 0.9],
            "ticker_embedding": 3,
            "input_attention": True,
            "attention_kind": "dot",
            "attention_heads": 2,
        }
    )
    trained = fit(panel, splits, settings, TRAIN, WINDOWS.lookback)
    assert trained.history[0]["val_loss"] > 0 and trained.tickers == ["AAA", "BBB"]
    got = predict(trained, panel, splits.test)
    assert got.quantiles.shape == (len(splits.test), 2, 3)
    assert np.all(np.diff(got.quantiles, axis=-1) >= 0)  # no crossing, also after unscaling
    # in log-return units, not the scaled targets the head trains on (those have unit spread): the 10-90% band
    # is within a factor of 3 of the realised targets' 10-90% range, horizon by horizon
    band = (got.quantiles[..., -1] - got.quantiles[..., 0]).mean(axis=0)
    realised = np.nanquantile(panel.Y[splits.test], 0.9, axis=0) - np.nanquantile(panel.Y[splits.test], 0.1, axis=0)
    assert np.all((band > realised / 3) & (band < 3 * realised)), (band, realised)  # ~0.6x; scaled: ~50x
    assert got.feature_attention.shape == (len(splits.test), len(panel.features))
    restored = predict(load_checkpoint(save_checkpoint(trained, tmp_path / "q.pt")), panel, splits.test)
    np.testing.assert_array_equal(restored.quantiles, got.quantiles)
    np.testing.assert_array_equal(restored.feature_attention, got.feature_attention)

    # on the CPU predict reads the panel's own rows (each batch standardised in place, bit-identical to the
    # whole panel scaled up front: the test below): no copy of the panel or of the windows' rows
    import forecasting.train as train_module

    shared, original = [], train_module._Batches.__init__

    def recorded(self, trained, panel, device, targets=True):
        original(self, trained, panel, device, targets)
        shared.append(np.shares_memory(self.X.numpy(), panel.X))

    monkeypatch.setattr(train_module._Batches, "__init__", recorded)
    few = predict(trained, panel, splits.test[[0, 7, -1]])
    assert shared == [True] and few.mean.shape == (3, 2)
    np.testing.assert_allclose(few.mean, got.mean[[0, 7, -1]], rtol=1e-5, atol=1e-9)  # other batches: last bits


def test_warm_start_never_ends_worse_on_validation_than_it_started(panel, caplog):
    splits = date_splits(panel, WINDOWS)
    first = fit(panel, splits, MODEL, TRAIN.model_copy(update={"epochs": 1}), WINDOWS.lookback)
    # a learning rate that wrecks every step: no epoch beats the warm weights, which are kept as they were
    with caplog.at_level("INFO", logger="nightcast.forecasting.train"):
        wrecked = fit(
            panel, splits, MODEL, TRAIN.model_copy(update={"learning_rate": 5.0}), WINDOWS.lookback, init=first
        )
    assert wrecked.best_epoch == 0 and wrecked.best_val_loss == first.best_val_loss
    # said so, not "best ... at epoch 0" (a new user's review)
    assert "trained 2 epochs; none beat the warm-started weights (validation loss" in caplog.text
    assert all(h["val_loss"] > first.best_val_loss for h in wrecked.history)
    for a, b in zip(first.model.state_dict().values(), wrecked.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # a sound one: training on from the warm weights improves on them, and the better weights are kept
    better = fit(
        panel,
        splits,
        MODEL,
        TRAIN.model_copy(update={"epochs": 4, "learning_rate": 3e-3}),
        WINDOWS.lookback,
        init=first,
    )
    assert better.best_epoch > 0 and better.best_val_loss < first.best_val_loss
    assert better.best_val_loss == min(h["val_loss"] for h in better.history)


def test_refit_trains_a_fixed_epoch_count_on_every_realised_label(panel):
    from features.windows import known_ends, refit_split
    from nightcast.errors import NightcastError

    splits = date_splits(panel, WINDOWS)
    evaluated = fit(panel, splits, MODEL, TRAIN, WINDOWS.lookback)
    assert evaluated.cutoff == str(splits.test_start)
    assert np.datetime64(evaluated.trained_through) < splits.test_start  # its labels end before the test span

    asof = panel.dates.max()
    split = refit_split(panel, WINDOWS.lookback, asof)
    known = known_ends(panel, WINDOWS.lookback)
    assert np.array_equal(split.train, known) and split.val.size == 0  # every realised label, no validation span
    three = fit(panel, split, MODEL, TRAIN.model_copy(update={"epochs": 5}), WINDOWS.lookback, stop_after=3)
    assert [h["epoch"] for h in three.history] == [1, 2, 3] and all("val_loss" not in h for h in three.history)
    # trained through the last origin whose 3-day target is realised by the as-of date: 3 sessions before it
    assert three.trained_through == str(panel.dates[panel.offsets[1] - 1 - 3]) and three.cutoff == str(asof + 1)
    # the same learning-rate schedule as the early-stopped fit: stopping after 2 epochs is the first 2 of 3
    two = fit(panel, split, MODEL, TRAIN.model_copy(update={"epochs": 5}), WINDOWS.lookback, stop_after=2)
    assert [h["train_loss"] for h in two.history] == [h["train_loss"] for h in three.history[:2]]
    assert not all(
        torch.equal(a, b)
        for a, b in zip(two.model.state_dict().values(), three.model.state_dict().values(), strict=True)
    )
    with pytest.raises(NightcastError, match="either a validation span"):
        fit(panel, splits, MODEL, TRAIN, WINDOWS.lookback, stop_after=2)
    with pytest.raises(NightcastError, match="either a validation span"):
        fit(panel, split, MODEL, TRAIN, WINDOWS.lookback)


def test_a_format_2_checkpoint_with_a_flat_config_still_loads(panel, tmp_path):
    """nightcast 0.2 stored the config as one flat dict (hyperparameters and data shape side by side)."""
    splits = date_splits(panel, WINDOWS)
    trained = fit(panel, splits, MODEL.model_copy(update={"quantiles": [0.1, 0.5, 0.9]}), TRAIN, WINDOWS.lookback)
    path = save_checkpoint(trained, tmp_path / "new.pt")
    state = torch.load(path, weights_only=True)
    assert state["format"] == 3 and set(state["config"]) == {"arch", "shape"}
    state["format"], state["config"] = 2, {**state["config"]["arch"], **state["config"]["shape"]}
    torch.save(state, tmp_path / "old.pt")
    old = load_checkpoint(tmp_path / "old.pt")
    assert old.model.config == trained.model.config and old.model.config.arch.quantiles == [0.1, 0.5, 0.9]
    np.testing.assert_array_equal(predict(old, panel, splits.test).mean, predict(trained, panel, splits.test).mean)
    state["format"] = 1
    torch.save(state, tmp_path / "older.pt")
    with pytest.raises(NightcastError, match=r"format 1; this version reads formats \(2, 3\)"):
        load_checkpoint(tmp_path / "older.pt")
    # a damaged file (a crash test truncated one by hand): one line, with what to do about it
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:300])
    with pytest.raises(
        NightcastError, match=r"cannot load checkpoint .*cut.pt: .*; move it aside .*nightcast train"
    ) as e:
        load_checkpoint(tmp_path / "cut.pt")
    assert "\n" not in str(e.value)


def test_a_fit_leaves_the_process_random_state_and_thread_count_as_it_found_them(panel):
    splits = date_splits(panel, WINDOWS)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    fit(panel, splits, MODEL, TRAIN.model_copy(update={"threads": 2 if threads == 1 else 1}), WINDOWS.lookback)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.rand(3), expected)  # fit's seed and draws did not touch the global generator


def test_the_seed_variants_train_and_round_trip(panel, tmp_path):
    splits = date_splits(panel, WINDOWS)
    settings = MODEL.model_copy(update={"bidirectional": True, "self_attention": True, "attention_heads": 2})
    trained = fit(panel, splits, settings, TRAIN, WINDOWS.lookback)
    assert trained.history[-1]["val_loss"] > 0
    got = predict(trained, panel, splits.test).mean
    restored = load_checkpoint(save_checkpoint(trained, tmp_path / "v.pt"))
    assert restored.model.config.arch.bidirectional and restored.model.config.arch.self_attention
    np.testing.assert_array_equal(predict(restored, panel, splits.test).mean, got)


def test_a_fit_frees_its_scaled_copy_of_the_panel_without_waiting_for_the_garbage_collector(panel, monkeypatch):
    """The training loop's scaled copy of the panel (~0.3 GB at 3.1M rows) goes when the fit returns: a
    reference cycle between the loop and its step kept it until Python's next full collection."""
    import gc
    import weakref

    from forecasting import train

    made = []
    original = train._Batches.__init__

    def record(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(weakref.ref(self))

    monkeypatch.setattr(train._Batches, "__init__", record)
    gc.collect()
    gc.disable()
    try:
        fit(panel, date_splits(panel, WINDOWS), MODEL, TRAIN, WINDOWS.lookback)
        alive = [ref() is not None for ref in made]
    finally:
        gc.enable()
    assert made and not any(alive)


def test_windows_standardised_a_batch_at_a_time_train_exactly_as_the_whole_panel_scaled(panel, monkeypatch):
    """On the CPU a fit reads the panel's own rows and standardises each batch of windows (no scaled copy of the
    panel held through the fit): the weights, the losses and the forecasts are bit-identical to a fit on the
    whole panel scaled up front."""
    from forecasting import train as train_module
    from forecasting.device_data import scaled_features

    panel = Panel(**{**panel.__dict__, "X": panel.X.copy()})
    panel.X[::13, 2] = np.nan  # a missing value is the training mean, 0, either way
    splits = date_splits(panel, WINDOWS)
    quantiles = MODEL.model_copy(update={"quantiles": [0.1, 0.5, 0.9]})
    now = fit(panel, splits, quantiles, TRAIN, WINDOWS.lookback)
    now_forecast = predict(now, panel, splits.test)
    original = train_module._Batches.__init__

    def scaled_up_front(self, trained, panel, device, targets=True):
        original(self, trained, panel, device, targets)
        self.X, self.scaler = scaled_features(panel.X, trained.feature_scaler, device), None

    monkeypatch.setattr(train_module._Batches, "__init__", scaled_up_front)
    before = fit(panel, splits, quantiles, TRAIN, WINDOWS.lookback)
    for (name, a), b in zip(now.model.state_dict().items(), before.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    untimed = lambda history: [{k: v for k, v in row.items() if k != "train_seconds"} for row in history]  # noqa: E731
    assert untimed(now.history) == untimed(before.history) and now.best_val_loss == before.best_val_loss
    for name, value in predict(before, panel, splits.test)._asdict().items():
        np.testing.assert_array_equal(getattr(now_forecast, name), value, err_msg=name)


def test_a_checkpoint_that_is_not_a_dict_is_a_one_line_error(tmp_path):
    """A security review: a checkpoint holding a list failed with "'list' object has no attribute 'get'"."""
    from nightcast.errors import NightcastError

    torch.save([1, 2, 3], tmp_path / "odd.pt")
    with pytest.raises(NightcastError, match="odd.pt has format None"):
        load_checkpoint(tmp_path / "odd.pt")
