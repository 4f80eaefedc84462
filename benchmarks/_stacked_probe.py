"""Probe (issue 15, point 3): can K fits of one architecture trained as ONE stacked network (every weight with
a leading K axis, batched matmuls, the LSTM unrolled over the window) beat K cuDNN fits, one after another or
on K streams? Each way is one CUDA graph of a whole training step (window gather, bf16 forward, MSE, backward,
per-fit gradient clipping, fused AdamW), at the batch a 500-ticker x 25-year universe trains at (4096).

    python benchmarks/_stacked_probe.py            # on a GPU: the table
    python benchmarks/_stacked_probe.py --check    # on a CPU: the stacked forward equals K separate models
    python benchmarks/_stacked_probe.py --ways cudnn,compiled --fits 1 --compile-fits 12,24   # torch.compile

Aggregate samples/s is K x batch / seconds per step of all K.

H200, torch 2.11, 2026-11-27, batch 4096, 20 steps (samples/s, and x one cuDNN fit alone):

    model           way                      K=1          K=4          K=12         K=24
    attention_lstm  cuDNN, a stream each     1.23M 1.00x  2.43M 1.98x  2.61M 2.13x  2.63M 2.14x
    attention_lstm  stacked, one graph       0.39M 0.32x  0.47M 0.38x  0.54M 0.44x  0.55M 0.45x
    lstm            cuDNN, a stream each     1.46M 1.00x  3.26M 2.23x  3.63M 2.48x  3.63M 2.49x
    lstm            stacked, one graph       0.41M 0.28x  0.50M 0.34x  0.58M 0.39x  0.59M 0.40x

So stacking loses to cuDNN at every K (its unrolled cell is ~10 unfused kernels per time step, each reading
and writing K x B x 4H activations, where cuDNN fuses the cell), and fits on streams of their own saturate at
~2.1-2.5x one fit's rate from K = 4: at this batch one fit already keeps most of the GPU's SMs busy for each of
the window's 40 recurrent steps. That is the ceiling on what training fits at once can gain on a universe of
this size, below issue 15's 5x over sequential refits; `forecasting/together.py` keeps the streams.
The same stack through torch.compile (Inductor fuses the cell's elementwise ops, forward and backward; on a
CPU `--check --ways compiled` gives the eager stack's forward within 6e-8 and its gradients within 4e-6),
H200, torch 2.11, 2026-11-28, `--ways cudnn,compiled --fits 1 --compile-fits 12,24`:

    model           way                      K=1          K=12         K=24
    attention_lstm  cuDNN, alone             1.25M 1.00x
    attention_lstm  stacked, compiled                     2.56M 2.05x  2.63M 2.10x
    lstm            cuDNN, alone             1.50M 1.00x
    lstm            stacked, compiled                     3.14M 2.10x  3.19M 2.13x

Compiled, the stack reaches what fits on streams of their own reach (2.1x one fit, attention_lstm) and no more:
the same ceiling from the other side, so the streams, which need no compiler, stay.
(The probe's first run crashed with an illegal memory access: its optimisers were freed after capture while
their graphs still wrote their state. A graph holds no reference to what it reads: keep it alive.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from forecasting.model import DataShape, ModelConfig, TemporalAttentionLSTM  # noqa: E402
from forecasting.settings import ModelSettings  # noqa: E402

N_FEATURES, LOOKBACK, HORIZONS, ROWS = 23, 40, 5, 200_000


def model(attention: bool, seed: int) -> TemporalAttentionLSTM:
    torch.manual_seed(seed)
    config = ModelConfig(ModelSettings(attention=attention), DataShape(N_FEATURES, HORIZONS, LOOKBACK, 0))
    return TemporalAttentionLSTM(config)


class Stacked(torch.nn.Module):
    """K TemporalAttentionLSTMs (additive attention or none, one layer, no embedding) as one network."""

    def __init__(self, models: list[TemporalAttentionLSTM]):
        super().__init__()

        def stack(get):
            return torch.nn.Parameter(torch.stack([get(m).detach().clone() for m in models]))

        self.attention = models[0].attention is not None
        self.w_ih = stack(lambda m: m.encoder.weight_ih_l0.T)  # (K, F, 4H)
        self.w_hh = stack(lambda m: m.encoder.weight_hh_l0.T)  # (K, H, 4H)
        self.b = stack(lambda m: (m.encoder.bias_ih_l0 + m.encoder.bias_hh_l0)[None])  # (K, 1, 4H)
        if self.attention:
            self.keys = stack(lambda m: m.attention.keys.weight.T)  # (K, H, A)
            self.query = stack(lambda m: m.attention.query.weight.T)
            self.query_b = stack(lambda m: m.attention.query.bias[None])
            self.score = stack(lambda m: m.attention.score.weight.T)  # (K, A, 1)
        self.w1 = stack(lambda m: m.head[0].weight.T)
        self.b1 = stack(lambda m: m.head[0].bias[None])
        self.w2 = stack(lambda m: m.head[3].weight.T)
        self.b2 = stack(lambda m: m.head[3].bias[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (K, B, L, F) -> (K, B, horizons)
        K, B, L, Fn = x.shape
        H = self.w_hh.shape[1]
        gates_in = torch.baddbmm(self.b, x.reshape(K, B * L, Fn), self.w_ih).view(K, B, L, 4 * H)
        h = x.new_zeros(K, B, H)
        c = x.new_zeros(K, B, H)
        states = []
        for t in range(L):
            g = gates_in[:, :, t] + torch.bmm(h.to(self.w_hh.dtype), self.w_hh)
            i, f, gg, o = g.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
            h = torch.sigmoid(o) * torch.tanh(c)
            states.append(h)
        last = h
        if self.attention:
            S = torch.stack(states, dim=2)  # (K, B, L, H)
            energy = torch.bmm(S.reshape(K, B * L, H), self.keys).view(K, B, L, -1)
            energy = torch.tanh(energy + torch.baddbmm(self.query_b, last, self.query)[:, :, None])
            weights = torch.softmax(torch.bmm(energy.reshape(K, B * L, -1), self.score).view(K, B, L), dim=-1)
            context = (weights[..., None] * S).sum(dim=2)
            last = torch.cat([context, last], dim=-1)
        hidden = F.gelu(torch.baddbmm(self.b1, last, self.w1))
        return torch.baddbmm(self.b2, hidden, self.w2)


def _compiled(net: Stacked):
    """The stacked network through torch.compile (Inductor): the unrolled cell's elementwise ops fused into a
    kernel or two per time step, forward and backward, which is what the eager stack lacks against cuDNN."""
    return torch.compile(net, fullgraph=True, dynamic=False)


def check(compiled: bool) -> None:
    for attention in (True, False):
        models = [model(attention, seed).eval() for seed in (1, 2, 3)]
        x = torch.randn(3, 64, LOOKBACK, N_FEATURES)
        net = Stacked(models)
        stacked = net(x)
        each = torch.stack([m(x[k]).mean for k, m in enumerate(models)])
        print(f"attention={attention}: largest gap stacked vs separate {float((stacked - each).abs().max()):.2e}")
        if compiled:
            fast = _compiled(net)(x)
            fast.square().sum().backward()
            grads = [p.grad.clone() for p in net.parameters()]
            net.zero_grad()
            stacked.square().sum().backward()
            gap = max(float((g - p.grad).abs().max()) for g, p in zip(grads, net.parameters(), strict=True))
            print(f"  compiled vs eager: forward gap {float((fast - stacked).abs().max()):.2e}, gradient gap {gap:.2e}")


def _step_graph(params, forward, x_of, y_of, batch: int, stream, clip_per_fit: int | None):
    lr = torch.tensor(1e-3, device="cuda")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4, fused=True, capturable=True)

    def body():
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            out = forward(x_of())
        y = y_of()
        err = ((out.float() - y) ** 2).mean(dim=(-1, -2))  # (K,) or ()
        err.sum().backward()
        if clip_per_fit:
            norms = torch.sqrt(sum((p.grad.float() ** 2).flatten(1).sum(1) for p in params))  # (K,)
            scale = torch.clamp(1.0 / (norms + 1e-6), max=1.0)
            for p in params:
                p.grad.mul_(scale.view(-1, *([1] * (p.grad.dim() - 1))))
        else:
            torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            body()
    torch.cuda.current_stream().wait_stream(stream)
    opt.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
        body()
    return graph, opt  # the graph reads the optimiser's state: it must outlive every replay


def _data(batch: int, fits: int):
    X = torch.randn(ROWS, N_FEATURES, device="cuda")
    Y = torch.randn(ROWS, HORIZONS, device="cuda") * 0.1
    rows = torch.randint(LOOKBACK, ROWS, (fits, batch), device="cuda")
    span = torch.arange(LOOKBACK - 1, -1, -1, device="cuda")
    return X, Y, rows, span


def _time(replays, steps: int) -> float:
    for r in replays:
        r()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        for r in replays:
            r()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def cudnn(attention: bool, fits: int, batch: int, steps: int) -> float:
    """`fits` cuDNN models, each its own graph on its own stream, replayed in turns; seconds per round."""
    X, Y, rows, span = _data(batch, fits)
    graphs, alive = [], []
    for k in range(fits):
        m = model(attention, k).cuda()
        idx = rows[k]
        stream = torch.cuda.Stream()
        alive.append((m, stream))
        graphs.append(
            _step_graph(
                list(m.parameters()),
                lambda x, m=m: m(x).mean[None],
                lambda idx=idx: X[idx[:, None] - span],
                lambda idx=idx: Y[idx][None],
                batch,
                stream,
                None,
            )
        )

    def replay(graph, stream):
        with torch.cuda.stream(stream):  # as forecasting/together.py does: each fit on its own stream
            graph.replay()

    return _time([lambda g=g, s=s: replay(g, s) for (g, _), (_, s) in zip(graphs, alive, strict=True)], steps)


def stacked(attention: bool, fits: int, batch: int, steps: int, compiled: bool = False) -> float:
    X, Y, rows, span = _data(batch, fits)
    net = Stacked([model(attention, k) for k in range(fits)]).cuda()
    graph, _opt = _step_graph(
        list(net.parameters()),
        _compiled(net) if compiled else net,
        lambda: X[rows[:, :, None] - span],
        lambda: Y[rows],
        batch,
        torch.cuda.Stream(),
        fits,
    )
    return _time([graph.replay], steps)


WAYS = {  # --ways name: (label, function)
    "cudnn": ("cuDNN, one stream each", cudnn),
    "stacked": ("stacked, one graph", stacked),
    "compiled": ("stacked, compiled", lambda *args: stacked(*args, compiled=True)),
}


def table(batch: int, steps: int, fits_list: list[int], ways: list[str], compile_fits: list[int]) -> None:
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; batch {batch}, {steps} steps timed")
    print(f"\n{'model':<16}{'way':<22}{'fits':>5}{'ms/step':>9}{'samples/s':>12}{'vs 1 cuDNN':>12}")
    best = {}
    for attention in (True, False):
        name = "attention_lstm" if attention else "lstm"
        one = cudnn(attention, 1, batch, steps)
        base = batch / one
        for key in ways:
            way, fn = WAYS[key]
            for fits in compile_fits if key == "compiled" else fits_list:
                try:
                    s = one if (fn is cudnn and fits == 1) else fn(attention, fits, batch, steps)
                except torch.OutOfMemoryError:
                    print(f"{name:<16}{way:<22}{fits:>5}  out of memory")
                    torch.cuda.empty_cache()
                    continue
                rate = fits * batch / s
                best[(name, key)] = max(best.get((name, key), 0), rate / base)
                print(f"{name:<16}{way:<22}{fits:>5}{s * 1e3:>9.2f}{rate:>12,.0f}{rate / base:>11.2f}x")
                sys.stdout.flush()
                torch.cuda.empty_cache()
    print("RESULT stacked_probe " + " ".join(f"{n}_{key}_best={r:.2f}" for (n, key), r in best.items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="on a CPU: stacked forward vs separate models")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--fits", default="1,4,12,24")
    parser.add_argument("--ways", default="cudnn,stacked", help=f"which of {', '.join(WAYS)}")
    parser.add_argument("--compile-fits", default="24", help="fits of the compiled way (a compile each)")
    args = parser.parse_args()
    if args.check:
        check("compiled" in args.ways)
    else:
        fits = [int(k) for k in args.fits.split(",")]
        table(args.batch, args.steps, fits, args.ways.split(","), [int(k) for k in args.compile_fits.split(",")])
