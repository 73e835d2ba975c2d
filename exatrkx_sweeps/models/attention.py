"""Attention GNN edge classifier (the Exa.TrkX "AGNN": Farrell et al.'s segment classifier).

Each iteration scores every edge with an MLP on its two hits (a sigmoid attention
weight), then updates every hit with a residual MLP on itself and the attention-weighted
sums of its inward and outward neighbours. The final edge scores are the logits.

Shapes: x (N, F_node), edge_index (2, E), edge_attr (E, F_edge) -> logits (E,).
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.utils import scatter

from . import GNN_MODELS
from .mlp import edge_mlp, make_mlp, run


@GNN_MODELS.register("attention")
class AttentionGNN(nn.Module):
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
        self.iterations, self.checkpointing = iterations, checkpointing
        mlp = dict(n_layers=mlp_layers, layer_norm=layer_norm, activation=activation)
        self.input_network = make_mlp(node_dim, hidden, out_dim=hidden, **mlp)
        self.edge_network = make_mlp(2 * hidden + edge_dim, hidden, out_dim=1, **mlp)
        self.node_network = make_mlp(3 * hidden, hidden, out_dim=hidden, **mlp)

    def _edge_logits(self, h, edge_index, edge_attr):
        return edge_mlp(self.edge_network, h, edge_index, edge_attr, self.checkpointing).squeeze(-1)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor | None = None):
        src, dst = edge_index
        n = x.shape[0]
        h = run(self.input_network, x, checkpointing=self.checkpointing)
        for _ in range(self.iterations):
            a = torch.sigmoid(self._edge_logits(h, edge_index, edge_attr)).unsqueeze(-1)
            # index_select: advanced indexing's backward is not reproducible on several threads
            inward = scatter(a * h.index_select(0, src), dst, dim=0, dim_size=n, reduce="sum")
            outward = scatter(a * h.index_select(0, dst), src, dim=0, dim_size=n, reduce="sum")
            h = h + run(
                self.node_network, torch.cat([inward, outward, h], dim=-1), checkpointing=self.checkpointing
            )
        return self._edge_logits(h, edge_index, edge_attr)
