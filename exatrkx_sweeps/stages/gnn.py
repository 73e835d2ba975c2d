"""GNN edge classifier (stage 4): interaction network (default), attention GNN, GCN, or
any model registered in :data:`~exatrkx_sweeps.models.GNN_MODELS` (``gnn.model``).

Trains on the filtered graphs, one event per step, with binary cross-entropy (positive
weight, optional per-edge weights from ``augment.edge_weighting``), optional random
reflections, Hough and triplet edge features, mixed precision (``train.precision``) and gradient
checkpointing (``train.checkpointing``). After every epoch the validation edge
efficiency / purity at ``tracks.edge_cut`` go to the epoch callback (training curves,
pruning). Applied, it keeps the edges scoring above ``tracks.edge_cut``.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn
from torch_geometric.data import Data

from ..augment.reflection import random_reflect
from ..augment.weighting import edge_weights
from ..data.truth import edge_targets
from ..distributed import epoch_order, event_generator
from ..models import GNN_MODEL_INPUTS, GNN_MODELS
from ..registry import check_arguments
from . import GNN_TRAINING_KEYS
from .base import EventGraph, Input, NetworkStage, RunContext, Settings, state_dict
from .common import (
    autocast,
    edge_attributes,
    edge_columns,
    grad_scaler,
    infer_precision,
    n_edge_attributes,
    n_node_inputs,
    node_columns,
    node_inputs,
    saved_for_backward,
    step_events,
    val_edge_metrics,
)
from .subevents import hit_phi, sector_masks, sector_settings, subgraph


class GNN(NetworkStage):
    name = "gnn"
    network_output = "(edges,) logit; an edge is kept where sigmoid(logit) > tracks.edge_cut"
    edge_metrics = "gnn"

    def settings(self, cfg) -> Settings:
        aug, train = cfg["augment"], cfg["train"]
        return Settings(
            fit={
                **{k: v for k, v in cfg["gnn"].items() if k in GNN_TRAINING_KEYS},
                "model_settings": {k: v for k, v in cfg["gnn"].items() if k not in GNN_TRAINING_KEYS},
                "hough": aug["hough"],
                "triplets": bool(aug.get("triplets", False)),
                "reflect": list(aug["reflect"]),
                "edge_weighting": bool(aug["edge_weighting"]),
                # p shapes the weights only when weighting is on: off, any p is one model
                "edge_weight_p": float(aug["edge_weight_p"]) if aug["edge_weighting"] else None,
                "precision": str(train["precision"]),
                "checkpointing": bool(train["checkpointing"]),
                "seed": cfg["seed"],
                "step_events": step_events(cfg),
                **sector_settings(train),
            },
            apply={"edge_cut": cfg["tracks"]["edge_cut"], "infer_precision": infer_precision(cfg)},
        )

    def code(self, s: Settings):
        # the stage and its model's module: editing one architecture leaves the others' cache
        return (__name__, GNN_MODELS[s["model"]].__module__)

    def fit(self, ctx: RunContext, s: Settings, train: list[EventGraph], val: list[EventGraph]):
        """Train on (event, filtered edges); returns the model's state dict (CPU)."""
        torch.manual_seed(s["seed"])
        dp = ctx.data_parallel()
        device, precision = ctx.device, s["precision"]
        model = build_model(s, checkpointing=s["checkpointing"]).to(device)
        dp.sync(model)
        opt = torch.optim.AdamW(model.parameters(), lr=s["lr"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(int(s["epochs"]), 1))
        scaler = grad_scaler(precision, device)
        targets = [edge_targets(ev.data, ev.edges, s["truth"]) for ev in train]
        pos_weight = torch.tensor(float(s["pos_weight"]), device=device)
        # a step's unit is one sector of one event (train.sectors; 1: the whole event)
        parts = [_sectors(ev, s) for ev in train]
        saved = 0  # largest activation memory of a step in the first epoch this run trains (bytes)
        measuring = True  # that epoch: the first after a resume too
        state = {"model": model, "opt": opt, "sched": sched}  # what a checkpoint keeps (RunContext.epochs)
        if scaler.is_enabled():
            state["scaler"] = scaler
        for epoch in ctx.epochs(s["epochs"], self.name, state):
            model.train()
            total = 0.0
            items = [
                (i, k)
                for i in epoch_order(s["seed"], epoch, len(train))
                for k, (core, _) in enumerate(parts[i])
                if core.any()
            ]
            current: dict[int, list] = {}  # this rank's current event: its sectors' batches
            for step in dp.steps(items):
                opt.zero_grad()
                for i, k in step:
                    if i not in current:
                        current = {i: _sector_batches(train[i], targets[i], parts[i], s, epoch, i, device)}
                    x, edges, attr, y, w, in_core = current[i][k]
                    with saved_for_backward() if measuring else nullcontext([0]) as box:
                        with autocast(precision, device):
                            logits = model(x, edges, attr)[in_core]
                        loss = loss_fn(logits, y, w, pos_weight)
                    saved = max(saved, box[0])
                    scaler.scale(loss).backward()
                    total += float(loss.detach())
                if dp.average(model, len(step)):
                    scaler.step(opt)
                    scaler.update()
            sched.step()
            measuring = False
            (total,) = dp.total(total)
            metrics = {"loss": total / max(len(items), 1), "saved_mb": saved / 2**20}
            if val and ctx.world.main:
                metrics.update(validate(model, s, val, device))
            ctx.epoch_done(self.name, epoch, metrics)
        return state_dict(model)

    def build(self, s: Settings):
        return build_model(s)

    def network_inputs(self, s: Settings) -> list[Input]:
        nodes, edges = node_columns(s["use_cells"]), edge_columns(s["hough"], s["triplets"])
        return [
            Input("x", ("nodes", len(nodes)), columns=nodes),
            Input("edge_index", (2, "edges"), "int64", ("source hit", "target hit")),
            Input("edge_attr", ("edges", len(edges)), columns=edges),
        ]

    def applier(self, ctx: RunContext, s: Settings, model):
        def apply(ev: EventGraph) -> EventGraph:
            with autocast(s["infer_precision"], ctx.device):
                scores = score(model, ev.data, ev.edges, s, ctx.device)
            keep = scores > s["edge_cut"]
            return ev.replace(edges=ev.edges[:, keep], scores=scores[keep])

        return apply


def build_model(s: Settings, checkpointing: bool = False) -> nn.Module:
    """The configured architecture; a setting it does not take is one ConfigError."""
    cls = GNN_MODELS[s["model"]]
    kwargs = dict(s["model_settings"])
    accepted = GNN_MODELS.arguments(s["model"], GNN_MODEL_INPUTS)
    check_arguments(accepted, kwargs, "gnn", f"gnn.model={s['model']}")
    return cls(
        node_dim=n_node_inputs(s["use_cells"]),
        edge_dim=n_edge_attributes(s["hough"], s["triplets"]),
        checkpointing=checkpointing,
        **kwargs,
    )


def _sectors(ev: EventGraph, s: Settings) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(core, window) edge masks of each sector of the edges' source hits."""
    phi = hit_phi(ev.data.pos)[ev.edges[0]]
    return sector_masks(phi, s["sectors"], s["sector_halo"] or 0.0)


def _sector_batches(ev: EventGraph, y, parts, s: Settings, epoch: int, index: int, device) -> list[tuple]:
    """Training event ``index``'s batches in an epoch, one per sector: the model's inputs
    on the sector's window (hit inputs, renumbered edges, edge attributes), then the core
    edges' labels and weights and where they sit in the window. Every draw comes from the
    event's own generator (the same on whichever rank takes it)."""
    gen = event_generator(s["seed"], epoch, index)
    data = random_reflect(ev.data, tuple(s["reflect"]), gen)
    w = edge_weights(data, ev.edges, y, s["edge_weight_p"]) if s["edge_weighting"] else None
    x = node_inputs(data, s["use_cells"], device)
    attr = edge_attributes(data, ev.edges, s["hough"], device, s["triplets"])
    out = []
    for core, window in parts:
        hits, local = subgraph(ev.edges[:, window])
        out.append(
            (
                x[hits.to(device)],
                local.to(device),
                attr[window.to(device)],
                y[core].to(device),
                None if w is None else w[core].to(device),
                core[window].to(device),
            )
        )
    return out


def forward(model, data: Data, edges: torch.Tensor, s: Settings, device) -> torch.Tensor:
    edges = edges.to(device)
    attr = edge_attributes(data, edges, s["hough"], device, s["triplets"])
    return model(node_inputs(data, s["use_cells"], device), edges, attr)


def loss_fn(logits, y, weight, pos_weight):
    return nn.functional.binary_cross_entropy_with_logits(
        logits.float(), y, weight=weight, pos_weight=pos_weight
    )


@torch.no_grad()
def validate(model, s: Settings, graphs: list[EventGraph], device) -> dict[str, float]:
    loss, kept = 0.0, []
    for ev in graphs:
        sc = score(model, ev.data, ev.edges, s, device)
        kept.append(ev.edges[:, sc > s["edge_cut"]])
        if sc.numel():
            target = edge_targets(ev.data, ev.edges, s["truth"])
            loss += float(nn.functional.binary_cross_entropy(sc.clamp(1e-6, 1 - 1e-6), target))
    return {"val_loss": loss / max(len(graphs), 1), **val_edge_metrics([ev.data for ev in graphs], kept)}


@torch.no_grad()
def score(model, data: Data, edges: torch.Tensor, s: Settings, device) -> torch.Tensor:
    """Sigmoid score of every edge (CPU tensor)."""
    model.eval()
    if edges.shape[1] == 0:
        return torch.zeros(0)
    return torch.sigmoid(forward(model, data, edges, s, device).float()).cpu()
