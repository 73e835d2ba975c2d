"""What the network stages share: model inputs, precision, devices, validation metrics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch_geometric.data import Data

from .. import devices
from ..augment import hough, triplets
from ..data.features import CELL_COLUMNS, CELL_SCALE, NODE_COLUMNS, PAIR_COLUMNS, PAIR_FEATURES, pair_features
from ..data.truth import label_edges
from ..metrics.edges import EdgeCounts


def node_inputs(data: Data, use_cells: bool, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, 3) or (N, 12): scaled (r, phi, z) and optionally the scaled cell features."""
    x = data.x
    if use_cells:
        x = torch.cat([x, data.cell * torch.tensor(CELL_SCALE, dtype=data.cell.dtype)], dim=1)
    return x.to(device)


def n_node_inputs(use_cells: bool) -> int:
    return 3 + (len(CELL_SCALE) if use_cells else 0)


def node_columns(use_cells: bool) -> tuple[str, ...]:
    """What each column of :func:`node_inputs` is."""
    return (*NODE_COLUMNS, *(CELL_COLUMNS if use_cells else ()))


def edge_columns(hough_mode: str, use_triplets: bool = False) -> tuple[str, ...]:
    """What each column of :func:`edge_attributes` is."""
    return (*PAIR_COLUMNS, *hough.COLUMNS[hough_mode], *(triplets.COLUMNS if use_triplets else ()))


def edge_attributes(
    data: Data, edges: torch.Tensor, hough_mode: str, device, use_triplets: bool = False
) -> torch.Tensor:
    """(E, 6 + Hough + triplets) edge features: the pair geometry, then the Hough
    features and the triplet features (of ``edges`` as a graph) if enabled."""
    pos = data.pos.to(device)
    edges = edges.to(device)
    parts = [pair_features(pos, edges)]
    h = hough.edge_features(pos, edges, hough_mode)
    if h is not None:
        parts.append(h)
    if use_triplets:
        parts.append(triplets.edge_features(pos, edges, data.layer // 1000))
    return torch.cat(parts, dim=1)


def n_edge_attributes(hough_mode: str, use_triplets: bool = False) -> int:
    return len(PAIR_FEATURES) + hough.n_features(hough_mode) + (triplets.N_FEATURES if use_triplets else 0)


def infer_precision(cfg) -> str:
    """``eval.precision``: what the filter and the GNN score edges in outside training
    (bf16 on CPU: about twice as fast at mu = 200, README)."""
    return str((cfg.get("eval") or {}).get("precision") or "32")


def step_events(cfg) -> int:
    """Training events per optimizer step over all processes: ``train.events_per_step``
    on each of ``train.devices`` (what the fitted state depends on, not how it was split)."""
    train = cfg["train"]
    return int(train.get("events_per_step", 1)) * int(train.get("devices", 1))


def check_precision(precision: str, device: torch.device) -> str:
    """``train.precision`` if ``device`` can run it (ConfigError otherwise)."""
    return devices.check_precision(precision, device.type)


def autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "16-mixed":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return nullcontext()


@contextmanager
def saved_for_backward() -> Iterator[list[int]]:
    """Count the bytes of the tensors autograd saves for the backward pass in the block
    (``box[0]``): the activation memory that checkpointing and lower precision reduce,
    measured exactly and independently of the allocator and of the process's history."""
    box = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        box[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield box


def grad_scaler(precision: str, device: torch.device):
    return torch.amp.GradScaler("cuda", enabled=precision == "16-mixed" and device.type == "cuda")


def resolve_device(name: str) -> torch.device:
    """The device ``train.device`` names (auto: CUDA when visible), asked of torch itself;
    ConfigError when it is not a device name or not present."""
    kind, index = devices.parse_device(name)
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        devices.check_visible(name, index, torch.cuda.device_count() if torch.cuda.is_available() else 0)
    return torch.device(name)


def count_edges(counts: EdgeCounts, data: Data, kept: torch.Tensor) -> EdgeCounts:
    """Add one event's kept edges to ``counts`` (module-wise truth, docs/physics.md section 5)."""
    counts.add(label_edges(data, kept)[0].numpy(), data.track_edges.shape[1], data.num_nodes)
    return counts


def val_edge_metrics(events, kept: list[torch.Tensor]) -> dict[str, float]:
    """Edge efficiency / purity and edges per hit of kept graphs, as validation metrics."""
    c = EdgeCounts()
    for d, e in zip(events, kept, strict=True):
        count_edges(c, d, e)
    s = c.summary()
    return {f"val_{k}": s[k] for k in ("edge_eff", "edge_purity", "edges_per_hit")}
