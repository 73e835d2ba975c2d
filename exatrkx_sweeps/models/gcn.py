"""Graph convolutional network edge classifier (the baseline of the seed's comparison).

``iterations`` residual GCNConv layers (torch-geometric) over the undirected graph,
then an MLP on both hits (and the edge features) gives one logit per edge.

Shapes: x (N, F_node), edge_index (2, E), edge_attr (E, F_edge) -> logits (E,).
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import GCNConv
from torch_geometric.utils import to_undirected

from . import GNN_MODELS
from .mlp import activation_module, edge_mlp, make_mlp, run


@GNN_MODELS.register("gcn")
class GCN(nn.Module):
    def __init__(
        self,
        node_dim: int,
        edge_dim: int = 0,
        hidden: int = 64,
        iterations: int = 6,
        mlp_layers: int = 2,
        layer_norm: bool = True,
        activation: str = "silu",
        checkpointing: bool = False,
    ):
        super().__init__()
        self.checkpointing = checkpointing
        mlp = dict(n_layers=mlp_layers, layer_norm=layer_norm, activation=activation)
        self.encoder = make_mlp(node_dim, hidden, out_dim=hidden, **mlp)
        self.convs = nn.ModuleList(GCNConv(hidden, hidden) for _ in range(iterations))
        self.norms = nn.ModuleList(
            nn.LayerNorm(hidden) if layer_norm else nn.Identity() for _ in range(iterations)
        )
        self.act = activation_module(activation)
        self.classifier = make_mlp(2 * hidden + edge_dim, hidden, out_dim=1, **mlp)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor | None = None):
        h = run(self.encoder, x, checkpointing=self.checkpointing)
        undirected = to_undirected(edge_index, num_nodes=x.shape[0])
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = h + self.act(norm(conv(h, undirected)))
        return edge_mlp(self.classifier, h, edge_index, edge_attr, self.checkpointing).squeeze(-1)
