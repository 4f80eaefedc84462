"""One training loop for every model configuration, prediction, and checkpoints.

The whole split lives on the device as two tensors (features and targets);
batches are gathered by index (`gather_windows`), never through a per-sample
Dataset. Seeded: on CPU the same seed gives bit-identical weights.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
import pickle
import platform
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from features.windows import Panel, Scaler, Splits, training_rows
from forecasting.batching import BatchPlan, batch_plan
from forecasting.device_data import column_moments_at, scaled_features, scaled_targets, standardise_in_place
from forecasting.model import DataShape, ModelConfig, TemporalAttentionLSTM
from forecasting.settings import ModelSettings, TrainSettings
from forecasting.step import EagerStep, GraphStep, Step, cosine_lr, loss_of
from forecasting.threads import set_threads, thread_scope
from nightcast.errors import ConfigError, NightcastError, one_line
from nightcast.io import atomic_write
from nightcast.progress import Steps
from nightcast.words import count

log = logging.getLogger("nightcast.forecasting.train")
EPOCH_STEP = "epoch {completed}/{total}  train {train}  val {val}"  # what the progress shows of each epoch
REFIT_STEP = "epoch {completed}/{total}  train {train}"

CHECKPOINT_FORMAT = 3  # 3: the config is {"arch": model settings, "shape": data shape}; 2 stored one flat dict
READABLE_FORMATS = (2, 3)

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
    def batch_plan(self) -> BatchPlan | None:
        """The batch size and peak learning rate it trained with (None: a checkpoint older than nightcast 0.6)."""
        first = self.history[0] if self.history else {}
        return BatchPlan(first["batch_size"], first["learning_rate"]) if "batch_size" in first else None

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
    """The split resident on the device; batches are gathered by index.

    On the CPU the windows are gathered from the panel's own rows and standardised a batch at a time (`inputs`):
    the whole panel scaled up front was a second copy of it (~0.27 GiB at 500 tickers x 25 years) held through
    every fit, the refit's included. Standardising is elementwise in float32 (`device_data.standardise`, tested
    bit-identical to `Scaler.transform`), so every window holds the same values either way; per step it costs
    ~0.3 ms against a ~100 ms step. On a GPU the panel is scaled there once (`scaled_features`), as before.
    """

    def __init__(self, trained: TrainedModel, panel: Panel, device: torch.device, targets: bool = True):
        scaler = trained.feature_scaler
        self.scaler = (torch.from_numpy(scaler.mean), torch.from_numpy(scaler.std)) if device.type == "cpu" else None
        if self.scaler is not None:
            self.X = torch.from_numpy(np.ascontiguousarray(panel.X, dtype=np.float32))
        else:
            self.X = scaled_features(panel.X, scaler, device)
        self.Y = scaled_targets(panel.Y, trained.target_scale, device) if targets else None
        self.T = torch.from_numpy(trained.ticker_index(panel)).to(device)
        self.lookback = trained.lookback

    def inputs(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        windows = gather_windows(self.X, idx, self.lookback)
        if self.scaler is not None:  # in place: the batch's only array is its gather (no heap-splitting temporaries)
            standardise_in_place(windows, *self.scaler)
        return windows, self.T[idx]


def _evaluate_loss(model, data: _Batches, ends: torch.Tensor, batch_size: int, levels, autocast) -> float:
    """Mean loss over `ends`, summed on the device in float64 (the same sums a Python float would make):
    one wait for the device, not one per batch."""
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=ends.device)
    with torch.no_grad(), autocast():
        for start in range(0, ends.numel(), batch_size):
            idx = ends[start : start + batch_size]
            total += loss_of(model(*data.inputs(idx)), data.Y[idx], levels).double() * idx.numel()
    return total.item() / max(ends.numel(), 1)


def fit(
    panel: Panel,
    splits: Splits,
    model_settings: ModelSettings,
    train_settings: TrainSettings,
    lookback: int,
    fingerprint: str = "",
    init: TrainedModel | None = None,
    stop_after: int | None = None,
    plan: BatchPlan | None = None,
) -> TrainedModel:
    """Train on `splits.train`, early-stop on `splits.val`; return the best-validation model.

    `init` warm-starts from another model's weights (the previous walk-forward fold).
    `stop_after`: a refit without a validation span (`splits.val` empty): train exactly that many epochs of
    the same learning-rate schedule an early-stopped fit would follow, and keep the last weights.
    `plan`: the batch size and peak learning rate to train with (a refit takes its evaluated fit's,
    `TrainedModel.batch_plan`); default: `batching.batch_plan`'s choice for this span and device.
    The seed and torch's thread count hold for this call only: the process's random state and thread count
    are as they were when it returns.
    """
    return fit_job(FitJob(panel, splits, model_settings, train_settings, lookback, fingerprint, init, stop_after, plan))


@dataclass(frozen=True)
class FitJob:
    """The arguments of one `fit`, for `forecasting/together.fit_many`."""

    panel: Panel
    splits: Splits
    model_settings: ModelSettings
    train_settings: TrainSettings
    lookback: int
    fingerprint: str = ""
    init: TrainedModel | None = None
    stop_after: int | None = None
    plan: BatchPlan | None = None


def fit_job(job: FitJob) -> TrainedModel:
    """`fit` of a job: what `fit` and `forecasting/together.fit_many` (one fit at a time) run."""
    device = resolve_device(job.train_settings.device)
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), thread_scope(job.train_settings.threads) as threads:
        with own_stream(device):  # on a GPU its graph is captured and replayed on a stream of its own
            trained, loop = prepared(job, device, threads)
            loop.run(job.stop_after, warm=job.init is not None)
    return trained


def prepared(job: FitJob, device: torch.device, threads: int) -> tuple[TrainedModel, _Loop]:
    """A job's seeded, initialised (or warm-started) model and the loop that trains it: what `fit` runs,
    and what `fit_many` runs several of, step by step."""
    if (job.stop_after is None) == (len(job.splits.val) == 0):
        raise NightcastError(
            "fit needs either a validation span for early stopping or a fixed epoch count (stop_after), not both"
        )
    torch.manual_seed(job.train_settings.seed)  # weight init and dropout; the batch order has its own generator
    trained = _untrained(
        job.panel, job.splits, job.model_settings, job.train_settings, job.lookback, job.fingerprint, device
    )
    if job.init is not None:
        if job.init.model.config != trained.model.config:
            raise NightcastError("cannot warm-start: the previous model has a different configuration")
        trained.model.load_state_dict(job.init.model.state_dict())
    log.info(
        "training %s on %s (%d thread(s)): %d train / %d val samples, %d features, lookback %d",
        describe(trained.model.config),
        device,
        threads,
        len(job.splits.train),
        len(job.splits.val),
        len(job.panel.features),
        job.lookback,
    )
    return trained, _Loop(trained, job.panel, job.splits, job.train_settings, device, threads, job.plan)


@contextlib.contextmanager
def own_stream(device: torch.device, stream: torch.cuda.Stream | None = None) -> Iterator[None]:
    """On a GPU, run the block on `stream` (default: a new one) after everything queued before it, and let
    later work wait for it. A CUDA graph captured on a stream bakes in that stream's cuBLAS workspace: graphs
    that share a capture stream must never replay at the same time (issue 15's crash of graphs replayed on
    several streams; pytorch/pytorch#193402). Elsewhere, nothing."""
    if device.type != "cuda":
        yield
        return
    stream = stream if stream is not None else torch.cuda.Stream(device)
    before = torch.cuda.current_stream(device)
    stream.wait_stream(before)
    with torch.cuda.stream(stream):
        yield
    before.wait_stream(stream)


def _untrained(
    panel: Panel,
    splits: Splits,
    model_settings: ModelSettings,
    ts: TrainSettings,
    lookback: int,
    fingerprint: str,
    device: torch.device,
) -> TrainedModel:
    """A freshly initialised model with the scalers of the training span and its bookkeeping."""
    scaler = Scaler.from_moments(*column_moments_at(panel.X, training_rows(panel, splits), device)[1:])
    target_scale = column_moments_at(panel.Y, splits.train, device)[2].astype(np.float32)
    target_scale = np.where(target_scale > 0, target_scale, 1.0).astype(np.float32)
    shape = DataShape(len(panel.features), len(panel.targets), lookback=lookback, n_tickers=len(panel.tickers))
    model = TemporalAttentionLSTM(ModelConfig(model_settings, shape)).to(device)
    return TrainedModel(
        model,
        scaler,
        target_scale,
        list(panel.features),
        list(panel.targets),
        lookback,
        fingerprint,
        {"model": model_settings.model_dump(mode="json"), "train": ts.model_dump(mode="json")},
        list(panel.tickers),
        cutoff=str(np.datetime64(splits.test_start, "D")),
        trained_through=str(panel.dates[splits.seen].max()),
    )


class _Loop:
    """The epochs of one fit: AdamW on a cosine schedule, early stopping on the validation span (or a fixed
    epoch count for a refit), the best weights kept. On a GPU the batch grows with the data
    (`forecasting/batching.py`) and each step is a CUDA graph replay (`forecasting/step.py`)."""

    def __init__(
        self,
        trained: TrainedModel,
        panel: Panel,
        splits: Splits,
        ts: TrainSettings,
        device: torch.device,
        threads,
        plan: BatchPlan | None = None,
    ):
        self.trained, self.ts, self.device, self.threads = trained, ts, device, threads
        self.model = trained.model
        self.data = _Batches(trained, panel, device)
        self.train_ends = torch.from_numpy(splits.train).to(device)
        self.val_ends = torch.from_numpy(splits.val).to(device)
        quantiles = trained.model.config.arch.quantiles
        self.levels = torch.tensor(quantiles, device=device) if quantiles else None
        self.generator = torch.Generator().manual_seed(ts.seed)
        self.plan = plan or batch_plan(len(splits.train), ts, device)
        self.total_steps = ts.epochs * math.ceil(len(splits.train) / self.plan.batch_size)  # of the cosine schedule
        self.graphed = device.type == "cuda" and ts.cuda_graph
        self.step = self._graph_step() if self.graphed else self._eager_step()

    def _body_args(self, optimizer) -> tuple:
        return (self.model, self.data.inputs, self.data.Y, optimizer, self.levels, self.ts.grad_clip, self.autocast)

    def _eager_step(self) -> Step:
        ts, lr = self.ts, self.plan.learning_rate
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=lr, weight_decay=ts.weight_decay, fused=self.device.type in ("cpu", "cuda")
        )  # fused: one kernel for all parameters (measured ~4% faster steps on this CPU)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.total_steps, eta_min=lr / 10)
        return EagerStep(*self._body_args(optimizer), schedule=schedule)

    def _graph_step(self) -> Step:
        ts, peak = self.ts, self.plan.learning_rate
        lr = torch.tensor(peak, device=self.device)  # a tensor the host refills: the graph reads it in place
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=lr, weight_decay=ts.weight_decay, fused=True, capturable=True
        )
        total_steps = self.total_steps
        return GraphStep(
            *self._body_args(optimizer),
            batch_size=self.plan.batch_size,
            lr=lr,
            lr_at=lambda step: cosine_lr(step, total_steps, peak, peak / 10),
        )

    def autocast(self):
        # a CUDA graph must not reuse casts of the weights cached outside it: no autocast cache when graphed
        return torch.autocast(
            device_type=self.device.type,
            dtype=torch.bfloat16,
            enabled=self.device.type == "cuda",
            cache_enabled=not self.graphed,
        )

    def val_loss(self) -> float:
        batch = self.plan.batch_size * 4
        return _evaluate_loss(self.model, self.data, self.val_ends, batch, self.levels, self.autocast)

    def epoch(self) -> Iterator[None]:
        """One pass over the training span in a seeded order, yielding after each step; returns (mean training
        loss, seconds)."""
        device, batch = self.device, self.plan.batch_size
        self.model.train()
        started = time.perf_counter()
        order = self.train_ends[torch.randperm(self.train_ends.numel(), generator=self.generator).to(device)]
        self.step.total.zero_()
        for start in range(0, order.numel(), batch):
            _check_stop()
            self.step(order[start : start + batch])
            yield
        return self.step.total.item() / order.numel(), time.perf_counter() - started  # .item() waits for the device

    def run(self, stop_after: int | None, warm: bool) -> None:
        for _ in self.steps(stop_after, warm):
            pass

    def steps(self, stop_after: int | None, warm: bool, progress: bool | None = None) -> Iterator[None]:
        """The whole fit, yielding after each optimisation step, so that several fits can take turns on one
        device (`forecasting/together.py`). `progress`: the epoch bar (default: the settings' choice)."""
        try:
            epochs = yield from self._epochs(stop_after, warm, progress)
        finally:  # also when a fit fails or is stopped: no graph outlives its fit (its stream may serve another)
            if self.device.type == "cuda":
                torch.cuda.current_stream(self.device).synchronize()  # the kept weights are in place for any stream
            self.step.close()  # a graph's memory and its stream's workspace go now, not whenever it is collected
            # The step holds this loop (its `autocast` and the batches' `inputs` are bound methods): a reference
            # cycle that kept the loop's scaled copy of the panel (~0.3 GB at 3.1M rows) until Python's rare
            # full collection, often through the next fit and the backtest's scoring. Broken here, the loop and
            # its data go with the last reference to it.
            self.step = self.data = None
        self._log(stop_after, epochs)

    def _epochs(self, stop_after: int | None, warm: bool, progress: bool | None) -> Iterator[None]:
        """Epochs with early stopping (or a refit's fixed count), the best weights kept; returns the most epochs."""
        trained, ts = self.trained, self.ts
        best_state, stale = copy.deepcopy(self.model.state_dict()), 0
        if warm:  # epoch 0 is a candidate too: training on must beat the warm weights to replace them
            trained.best_val_loss = self.val_loss()
        epochs = ts.epochs if stop_after is None else max(1, min(stop_after, ts.epochs))
        shown = ts.progress if progress is None else progress
        label, step = ("training", EPOCH_STEP) if stop_after is None else ("refit", REFIT_STEP)  # a refit: no val
        with Steps(label, epochs, step, log, shown, train="-", val="-") as bar:
            for epoch in range(1, epochs + 1):
                if not ts.threads and self.device.type == "cpu":
                    self.threads = set_threads(0)  # load comes and goes: take the cores other processes leave free
                train_loss, seconds = yield from self.epoch()
                # the thread count is recorded: float sums depend on it, a rerun is bit-identical only with the same
                row = {"epoch": epoch, "train_loss": train_loss, "train_seconds": seconds, "threads": self.threads}
                row |= {"batch_size": self.plan.batch_size, "learning_rate": self.plan.learning_rate}
                if stop_after is not None:  # a refit: no validation span, the epoch count was chosen beforehand
                    trained.history.append(row)
                    bar.advance(train=f"{train_loss:.4f}")
                    trained.best_epoch, best_state = epoch, None
                    continue
                val_loss = self.val_loss()
                trained.history.append({**row, "val_loss": val_loss})
                bar.advance(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
                if val_loss < trained.best_val_loss - 1e-6:
                    trained.best_val_loss, trained.best_epoch, stale = val_loss, epoch, 0
                    best_state = copy.deepcopy(self.model.state_dict())
                else:
                    stale += 1
                    if stale >= ts.patience:
                        break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.eval()
        return epochs

    def _log(self, stop_after: int | None, epochs: int) -> None:
        trained = self.trained
        if stop_after is not None:
            log.info(
                "refit %s on every realised label (trained through %s)", count(epochs, "epoch"), trained.trained_through
            )
            return
        loss = f"{trained.best_val_loss:.4f} ({'pinball' if self.levels is not None else 'MSE'} on scaled targets)"
        done = f"trained {count(len(trained.history), 'epoch')}"
        if trained.best_epoch == 0:  # only a warm start has an epoch 0: the weights it started from
            log.info("%s; none beat the warm-started weights (validation loss %s), which are kept", done, loss)
        else:
            log.info("%s; best validation loss %s after epoch %d", done, loss, trained.best_epoch)


def describe(config: ModelConfig) -> str:
    a = config.arch
    parts = [f"{'bidirectional ' if a.bidirectional else ''}LSTM {a.num_layers}x{a.hidden_size}"]
    if a.self_attention:
        parts.append(f"self-attention block ({a.attention_heads} heads) + feed-forward")
    if a.input_attention:
        parts.append("input attention")
    if a.attention:
        heads = f", {a.attention_heads} heads" if a.attention_kind == "dot" else ""
        parts.append(f"{a.attention_kind} temporal attention{heads}")
    if a.quantiles:
        parts.append(f"quantiles {list(a.quantiles)}")
    if a.ticker_embedding:
        parts.append(f"ticker embedding {a.ticker_embedding}")
    return " + ".join(parts)


def predict(trained: TrainedModel, panel: Panel, ends: np.ndarray, batch_size: int = 1024) -> Prediction:
    """Forecasts for samples ending at rows `ends`, unscaled to log returns, with the attention weights."""
    if list(panel.features) != trained.features:
        raise NightcastError(f"panel features {panel.features} differ from the model's {trained.features}")
    threads = trained.settings.get("train", {}).get("threads", 0)  # the count it trained with (0 = auto)
    on_cpu = trained.device.type == "cpu"  # on a GPU the CPU's thread count is not worth measuring the load for
    with thread_scope(threads) if on_cpu else contextlib.nullcontext():
        # the panel's own rows, standardised a batch at a time on the CPU (`_Batches`): a copy of only the windows'
        # rows (2026-11-27, when a CPU predict still scaled the whole panel) held 0.23 GiB for the combination's
        # 62.5k held origins at 500 x 25 and raised the nightly's peak by 0.1 GiB, and was no faster (0.02-0.06 s
        # for 500 origins either way)
        data, rows = _Batches(trained, panel, trained.device, targets=False), np.asarray(ends)
        # each output is copied into one array made at the first batch, not kept batch by batch and joined: the
        # batches' output tensors, kept, were small live blocks left amid each batch's freed temporaries, and
        # glibc's heap grew ~15 MiB a batch around them (+1.6 GiB forecasting 125k origins at 500 x 25 years)
        joined: dict[str, np.ndarray | None] = dict.fromkeys(("mean", "attention", "quantiles", "feature_attention"))
        trained.model.eval()
        with torch.no_grad():
            for start in range(0, len(rows), batch_size):
                idx = torch.from_numpy(np.asarray(rows[start : start + batch_size])).to(trained.device)
                out = trained.model(*data.inputs(idx))
                for name in joined:
                    value = getattr(out, name)
                    if value is not None:
                        value = value.float().cpu().numpy()
                        if joined[name] is None:
                            joined[name] = np.empty((len(rows), *value.shape[1:]), dtype=value.dtype)
                        joined[name][start : start + len(value)] = value
    scale = trained.target_scale
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
    at 1e-5 on a forecast log return by a CUDA test in tests/forecasting/test_train.py (passed on an H100,
    2026-11-27; issue 11 had seen ~6e-7 there).
    """
    device = resolve_device(device)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as exc:
        raise NightcastError(
            f"cannot load checkpoint {path}: {one_line(exc)}; move it aside (the run then takes an earlier champion, "
            "or trains a new one) or run `nightcast train`"
        ) from exc
    if not isinstance(state, dict) or state.get("format") not in READABLE_FORMATS:
        raise NightcastError(
            f"checkpoint {path} has format {state.get('format') if isinstance(state, dict) else None}; this version "
            f"reads formats {READABLE_FORMATS}"
        )
    model = TemporalAttentionLSTM(ModelConfig.from_dict(state["config"])).to(device)
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
