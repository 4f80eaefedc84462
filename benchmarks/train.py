"""Training benchmark on the bundled sample: nightcast's trainer against a conventional PyTorch loop.

Same model, same size, same batch size, same optimiser, same thread count, in
one run. The conventional loop feeds per-sample windows through a
`Dataset.__getitem__` and a `DataLoader`; nightcast keeps the split resident
as two tensors and gathers each batch by index. Also: the achieved FLOP/s of
the default training step as a fraction of the dense float32 matmul FLOP/s
measured in the same run, and the wall time and validation MSE of a full
default training. On a CUDA machine it adds samples/s, the fraction of the
GPU's bf16 matmul rate and the peak GPU memory.

    .venv/bin/python benchmarks/train.py [--epochs 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from features.build import build_features  # noqa: E402
from features.denoise import denoise  # noqa: E402
from features.prices.sources import load_sample  # noqa: E402
from features.prices.validate import validate_prices  # noqa: E402
from features.settings import DenoiseSettings, FeatureSettings, ValidationSettings, WindowSettings  # noqa: E402
from features.windows import Scaler, date_splits, make_panel, training_rows  # noqa: E402
from forecasting.model import DataShape, ModelConfig, TemporalAttentionLSTM  # noqa: E402
from forecasting.settings import ModelSettings, TrainSettings  # noqa: E402
from forecasting.train import fit, predict  # noqa: E402


def sample_panel():
    prices = validate_prices(load_sample(), ValidationSettings()).frame
    ff = build_features(denoise(prices, DenoiseSettings()), FeatureSettings())
    panel = make_panel(ff, FeatureSettings().max_horizon)
    return panel, date_splits(panel, WindowSettings())


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int = 1024, repeat: int = 20) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        a @ b
    sync(device)
    return 2 * n**3 * repeat / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step_flops(c: ModelConfig, lookback: int) -> float:
    """Analytic FLOPs of one training sample (forward x 3 for forward + backward)."""
    a = c.arch
    H, F, L, A, K = a.hidden_size, c.shape.n_features, lookback, a.attention_size, c.shape.n_horizons
    lstm = sum(L * 2 * 4 * H * ((F if layer == 0 else H) + H) for layer in range(a.num_layers))
    attention = (L * 2 * H * A + 2 * H * A + L * 2 * A + L * 2 * H) if a.attention else 0
    head_in = 2 * H if a.attention else H
    head = 2 * head_in * H + 2 * H * K
    return 3.0 * (lstm + attention + head)


class WindowDataset(torch.utils.data.Dataset):
    """The conventional way: one window copied out per sample, collated into batches by the DataLoader."""

    def __init__(self, X: np.ndarray, Y: np.ndarray, ends: np.ndarray, lookback: int):
        self.X, self.Y, self.ends, self.lookback = X, Y, ends, lookback

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int):
        end = self.ends[i]
        return torch.from_numpy(self.X[end - self.lookback + 1 : end + 1].copy()), torch.from_numpy(self.Y[end])


def conventional_samples_per_s(
    panel, splits, config: ModelConfig, lookback: int, settings: TrainSettings, epochs: int, device: torch.device
) -> float:
    torch.manual_seed(settings.seed)
    scaler = Scaler.fit(panel.X[training_rows(panel, splits)])
    X = scaler.transform(panel.X)
    scale = np.nanstd(panel.Y[splits.train], axis=0)
    Y = np.nan_to_num(panel.Y / scale).astype(np.float32)
    loader = torch.utils.data.DataLoader(
        WindowDataset(X, Y, splits.train, lookback), batch_size=settings.batch_size, shuffle=True, num_workers=0
    )
    model = TemporalAttentionLSTM(config).to(device)
    optimizer = torch.optim.AdamW(  # the very optimiser nightcast uses
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay, fused=True
    )
    seen = 0
    sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                pred = model(xb).mean
            loss = torch.mean((pred.float() - yb) ** 2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
            seen += len(xb)
    sync(device)
    return seen / (time.perf_counter() - start)


def nightcast_samples_per_s(panel, splits, model_settings, settings: TrainSettings, lookback: int, epochs: int):
    """Samples/s of the training steps alone (the trainer times each epoch's steps, without validation)."""
    bench = settings.model_copy(update={"epochs": epochs, "patience": epochs + 1, "progress": False})
    trained = fit(panel, splits, model_settings, bench, lookback)
    seconds = sum(h["train_seconds"] for h in trained.history)
    return len(trained.history) * len(splits.train) / seconds, trained


def full_fit(panel, splits, model_settings, settings: TrainSettings, lookback: int) -> dict:
    """A default training, early stopping and validation passes included: wall time, training samples/s."""
    start = time.perf_counter()
    trained = fit(panel, splits, model_settings, settings, lookback)
    wall = time.perf_counter() - start
    seconds = sum(h["train_seconds"] for h in trained.history)
    return {
        "wall": wall,
        "samples_per_s": len(trained.history) * len(splits.train) / seconds,
        "epochs": len(trained.history),
        "val_loss": trained.best_val_loss,
    }


def device_comparison(panel, splits, model_settings, settings: TrainSettings, lookback: int) -> str:
    """On a GPU: the default training as a CUDA graph, kernel by kernel, and on this machine's CPU cores."""
    runs = {
        "cuda, graph": full_fit(panel, splits, model_settings, settings, lookback),
        "cuda, eager": full_fit(
            panel, splits, model_settings, settings.model_copy(update={"cuda_graph": False}), lookback
        ),
        f"cpu, {settings.threads} threads": full_fit(
            panel, splits, model_settings, settings.model_copy(update={"device": "cpu"}), lookback
        ),
    }
    print(f"{'default training':<22}{'wall s':>8}{'samples/s':>12}{'epochs':>8}{'best val loss':>15}")
    for name, r in runs.items():
        print(f"{name:<22}{r['wall']:>8.1f}{r['samples_per_s']:>12,.0f}{r['epochs']:>8}{r['val_loss']:>15.5f}")
    graph, eager, cpu = runs.values()
    print(
        f"graph vs CPU: {graph['samples_per_s'] / cpu['samples_per_s']:.1f}x samples/s, "
        f"{cpu['wall'] / graph['wall']:.1f}x wall; graph vs eager "
        f"{graph['samples_per_s'] / eager['samples_per_s']:.1f}x"
    )
    return (
        f" graph_samples_per_s={graph['samples_per_s']:.0f} eager_samples_per_s={eager['samples_per_s']:.0f}"
        f" cpu_samples_per_s={cpu['samples_per_s']:.0f} gpu_vs_cpu={graph['samples_per_s'] / cpu['samples_per_s']:.1f}"
        f" gpu_vs_cpu_wall={cpu['wall'] / graph['wall']:.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed for each loop")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (pinned for both loops)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    settings = TrainSettings(threads=args.threads, device=args.device, progress=False)
    model_settings = ModelSettings()
    lookback = WindowSettings().lookback
    panel, splits = sample_panel()
    device = torch.device("cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    shape = DataShape(len(panel.features), len(panel.targets), lookback=lookback, n_tickers=len(panel.tickers))
    config = ModelConfig(model_settings, shape)

    dense = matmul_flops(device, torch.float32)
    ours, _ = nightcast_samples_per_s(panel, splits, model_settings, settings, lookback, args.epochs)
    theirs = conventional_samples_per_s(panel, splits, config, lookback, settings, args.epochs, device)
    flops = train_step_flops(config, lookback)

    start = time.perf_counter()
    full = fit(panel, splits, model_settings, settings, lookback)
    wall = time.perf_counter() - start
    val_pred = predict(full, panel, splits.val).mean
    val_mse = float(np.mean((val_pred - panel.Y[splits.val]) ** 2))
    rw_mse = float(np.mean(panel.Y[splits.val] ** 2))

    print(
        f"bundled sample: {len(splits.train):,} training windows, {len(panel.features)} features, lookback "
        f"{lookback}, batch {settings.batch_size}, LSTM 1x{config.arch.hidden_size} + additive attention, "
        f"device {device}, torch threads {torch.get_num_threads()}"
    )
    print(f"{'loop':<34}{'samples/s':>12}")
    print(f"{'nightcast (device-resident, index)':<34}{ours:>12,.0f}")
    print(f"{'conventional (Dataset+DataLoader)':<34}{theirs:>12,.0f}")
    print(f"ratio nightcast/conventional: {ours / theirs:.2f}x")
    achieved = flops * ours
    print(
        f"training FLOPs/sample {flops / 1e6:.2f} M -> {achieved / 1e9:.1f} GFLOP/s; dense fp32 matmul "
        f"{dense / 1e9:.1f} GFLOP/s; fraction {achieved / dense:.1%}"
    )
    print(
        f"full default training: {wall:.1f} s, {len(full.history)} epochs (best {full.best_epoch}); "
        f"validation MSE {val_mse:.4e} vs random walk {rw_mse:.4e} (ratio {val_mse / rw_mse:.4f})"
    )
    extra = ""
    if device.type == "cuda":
        bf16 = matmul_flops(device, torch.bfloat16, n=4096)
        peak = torch.cuda.max_memory_allocated() / 2**20
        print(
            f"GPU: bf16 matmul {bf16 / 1e12:.1f} TFLOP/s; training at {achieved / bf16:.2%} of it; "
            f"peak memory {peak:,.0f} MiB"
        )
        extra = f" gpu_bf16_fraction={achieved / bf16:.4f} gpu_peak_mib={peak:.0f}"
        extra += device_comparison(panel, splits, model_settings, settings, lookback)
    print(
        f"RESULT train ratio={ours / theirs:.2f} samples_per_s={ours:.0f} conventional_samples_per_s={theirs:.0f} "
        f"flops_fraction={achieved / dense:.3f} full_train_s={wall:.1f} val_mse={val_mse:.4e} "
        f"val_mse_ratio_rw={val_mse / rw_mse:.4f}{extra}"
    )


if __name__ == "__main__":
    main()
