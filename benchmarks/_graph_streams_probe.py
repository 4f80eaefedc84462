"""Probe (issue 15, point 3): two CUDA graphs of a whole training step, replayed round-robin, each on its own
stream or both on one. The variant is a string of letters: L an LSTM (else an MLP), C gradient clipping, T a
tensor learning rate, S a stream per graph.

    python benchmarks/_graph_streams_probe.py LCTS

H200, torch 2.11, 2026-11-27, 300 rounds: S (MLP) hung, LS segfaulted in CUDAGraph.replay, LCTS hung, while
CS, TS and LCT (one stream) finished. So replaying graphs on several streams is unreliable even for an MLP, and
on one stream it is fine. The cause: `torch.cuda.graph` captures every graph on one shared side stream unless
given `stream=`, so the cuBLAS workspace of that stream is baked into every graph (pytorch/pytorch#193402),
and two graphs replayed at once on two streams write the same workspace. Resolved in the product
(`forecasting/together.py`, 2026-11-27, H200): each fit captures on a stream of its own, and has a CUDA random
state of its own (graphs of one shared state race for its seed and offset); 16 graphed fits with dropout on 8
streams then ran without a crash and bit-identical to each fit alone. This probe keeps the crash's reproducer.
"""

import sys

import torch

dev = "cuda"
variant = sys.argv[1]


class Net(torch.nn.Module):
    def __init__(self, lstm):
        super().__init__()
        self.lstm = torch.nn.LSTM(8, 32, batch_first=True) if lstm else None
        self.head = torch.nn.Sequential(torch.nn.Linear(32 if lstm else 8, 64), torch.nn.GELU(), torch.nn.Linear(64, 1))

    def forward(self, x):
        if self.lstm is not None:
            x = self.lstm(x)[0][:, -1]
        else:
            x = x[:, -1]
        return self.head(x)


def make(lstm, clip, tensor_lr):
    m = Net(lstm).to(dev)
    lr = torch.tensor(1e-3, device=dev) if tensor_lr else 1e-3
    opt = torch.optim.AdamW(m.parameters(), lr=lr, fused=True, capturable=True)
    x, y = torch.randn(256, 20, 8, device=dev), torch.randn(256, 1, device=dev)

    def body():
        loss = ((m(x) - y) ** 2).mean()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            body()
    torch.cuda.current_stream().wait_stream(s)
    opt.zero_grad(set_to_none=True)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g, capture_error_mode="thread_local"):
        body()
    return g, lr


lstm, clip, tensor_lr, streams = (c in variant for c in "LCTS")
graphs = [make(lstm, clip, tensor_lr) for _ in range(2)]
ss = [torch.cuda.Stream() if streams else torch.cuda.current_stream() for _ in graphs]
for _step in range(300):
    for (g, lr), s in zip(graphs, ss, strict=True):
        with torch.cuda.stream(s):
            if tensor_lr:
                lr.fill_(1e-3)
            g.replay()
torch.cuda.synchronize()
print("OK", variant)
