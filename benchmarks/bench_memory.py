"""GNN training memory and time for the four combinations of gradient checkpointing and
precision (the seed: checkpointing 22%, mixed precision 50%, both 11% of baseline).

    python benchmarks/bench_memory.py [--mu 50] [--hidden 128] [--iterations 8] [--steps 3]

One simulated event (every hit) with its true edges plus random fake edges is trained on
for a few steps of the interaction network. Reported per combination: seconds per step,
the activation memory autograd keeps for the backward pass (exact, from saved-tensor
hooks), the process's peak RSS above the start (CPU; each combination runs in a fresh
process) and, on CUDA, the peak allocated memory. Precision is bf16 on CPU and 16-mixed on CUDA.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from exatrkx_sweeps.data.dataset import process_event
from exatrkx_sweeps.data.simulate import SimulationConfig, default_detector, simulate_event
from exatrkx_sweeps.models.interaction import InteractionGNN
from exatrkx_sweeps.profiling import Profiler
from exatrkx_sweeps.stages.common import autocast, grad_scaler


def _event(args, device):
    det = default_detector()
    d = process_event(simulate_event(SimulationConfig(mu=args.mu), seed=1, event_id=1, detector=det), det)
    g = torch.Generator().manual_seed(0)
    true = d.track_edges
    fake = torch.randint(0, d.num_nodes, (2, int(args.fake_per_true * true.shape[1])), generator=g)
    edges = torch.cat([true, fake], 1).to(device)
    y = torch.cat([torch.ones(true.shape[1]), torch.zeros(fake.shape[1])]).to(device)
    attr = torch.randn(edges.shape[1], 6, generator=g).to(device)
    return d.x.to(device), edges, attr, y


def measure(ckpt: bool, prec: str, args) -> tuple:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x, edges, attr, y = _event(args, device)
    torch.manual_seed(0)
    model = InteractionGNN(3, 6, hidden=args.hidden, iterations=args.iterations, checkpointing=ckpt).to(
        device
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = grad_scaler(prec, device)
    prof = Profiler(device)
    saved = 0

    def pack(t):
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    times = []
    for _ in range(args.steps):
        saved = 0
        with prof.measure("gnn", "train"):
            t0 = time.perf_counter()
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(prec, device):
                logits = model(x, edges, attr)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    m = prof.records[("gnn", "train")]
    return ckpt, prec, min(times), saved / 2**20, m.rss_peak_mb, m.cuda_peak_mb, float(loss.detach())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mu", type=float, default=50)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--fake-per-true", type=float, default=3.0)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x, edges, _, _ = _event(args, device)
    print(
        f"device {device}; event: {x.shape[0]} hits, {edges.shape[1]} edges; hidden {args.hidden}, "
        f"{args.iterations} iterations"
    )
    low = "16-mixed" if device.type == "cuda" else "bf16"
    # each combination in a fresh process, so that one's freed memory does not hide the next one's peak
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx, max_tasks_per_child=1) as pool:
        rows = [
            pool.submit(measure, ckpt, prec, args).result() for ckpt in (False, True) for prec in ("32", low)
        ]
    base = rows[0]
    print(
        f"{'checkpointing':>13} {'precision':>9} {'s/step':>7} {'activations MB':>15} {'rel':>5} "
        f"{'RSS peak MB':>11} {'rel':>5} {'CUDA peak MB':>12} {'rel':>5} {'loss':>7}"
    )
    for r in rows:
        rel_cuda = r[5] / base[5] if base[5] else float("nan")
        print(
            f"{str(r[0]):>13} {r[1]:>9} {r[2]:>7.2f} {r[3]:>15.0f} {r[3] / base[3]:>5.2f} {r[4]:>11.0f} "
            f"{r[4] / max(base[4], 1e-9):>5.2f} {r[5]:>12.0f} {rel_cuda:>5.2f} {r[6]:>7.4f}"
        )


if __name__ == "__main__":
    main()
