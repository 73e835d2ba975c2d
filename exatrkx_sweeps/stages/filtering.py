"""Edge filter (stage 3): an MLP on the features of both hits (and edge features).

Training samples, per event and epoch, the graph's true edges, hard negatives (false
edges of the embedding graph) and random negatives (random hit pairs) at configurable
ratios, with a positive weight in the binary cross-entropy, in mini-batches of
``batch_size`` edges, with a cosine learning-rate schedule over the epochs. Inference
runs in chunks of ``chunk_size`` edges so that a 10-million-edge graph fits in memory;
edges scoring above ``filter.cut`` are kept.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.data import Data

from ..augment.reflection import random_reflect
from ..models.mlp import make_mlp
from .common import (
    EpochCallback,
    edge_attributes,
    epoch_range,
    loaded,
    n_edge_attributes,
    n_node_inputs,
    node_inputs,
    val_edge_metrics,
)

VERSION = "2"  # 2: cosine learning-rate schedule


def build_model(cfg, hough_mode: str) -> nn.Module:
    in_dim = 2 * n_node_inputs(cfg["use_cells"]) + n_edge_attributes(hough_mode)
    return make_mlp(
        in_dim, cfg["hidden"], cfg["layers"], 1, layer_norm=cfg["layer_norm"], activation=cfg["activation"]
    )


def edge_inputs(data: Data, edges: torch.Tensor, use_cells: bool, hough_mode: str, device) -> torch.Tensor:
    x = node_inputs(data, use_cells, device)
    edges = edges.to(device)
    return torch.cat([x[edges[0]], x[edges[1]], edge_attributes(data, edges, hough_mode, device)], dim=1)


def labels(data: Data, edges: torch.Tensor, truth: str) -> torch.Tensor:
    """Training target of each edge: module-wise truth ('module') or same particle ('pid')."""
    from .graph import label_edges

    y, y_pid = label_edges(data, edges)
    return (y if truth == "module" else y_pid).float()


def _sample(data, edges, y, cfg, gen):
    pos = torch.nonzero(y > 0).squeeze(1)
    neg = torch.nonzero(y == 0).squeeze(1)
    n_pos = max(pos.numel(), 1)
    n_hard = min(neg.numel(), int(cfg["hard_ratio"] * n_pos))
    hard = neg[torch.randperm(neg.numel(), generator=gen)[:n_hard]]
    n_rand = int(cfg["random_ratio"] * n_pos)
    rand = torch.randint(0, data.num_nodes, (2, n_rand), generator=gen)
    y_rand = ((data.pid[rand[0]] == data.pid[rand[1]]) & (data.pid[rand[0]] != 0)).float()
    sel = torch.cat([pos, hard])
    return torch.cat([edges[:, sel], rand], 1), torch.cat([y[sel], y_rand])


def train(
    cfg,
    graphs: list[tuple[Data, torch.Tensor]],
    val_graphs,
    seed: int,
    device,
    hough_mode: str = "none",
    reflect_axes=(),
    callback: EpochCallback | None = None,
    progress: bool = False,
):
    """graphs: (event, embedding-graph edges). Returns the model's state dict (CPU)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(cfg, hough_mode).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(int(cfg["epochs"]), 1))
    targets = [labels(d, e, cfg["truth"]) for d, e in graphs]
    pos_weight = torch.tensor(float(cfg["pos_weight"]), device=device)
    for epoch in epoch_range(cfg["epochs"], "filter", progress):
        model.train()
        total, steps = 0.0, 0
        for i in torch.randperm(len(graphs), generator=gen).tolist():
            data, edges = graphs[i]
            data = random_reflect(data, reflect_axes, gen)
            e, y = _sample(data, edges, targets[i], cfg, gen)
            inputs = edge_inputs(data, e, cfg["use_cells"], hough_mode, device)
            y = y.to(device)
            order = torch.randperm(y.numel(), generator=gen)
            for b in range(0, y.numel(), int(cfg["batch_size"])):
                idx = order[b : b + int(cfg["batch_size"])].to(device)
                logits = model(inputs[idx]).squeeze(-1)
                loss = nn.functional.binary_cross_entropy_with_logits(logits, y[idx], pos_weight=pos_weight)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach())
                steps += 1
        sched.step()
        metrics = {"loss": total / max(steps, 1)}
        if val_graphs:
            metrics.update(_validate(model, cfg, val_graphs, device, hough_mode))
        if callback:
            callback("filter", epoch, metrics)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _validate(model, cfg, graphs, device, hough_mode) -> dict[str, float]:
    events = [d for d, _ in graphs]
    kept = [e[:, infer(model, d, e, cfg, device, hough_mode) > cfg["cut"]] for d, e in graphs]
    return val_edge_metrics(events, kept)


def load(cfg, state, device, hough_mode: str = "none") -> nn.Module:
    return loaded(build_model(cfg, hough_mode), state, device)


@torch.no_grad()
def infer(model, data: Data, edges: torch.Tensor, cfg, device, hough_mode: str = "none") -> torch.Tensor:
    """Sigmoid score of every edge, computed ``chunk_size`` edges at a time (CPU tensor)."""
    model.eval()
    x = node_inputs(data, cfg["use_cells"], device)
    # Hough votes are counted over the whole graph; the rest is computed chunk by chunk
    votes = hough_mode == "votes"
    attr = edge_attributes(data, edges, hough_mode, device) if votes else None
    out = []
    chunk = int(cfg["chunk_size"])
    for s in range(0, edges.shape[1], chunk):
        e = edges[:, s : s + chunk].to(device)
        a = attr[s : s + chunk] if votes else edge_attributes(data, e, hough_mode, device)
        out.append(torch.sigmoid(model(torch.cat([x[e[0]], x[e[1]], a], 1)).squeeze(-1)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)
