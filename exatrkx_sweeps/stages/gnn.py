"""GNN edge classifier (stage 4): interaction network (default), attention GNN or GCN.

Trains on the filtered graphs, one event per step, with binary cross-entropy (positive
weight, optional per-edge weights from ``augment.edge_weighting``), optional random
reflections, Hough edge features, mixed precision (``train.precision``) and gradient
checkpointing (``train.checkpointing``). After every epoch the validation edge
efficiency / purity at ``tracks.edge_cut`` go to the epoch callback (training curves,
pruning).
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.data import Data

from ..augment.reflection import random_reflect
from ..augment.weighting import edge_weights
from ..models.attention import AttentionGNN
from ..models.gcn import GCN
from ..models.interaction import InteractionGNN
from .common import (
    EpochCallback,
    autocast,
    edge_attributes,
    epoch_range,
    grad_scaler,
    loaded,
    n_edge_attributes,
    n_node_inputs,
    node_inputs,
    val_edge_metrics,
)
from .filtering import labels

VERSION = "1"
MODELS = {"interaction": InteractionGNN, "attention": AttentionGNN, "gcn": GCN}


def build_model(cfg, hough_mode: str = "none", checkpointing: bool = False) -> nn.Module:
    if cfg["model"] not in MODELS:
        raise ValueError(f"gnn.model must be one of {sorted(MODELS)}, got {cfg['model']!r}.")
    return MODELS[cfg["model"]](
        node_dim=n_node_inputs(cfg["use_cells"]),
        edge_dim=n_edge_attributes(hough_mode),
        hidden=cfg["hidden"],
        iterations=cfg["iterations"],
        aggregation=cfg.get("aggregation", "sum_max"),
        mlp_layers=cfg["mlp_layers"],
        layer_norm=cfg["layer_norm"],
        activation=cfg["activation"],
        checkpointing=checkpointing,
    )


def forward(model, data: Data, edges: torch.Tensor, cfg, device, hough_mode: str) -> torch.Tensor:
    edges = edges.to(device)
    attr = edge_attributes(data, edges, hough_mode, device)
    return model(node_inputs(data, cfg["use_cells"], device), edges, attr)


def loss_fn(logits, y, weight, pos_weight):
    return nn.functional.binary_cross_entropy_with_logits(
        logits.float(), y, weight=weight, pos_weight=pos_weight
    )


def train(
    cfg,
    graphs: list[tuple[Data, torch.Tensor]],
    val_graphs,
    seed: int,
    device,
    *,
    precision: str = "32",
    checkpointing: bool = False,
    hough_mode: str = "none",
    reflect_axes=(),
    edge_weighting: bool = False,
    edge_weight_p: float = 1.0,
    edge_cut: float = 0.5,
    callback: EpochCallback | None = None,
    progress: bool = False,
):
    """graphs: (event, filtered edges). Returns the model's state dict (CPU)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(cfg, hough_mode, checkpointing).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(int(cfg["epochs"]), 1))
    scaler = grad_scaler(precision, device)
    targets = [labels(d, e, cfg["truth"]) for d, e in graphs]
    pos_weight = torch.tensor(float(cfg["pos_weight"]), device=device)
    for epoch in epoch_range(cfg["epochs"], "gnn", progress):
        model.train()
        total = 0.0
        for i in torch.randperm(len(graphs), generator=gen).tolist():
            data, edges = graphs[i]
            if edges.shape[1] == 0:
                continue
            data = random_reflect(data, reflect_axes, gen)
            y = targets[i].to(device)
            w = edge_weights(data, edges, y.cpu(), edge_weight_p).to(device) if edge_weighting else None
            with autocast(precision, device):
                logits = forward(model, data, edges, cfg, device, hough_mode)
            loss = loss_fn(logits, y, w, pos_weight)
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            total += float(loss.detach())
        sched.step()
        metrics = {"loss": total / max(len(graphs), 1)}
        if val_graphs:
            metrics.update(validate(model, cfg, val_graphs, device, hough_mode, edge_cut))
        if callback:
            callback("gnn", epoch, metrics)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


@torch.no_grad()
def validate(model, cfg, graphs, device, hough_mode, edge_cut) -> dict[str, float]:
    loss, kept = 0.0, []
    for data, edges in graphs:
        s = infer(model, data, edges, cfg, device, hough_mode)
        kept.append(edges[:, s > edge_cut])
        if s.numel():
            target = labels(data, edges, cfg["truth"])
            loss += float(nn.functional.binary_cross_entropy(s.clamp(1e-6, 1 - 1e-6), target))
    return {"val_loss": loss / max(len(graphs), 1), **val_edge_metrics([d for d, _ in graphs], kept)}


def load(cfg, state, device, hough_mode: str = "none") -> nn.Module:
    return loaded(build_model(cfg, hough_mode), state, device)


@torch.no_grad()
def infer(model, data: Data, edges: torch.Tensor, cfg, device, hough_mode: str = "none") -> torch.Tensor:
    model.eval()
    if edges.shape[1] == 0:
        return torch.zeros(0)
    return torch.sigmoid(forward(model, data, edges, cfg, device, hough_mode).float()).cpu()
