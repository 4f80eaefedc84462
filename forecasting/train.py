"""One training loop for every model configuration, prediction, and checkpoints.

The whole split lives on the device as two tensors (features and targets);
batches are gathered by index (`gather_windows`), never through a per-sample
Dataset. Seeded: on CPU the same seed gives bit-identical weights.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import pickle
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from features.errors import ConfigError, NightcastError
from features.io import atomic_write
from features.windows import Panel, Scaler, Splits, training_rows
from forecasting.model import Forecast, ModelConfig, TemporalAttentionLSTM, pinball_loss
from forecasting.settings import ModelSettings, TrainSettings
from forecasting.threads import set_threads

log = logging.getLogger("nightcast.forecasting.train")

CHECKPOINT_FORMAT = 2

# Set by the CLI on Ctrl-C or SIGTERM: a fit running in a worker thread (Prefect runs tasks with a time limit
# in threads, which a KeyboardInterrupt in the main thread never reaches) stops at its next batch.
STOP = threading.Event()


def _check_stop() -> None:
    if STOP.is_set():
        raise KeyboardInterrupt("training interrupted")


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda > mps > cpu; an explicit device that is absent is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device='cuda' but no CUDA GPU is available (use 'auto' or 'cpu')")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device='mps' but MPS is not available (use 'auto' or 'cpu')")
    return torch.device(name)


def gather_windows(X: torch.Tensor, ends: torch.Tensor, lookback: int) -> torch.Tensor:
    """(B, L, F) batch of windows ending at rows `ends` of X (R, F): one indexed gather."""
    steps = torch.arange(lookback - 1, -1, -1, device=X.device)  # (L,) L-1 .. 0
    return X[ends.unsqueeze(1) - steps]  # (B, L, F)


@dataclass
class TrainedModel:
    model: TemporalAttentionLSTM
    feature_scaler: Scaler
    target_scale: np.ndarray  # (K,) targets are divided by this; 0 stays 0 (the random walk)
    features: list[str]
    targets: list[str]
    lookback: int
    fingerprint: str
    settings: dict
    tickers: list[str] = field(default_factory=list)  # embedding index i + 1; unknown tickers get 0
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    # Out-of-sample bookkeeping: every label the model saw was realised before `cutoff` (origins on or after it
    # are out of sample for it); `trained_through` is the last origin date whose label it trained on.
    cutoff: str | None = None
    trained_through: str | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def ticker_index(self, panel: Panel) -> np.ndarray:
        """(R,) embedding index of every panel row."""
        known = {t: i + 1 for i, t in enumerate(self.tickers)}
        per_ticker = np.array([known.get(t, 0) for t in panel.tickers], dtype=np.int64)
        return per_ticker[panel.ticker_id]


class Prediction(NamedTuple):
    mean: np.ndarray  # (N, K) forward log returns
    attention: np.ndarray | None  # (N, L) temporal attention
    quantiles: np.ndarray | None  # (N, K, Q) forward log-return quantiles
    feature_attention: np.ndarray | None  # (N, F) input attention


class _Batches:
    """The split resident on the device; batches are gathered by index."""

    def __init__(self, trained: TrainedModel, panel: Panel, device: torch.device):
        self.X = torch.from_numpy(trained.feature_scaler.transform(panel.X)).to(device)
        Y = np.nan_to_num(panel.Y / trained.target_scale, nan=0.0).astype(np.float32)
        self.Y = torch.from_numpy(Y).to(device)
        self.T = torch.from_numpy(trained.ticker_index(panel)).to(device)
        self.lookback = trained.lookback

    def inputs(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return gather_windows(self.X, idx, self.lookback), self.T[idx]


def _loss(out: Forecast, target: torch.Tensor, levels: torch.Tensor | None) -> torch.Tensor:
    """MSE on the scaled targets, or the pinball loss when the model forecasts quantiles."""
    if levels is None:
        return torch.mean((out.mean.float() - target) ** 2)
    return pinball_loss(out.quantiles.float(), target, levels)


def _evaluate_loss(model, data: _Batches, ends: torch.Tensor, batch_size: int, levels, autocast) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), autocast():
        for start in range(0, ends.numel(), batch_size):
            idx = ends[start : start + batch_size]
            total += _loss(model(*data.inputs(idx)), data.Y[idx], levels).item() * idx.numel()
            count += idx.numel()
    return total / max(count, 1)


def fit(
    panel: Panel,
    splits: Splits,
    model_settings: ModelSettings,
    train_settings: TrainSettings,
    lookback: int,
    fingerprint: str = "",
    init: TrainedModel | None = None,
    stop_after: int | None = None,
) -> TrainedModel:
    """Train on `splits.train`, early-stop on `splits.val`; return the best-validation model.

    `init` warm-starts from another model's weights (the previous walk-forward fold).
    `stop_after`: a refit without a validation span (`splits.val` empty): train exactly that many epochs of
    the same learning-rate schedule an early-stopped fit would follow, and keep the last weights.
    """
    ts = train_settings
    if (stop_after is None) == (len(splits.val) == 0):
        raise NightcastError(
            "fit needs either a validation span for early stopping or a fixed epoch count (stop_after), not both"
        )
    device = resolve_device(ts.device)
    threads = set_threads(ts.threads)
    torch.manual_seed(ts.seed)
    generator = torch.Generator().manual_seed(ts.seed)

    scaler = Scaler.fit(panel.X[training_rows(panel, splits)])
    target_scale = np.nanstd(panel.Y[splits.train], axis=0).astype(np.float32)
    target_scale = np.where(target_scale > 0, target_scale, 1.0).astype(np.float32)
    config = ModelConfig(
        n_features=len(panel.features),
        n_horizons=len(panel.targets),
        lookback=lookback,
        n_tickers=len(panel.tickers),
        **{**model_settings.model_dump(), "quantiles": tuple(model_settings.quantiles)},
    )
    model = TemporalAttentionLSTM(config).to(device)
    if init is not None:
        if init.model.config != config:
            raise NightcastError("cannot warm-start: the previous model has a different configuration")
        model.load_state_dict(init.model.state_dict())
    trained = TrainedModel(
        model,
        scaler,
        target_scale,
        list(panel.features),
        list(panel.targets),
        lookback,
        fingerprint,
        {"model": model_settings.model_dump(), "train": ts.model_dump()},
        list(panel.tickers),
        cutoff=str(np.datetime64(splits.test_start, "D")),
        trained_through=str(panel.dates[np.concatenate([splits.train, splits.val])].max()),
    )
    data = _Batches(trained, panel, device)
    train_ends = torch.from_numpy(splits.train).to(device)
    val_ends = torch.from_numpy(splits.val).to(device)
    levels = torch.tensor(config.quantiles, device=device) if config.quantiles else None

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=ts.learning_rate, weight_decay=ts.weight_decay, fused=device.type in ("cpu", "cuda")
    )  # fused: one kernel for all parameters (measured ~4% faster steps on this CPU)
    steps_per_epoch = math.ceil(len(splits.train) / ts.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=ts.epochs * steps_per_epoch, eta_min=ts.learning_rate / 10
    )

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    log.info(
        "training %s on %s (%d thread(s)): %d train / %d val samples, %d features, lookback %d",
        describe(config),
        device,
        threads,
        len(splits.train),
        len(splits.val),
        config.n_features,
        lookback,
    )
    best_state, stale = copy.deepcopy(model.state_dict()), 0
    if init is not None:  # epoch 0 is a candidate too: training on must beat the warm weights to replace them
        trained.best_val_loss = _evaluate_loss(model, data, val_ends, ts.batch_size * 4, levels, autocast)
    epochs = ts.epochs if stop_after is None else max(1, min(stop_after, ts.epochs))
    with _progress(ts.progress) as bar:
        task = bar.add_task("training" if stop_after is None else "refit", total=epochs, train="-", val="-")
        for epoch in range(1, epochs + 1):
            if not ts.threads and device.type == "cpu":
                threads = set_threads(0)  # load comes and goes: take the cores other processes leave free
            model.train()
            epoch_start = time.perf_counter()
            order = train_ends[torch.randperm(train_ends.numel(), generator=generator).to(device)]
            running = torch.zeros((), device=device)
            for start in range(0, order.numel(), ts.batch_size):
                _check_stop()
                idx = order[start : start + ts.batch_size]
                with autocast():
                    out = model(*data.inputs(idx))
                loss = _loss(out, data.Y[idx], levels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), ts.grad_clip)
                optimizer.step()
                schedule.step()
                running += loss.detach() * idx.numel()
            train_loss = running.item() / order.numel()  # .item() waits for the device: the epoch is done
            train_seconds = time.perf_counter() - epoch_start
            if stop_after is not None:  # a refit: no validation span, the epoch count was chosen beforehand
                trained.history.append(
                    {"epoch": epoch, "train_loss": train_loss, "train_seconds": train_seconds, "threads": threads}
                )
                bar.update(task, advance=1, train=f"{train_loss:.4f}")
                trained.best_epoch, best_state = epoch, None
                continue
            val_loss = _evaluate_loss(model, data, val_ends, ts.batch_size * 4, levels, autocast)
            trained.history.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "train_seconds": train_seconds,
                    "threads": threads,  # float sums depend on it: a rerun is bit-identical only with the same
                }
            )
            bar.update(task, advance=1, train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
            if val_loss < trained.best_val_loss - 1e-6:
                trained.best_val_loss, trained.best_epoch, stale = val_loss, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                if stale >= ts.patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if stop_after is not None:
        log.info("refit %d epochs on every realised label (trained through %s)", epochs, trained.trained_through)
    else:
        log.info(
            "trained %d epochs; best validation loss %.4f (%s on scaled targets) at epoch %d",
            len(trained.history),
            trained.best_val_loss,
            "pinball" if levels is not None else "MSE",
            trained.best_epoch,
        )
    return trained


def describe(config: ModelConfig) -> str:
    parts = [f"LSTM {config.num_layers}x{config.hidden_size}"]
    if config.input_attention:
        parts.append("input attention")
    if config.attention:
        heads = f", {config.attention_heads} heads" if config.attention_kind == "dot" else ""
        parts.append(f"{config.attention_kind} temporal attention{heads}")
    if config.quantiles:
        parts.append(f"quantiles {list(config.quantiles)}")
    if config.ticker_embedding:
        parts.append(f"ticker embedding {config.ticker_embedding}")
    return " + ".join(parts)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("epoch {task.completed}/{task.total}"),
        TextColumn("train {task.fields[train]}  val {task.fields[val]}"),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=False,
    )


def predict(trained: TrainedModel, panel: Panel, ends: np.ndarray, batch_size: int = 1024) -> Prediction:
    """Forecasts for samples ending at rows `ends`, unscaled to log returns, with the attention weights."""
    if list(panel.features) != trained.features:
        raise NightcastError(f"panel features {panel.features} differ from the model's {trained.features}")
    if trained.device.type == "cpu" and not trained.settings.get("train", {}).get("threads"):
        set_threads(0)
    data = _Batches(trained, panel, trained.device)
    chunks: dict[str, list[np.ndarray]] = {"mean": [], "attention": [], "quantiles": [], "feature_attention": []}
    trained.model.eval()
    with torch.no_grad():
        for start in range(0, len(ends), batch_size):
            idx = torch.from_numpy(np.asarray(ends[start : start + batch_size])).to(trained.device)
            out = trained.model(*data.inputs(idx))
            for name in chunks:
                value = getattr(out, name)
                if value is not None:
                    chunks[name].append(value.float().cpu().numpy())
    scale = trained.target_scale
    joined = {k: np.concatenate(v) if v else None for k, v in chunks.items()}
    mean = joined["mean"] * scale if joined["mean"] is not None else np.empty((0, len(trained.targets)), np.float32)
    quantiles = joined["quantiles"] * scale[None, :, None] if joined["quantiles"] is not None else None
    return Prediction(mean, joined["attention"], quantiles, joined["feature_attention"])


def save_checkpoint(trained: TrainedModel, path: Path) -> Path:
    """Weights + config + feature list + scalers + data fingerprint + library versions, written atomically."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "config": trained.model.config.to_dict(),
        "weights": {k: v.cpu() for k, v in trained.model.state_dict().items()},
        "features": trained.features,
        "targets": trained.targets,
        "lookback": trained.lookback,
        "feature_scaler": trained.feature_scaler.to_dict(),
        "target_scale": trained.target_scale.tolist(),
        "fingerprint": trained.fingerprint,
        "tickers": trained.tickers,
        "settings": trained.settings,
        "history": trained.history,
        "best_epoch": trained.best_epoch,
        "cutoff": trained.cutoff,
        "trained_through": trained.trained_through,
        "versions": {"torch": str(torch.__version__), "numpy": np.__version__, "python": platform.python_version()},
    }
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, device: str = "auto") -> TrainedModel:
    """The model of a checkpoint on `device` (`auto`: where this machine trains, cuda > mps > cpu).

    Weights are stored on the CPU, so a checkpoint loads on any device. On the device it was trained on it
    reproduces its forecasts exactly; across devices (CUDA <-> CPU) within float32 kernel differences, asserted
    at 1e-5 on a forecast log return by a CUDA test in tests/forecasting/test_train.py (issue 11 reported ~6e-7
    on an H100; the test has not yet run on a GPU).
    """
    device = resolve_device(device)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as exc:
        raise NightcastError(f"cannot load checkpoint {path}: {exc}") from exc
    if state.get("format") != CHECKPOINT_FORMAT:
        raise NightcastError(f"checkpoint {path} has format {state.get('format')}, expected {CHECKPOINT_FORMAT}")
    config = {**state["config"], "quantiles": tuple(state["config"].get("quantiles", ()))}
    model = TemporalAttentionLSTM(ModelConfig(**config)).to(device)
    model.load_state_dict(state["weights"])
    model.eval()
    return TrainedModel(
        model,
        Scaler.from_dict(state["feature_scaler"]),
        np.asarray(state["target_scale"], dtype=np.float32),
        state["features"],
        state["targets"],
        state["lookback"],
        state["fingerprint"],
        state["settings"],
        state["tickers"],
        state["history"],
        state["best_epoch"],
        cutoff=state.get("cutoff"),
        trained_through=state.get("trained_through"),
    )


def weights_digest(model: torch.nn.Module) -> str:
    """Short content hash of the weights: identical models get identical versions."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]
