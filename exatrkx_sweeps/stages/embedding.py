"""Metric-learning embedding (stage 1).

An MLP maps each hit's features to an N-dimensional space (optionally L2-normalised)
in which hits joined by a true edge are close. Training uses the seed's hinge loss on
squared distances d: true pairs contribute d, other pairs max(0, margin^2 - d). Pairs
are the event's true edges, random pairs, and hard negatives mined each step by a
radius search (radius = margin) in the current embedding. Pairs of the same particle
found by the search are left out (neither pulled nor pushed).
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.data import Data

from ..augment.reflection import random_reflect
from ..models.mlp import make_mlp
from .common import EpochCallback, epoch_range, loaded, n_node_inputs, node_inputs, val_edge_metrics
from .graph import radius_neighbours

VERSION = "1"


class EmbeddingNet(nn.Module):
    """Shapes: (N, F) -> (N, out_dim)."""

    def __init__(self, in_dim, hidden, layers, out_dim, layer_norm=True, activation="tanh", normalize=True):
        super().__init__()
        self.net = make_mlp(in_dim, hidden, layers, out_dim, layer_norm=layer_norm, activation=activation)
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.net(x)
        return nn.functional.normalize(e, dim=-1) if self.normalize else e


def build_model(cfg) -> EmbeddingNet:
    return EmbeddingNet(
        n_node_inputs(cfg["use_cells"]),
        cfg["hidden"],
        cfg["layers"],
        cfg["out_dim"],
        cfg["layer_norm"],
        cfg["activation"],
        cfg["normalize"],
    )


def _pairs(data: Data, emb: torch.Tensor, cfg, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    n = data.num_nodes
    pid = data.pid
    true = data.track_edges
    with torch.no_grad():
        hard = radius_neighbours(
            emb.detach(), cfg["margin"], cfg["train_knn"], cfg.get("backend", "auto")
        ).cpu()
    same = (pid[hard[0]] == pid[hard[1]]) & (pid[hard[0]] != 0)
    hard = hard[:, ~same]
    n_rand = int(cfg["random_ratio"] * max(true.shape[1], 1))
    rand = torch.randint(0, n, (2, n_rand), generator=gen)
    rand = rand[:, rand[0] != rand[1]]
    y_rand = (pid[rand[0]] == pid[rand[1]]) & (pid[rand[0]] != 0)
    pairs = torch.cat([true, hard, rand], dim=1)
    y = torch.cat(
        [torch.ones(true.shape[1], dtype=torch.bool), torch.zeros(hard.shape[1], dtype=torch.bool), y_rand]
    )
    return pairs, y


def hinge_loss(
    emb: torch.Tensor, pairs: torch.Tensor, y: torch.Tensor, margin: float, pos_weight: float = 1.0
):
    d = (emb[pairs[0]] - emb[pairs[1]]).pow(2).sum(-1)
    pos = d[y]
    neg = torch.relu(margin**2 - d[~y])
    return (pos_weight * pos.sum() + neg.sum()) / max(pairs.shape[1], 1)


def train(
    cfg,
    train_events: list[Data],
    val_events: list[Data],
    seed: int,
    device: torch.device,
    reflect_axes: tuple[str, ...] = (),
    callback: EpochCallback | None = None,
    progress: bool = False,
):
    """Train the embedding; returns the model's state dict (on CPU)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"])
    for epoch in epoch_range(cfg["epochs"], "embedding", progress):
        model.train()
        total = 0.0
        for i in torch.randperm(len(train_events), generator=gen).tolist():
            data = random_reflect(train_events[i], reflect_axes, gen)
            emb = model(node_inputs(data, cfg["use_cells"], device))
            pairs, y = _pairs(data, emb, cfg, gen)
            loss = hinge_loss(emb, pairs.to(device), y.to(device), cfg["margin"], cfg["pos_weight"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        metrics = {"loss": total / max(len(train_events), 1)}
        if val_events:
            metrics.update(validate(model, cfg, val_events, device))
        if callback:
            callback("embedding", epoch, metrics)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


@torch.no_grad()
def validate(model, cfg, events: list[Data], device) -> dict[str, float]:
    """Edge efficiency and purity of the radius graph at ``cfg.radius`` on ``events``."""
    from .graph import build_edges

    model.eval()
    kept = [
        build_edges(
            d,
            embed(model, d, cfg["use_cells"], device),
            cfg["radius"],
            cfg["knn"],
            cfg.get("backend", "auto"),
        )
        for d in events
    ]
    return val_edge_metrics(events, kept)


def load(cfg, state: dict, device: torch.device) -> EmbeddingNet:
    return loaded(build_model(cfg), state, device)


@torch.no_grad()
def embed(model: EmbeddingNet, data: Data, use_cells: bool, device) -> torch.Tensor:
    return model(node_inputs(data, use_cells, device))
