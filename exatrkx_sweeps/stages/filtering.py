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
from ..data.truth import edge_targets
from ..distributed import epoch_order, event_generator
from ..models.mlp import make_mlp, rowwise
from .base import EventGraph, Input, NetworkStage, RunContext, Settings, state_dict
from .common import (
    autocast,
    edge_attributes,
    edge_columns,
    infer_precision,
    n_edge_attributes,
    n_node_inputs,
    node_columns,
    node_inputs,
    step_events,
    val_edge_metrics,
)


class Filter(NetworkStage):
    name = "filter"
    network_output = "(edges, 1) logit; an edge is kept where sigmoid(logit) > filter.cut"
    edge_metrics = "filter"

    def settings(self, cfg) -> Settings:
        f = dict(cfg["filter"])
        return Settings(
            fit={
                **{k: v for k, v in f.items() if k not in ("cut", "chunk_size")},
                "hough": cfg["augment"]["hough"],
                "reflect": list(cfg["augment"]["reflect"]),
                "seed": cfg["seed"],
                "step_events": step_events(cfg),
            },
            apply={"cut": f["cut"], "infer_precision": infer_precision(cfg)},
            runtime={"chunk_size": f["chunk_size"]},
        )

    def fit(self, ctx: RunContext, s: Settings, train: list[EventGraph], val: list[EventGraph]):
        """Train on (event, embedding-graph edges); returns the model's state dict (CPU)."""
        torch.manual_seed(s["seed"])
        dp = ctx.data_parallel()
        device = ctx.device
        model = build_model(s).to(device)
        dp.sync(model)
        opt = torch.optim.AdamW(model.parameters(), lr=s["lr"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(int(s["epochs"]), 1))
        targets = [edge_targets(ev.data, ev.edges, s["truth"]) for ev in train]
        sizes = [_sample_size(y, s) for y in targets]
        pos_weight = torch.tensor(float(s["pos_weight"]), device=device)
        batch = int(s["batch_size"])
        for epoch in ctx.epochs(s["epochs"], self.name, {"model": model, "opt": opt, "sched": sched}):
            model.train()
            total, steps = 0.0, 0
            # a step's unit is one batch of one event's sampled edges
            items = [
                (i, b) for i in epoch_order(s["seed"], epoch, len(train)) for b in range(0, sizes[i], batch)
            ]
            sampled: dict[int, tuple] = {}  # this rank's current event: inputs, labels, edge order
            for step in dp.steps(items):
                opt.zero_grad()
                for i, b in step:
                    if i not in sampled:
                        sampled = {i: _training_edges(train[i], targets[i], s, epoch, i, device)}
                    inputs, y, order = sampled[i]
                    idx = order[b : b + batch].to(device)
                    logits = model(inputs[idx]).squeeze(-1)
                    loss = nn.functional.binary_cross_entropy_with_logits(
                        logits, y[idx], pos_weight=pos_weight
                    )
                    loss.backward()
                    total += float(loss.detach())
                    steps += 1
                if dp.average(model, len(step)):
                    opt.step()
            sched.step()
            total, steps = dp.total(total, steps)
            metrics = {"loss": total / max(steps, 1)}
            if val and ctx.world.main:
                kept = [ev.edges[:, score(model, ev, s, device) > s["cut"]] for ev in val]
                metrics.update(val_edge_metrics([ev.data for ev in val], kept))
            ctx.epoch_done(self.name, epoch, metrics)
        return state_dict(model)

    def build(self, s: Settings):
        return build_model(s)

    def network_inputs(self, s: Settings) -> list[Input]:
        """One row per edge: both hits' node inputs, then the edge's attributes."""
        nodes = node_columns(s["use_cells"])
        columns = (*(f"src.{c}" for c in nodes), *(f"dst.{c}" for c in nodes), *edge_columns(s["hough"]))
        return [Input("edge_inputs", ("edges", len(columns)), columns=columns)]

    def applier(self, ctx: RunContext, s: Settings, model):
        def apply(ev: EventGraph) -> EventGraph:
            with autocast(s["infer_precision"], ctx.device):
                scores = score(model, ev, s, ctx.device)
            keep = scores > s["cut"]
            return ev.replace(edges=ev.edges[:, keep], scores=scores[keep])

        return apply


def build_model(s: Settings) -> nn.Module:
    in_dim = 2 * n_node_inputs(s["use_cells"]) + n_edge_attributes(s["hough"])
    return make_mlp(
        in_dim, s["hidden"], s["layers"], 1, layer_norm=s["layer_norm"], activation=s["activation"]
    )


def edge_inputs(data: Data, edges: torch.Tensor, use_cells: bool, hough_mode: str, device) -> torch.Tensor:
    x = node_inputs(data, use_cells, device)
    edges = edges.to(device)
    return torch.cat([x[edges[0]], x[edges[1]], edge_attributes(data, edges, hough_mode, device)], dim=1)


def _training_edges(ev: EventGraph, y: torch.Tensor, s: Settings, epoch: int, index: int, device):
    """Training event ``index``'s edges in an epoch: their inputs, labels and shuffled
    order, drawn from the event's own generator (the same on whichever rank takes it)."""
    gen = event_generator(s["seed"], epoch, index)
    data = random_reflect(ev.data, tuple(s["reflect"]), gen)
    e, y = _sample(data, ev.edges, y, s, gen)
    inputs = edge_inputs(data, e, s["use_cells"], s["hough"], device)
    return inputs, y.to(device), torch.randperm(y.numel(), generator=gen)


def _sample_size(y: torch.Tensor, s: Settings) -> int:
    """How many edges :func:`_sample` draws from an event with edge labels ``y``."""
    n_pos = int((y > 0).sum())
    n_hard = min(int((y == 0).sum()), int(s["hard_ratio"] * max(n_pos, 1)))
    return n_pos + n_hard + int(s["random_ratio"] * max(n_pos, 1))


def _sample(data, edges, y, s: Settings, gen):
    pos = torch.nonzero(y > 0).squeeze(1)
    neg = torch.nonzero(y == 0).squeeze(1)
    n_pos = max(pos.numel(), 1)
    n_hard = min(neg.numel(), int(s["hard_ratio"] * n_pos))
    hard = neg[torch.randperm(neg.numel(), generator=gen)[:n_hard]]
    n_rand = int(s["random_ratio"] * n_pos)
    rand = torch.randint(0, data.num_nodes, (2, n_rand), generator=gen)
    y_rand = ((data.pid[rand[0]] == data.pid[rand[1]]) & (data.pid[rand[0]] != 0)).float()
    sel = torch.cat([pos, hard])
    return torch.cat([edges[:, sel], rand], 1), torch.cat([y[sel], y_rand])


@torch.no_grad()
def score(model, ev: EventGraph, s: Settings, device) -> torch.Tensor:
    """Sigmoid score of every edge of ``ev``, ``chunk_size`` edges at a time (CPU tensor),
    each chunk through the network in cache-sized blocks of edges (``rowwise``). (The
    split first layer of ``edge_mlp`` is slower here: the hits' 12 inputs gather faster
    than the 2 x 128 columns of its per-hit products.)"""
    model.eval()
    data, edges = ev.data, ev.edges
    x = node_inputs(data, s["use_cells"], device)
    # Hough votes are counted over the whole graph; the rest is computed chunk by chunk
    votes = s["hough"] == "votes"
    attr = edge_attributes(data, edges, s["hough"], device) if votes else None
    out = []
    chunk = int(s["chunk_size"])
    for start in range(0, edges.shape[1], chunk):
        e = edges[:, start : start + chunk].to(device)
        a = attr[start : start + chunk] if votes else edge_attributes(data, e, s["hough"], device)
        logits = rowwise(model, torch.cat([x[e[0]], x[e[1]], a], 1)).squeeze(-1)
        out.append(torch.sigmoid(logits).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)
