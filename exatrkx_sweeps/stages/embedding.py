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
from ..distributed import epoch_order, event_generator
from ..models.mlp import make_mlp
from .base import EventGraph, Input, NetworkStage, RunContext, Settings, state_dict
from .common import n_node_inputs, node_columns, node_inputs, step_events, val_edge_metrics
from .neighbours import build_edges, radius_neighbours
from .subevents import particle_groups, sub_event


class EmbeddingNet(nn.Module):
    """Shapes: (N, F) -> (N, out_dim)."""

    def __init__(self, in_dim, hidden, layers, out_dim, layer_norm=True, activation="tanh", normalize=True):
        super().__init__()
        self.net = make_mlp(in_dim, hidden, layers, out_dim, layer_norm=layer_norm, activation=activation)
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.net(x)
        return nn.functional.normalize(e, dim=-1) if self.normalize else e


class Embedding(NetworkStage):
    name = "embedding"
    network_output = "(nodes, embedding.out_dim) embedding; hits closer than embedding.radius are joined"

    def settings(self, cfg) -> Settings:
        e = dict(cfg["embedding"])
        return Settings(
            fit={
                **{k: v for k, v in e.items() if k not in ("radius", "knn")},
                "reflect": list(cfg["augment"]["reflect"]),
                "seed": cfg["seed"],
                "step_events": step_events(cfg),
            },
            # the graph stage builds with these; here they only shape the validation graph
            apply={"radius": e["radius"], "knn": e["knn"]},
            runtime={"backend": cfg["graph"]["backend"]},
        )

    def fit(self, ctx: RunContext, s: Settings, train: list[EventGraph], val: list[EventGraph]):
        """Train the embedding; returns the model's state dict (on CPU)."""
        torch.manual_seed(s["seed"])
        dp = ctx.data_parallel()
        model = build_model(s).to(ctx.device)
        dp.sync(model)
        opt = torch.optim.AdamW(model.parameters(), lr=s["lr"])
        for epoch in ctx.epochs(s["epochs"], self.name, {"model": model, "opt": opt}):
            model.train()
            total = 0.0
            # a step's unit is one particle group of one event (embedding.sub_events; 1: the event)
            items = [
                (i, k) for i in epoch_order(s["seed"], epoch, len(train)) for k in range(s["sub_events"])
            ]
            current: dict[int, list] = {}  # this rank's current event: its groups' pairs
            for step in dp.steps(items):
                opt.zero_grad()
                for i, k in step:
                    if i not in current:
                        current = {i: _group_pairs(model, train[i].data, s, epoch, i, ctx.device)}
                    x, pairs, y = current[i][k]
                    loss = hinge_loss(model(x), pairs, y, s["margin"], s["pos_weight"])
                    loss.backward()
                    total += float(loss.detach())
                if dp.average(model, len(step)):
                    opt.step()
            (total,) = dp.total(total)
            metrics = {"loss": total / max(len(items), 1)}
            if val and ctx.world.main:
                metrics.update(validate(model, s, [ev.data for ev in val], ctx.device))
            ctx.epoch_done(self.name, epoch, metrics)
        return state_dict(model)

    def build(self, s: Settings):
        return build_model(s)

    def network_inputs(self, s: Settings) -> list[Input]:
        return [Input("x", ("nodes", n_node_inputs(s["use_cells"])), columns=node_columns(s["use_cells"]))]

    def applier(self, ctx: RunContext, s: Settings, model):
        def apply(ev: EventGraph) -> EventGraph:
            return ev.replace(embedding=embed(model, ev.data, s["use_cells"], ctx.device))

        return apply


def build_model(s: Settings) -> EmbeddingNet:
    return EmbeddingNet(
        n_node_inputs(s["use_cells"]),
        s["hidden"],
        s["layers"],
        s["out_dim"],
        s["layer_norm"],
        s["activation"],
        s["normalize"],
    )


def _group_pairs(model, data: Data, s: Settings, epoch: int, index: int, device) -> list[tuple]:
    """Training event ``index``'s pairs in an epoch, one (hit inputs, pairs over those
    hits, labels) per particle group (subevents.py), hard negatives mined within the
    group; every draw comes from the event's own generator (the same on any rank)."""
    gen = event_generator(s["seed"], epoch, index)
    data = random_reflect(data, tuple(s["reflect"]), gen)
    out = []
    for hits in particle_groups(data.pid, s["sub_events"], gen):
        group = sub_event(data, hits) if s["sub_events"] > 1 else data
        x = node_inputs(group, s["use_cells"], device)
        with torch.no_grad():
            pairs, y = _pairs(group, model(x), s, gen)
        out.append((x, pairs.to(device), y.to(device)))
    return out


def _pairs(data: Data, emb: torch.Tensor, s: Settings, gen: torch.Generator):
    """Training pairs of one event and their labels: the true edges, hard negatives
    found by a radius search of the current embedding, random pairs."""
    n = data.num_nodes
    pid = data.pid
    true = data.track_edges
    with torch.no_grad():
        hard = radius_neighbours(emb.detach(), s["margin"], s["train_knn"], s["backend"]).cpu()
    same = (pid[hard[0]] == pid[hard[1]]) & (pid[hard[0]] != 0)
    hard = hard[:, ~same]
    n_rand = int(s["random_ratio"] * max(true.shape[1], 1))
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
    # index_select, not emb[pairs[0]]: the backward of advanced indexing (an accumulating
    # index_put) sums in a different order from run to run on several CPU threads
    d = (emb.index_select(0, pairs[0]) - emb.index_select(0, pairs[1])).pow(2).sum(-1)
    pos = d[y]
    neg = torch.relu(margin**2 - d[~y])
    return (pos_weight * pos.sum() + neg.sum()) / max(pairs.shape[1], 1)


@torch.no_grad()
def validate(model, s: Settings, events: list[Data], device) -> dict[str, float]:
    """Edge efficiency and purity of the radius graph at the graph's radius on ``events``."""
    model.eval()
    kept = [
        build_edges(d, embed(model, d, s["use_cells"], device), s["radius"], s["knn"], s["backend"])
        for d in events
    ]
    return val_edge_metrics(events, kept)


@torch.no_grad()
def embed(model: EmbeddingNet, data: Data, use_cells: bool, device) -> torch.Tensor:
    return model(node_inputs(data, use_cells, device))
