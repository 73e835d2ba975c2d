"""A toy GNN architecture, added the way any new one is: this model module, registered
under its name, and its config file (tests/conf/gnn/toy.yaml). Nothing else changes:
not the GNN stage, not the pipeline, not the config schema.

Each iteration adds to every hit the mean of its neighbours' states; an MLP on both hits
and the edge features gives the edge logits.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.utils import scatter

from exatrkx_sweeps.models import GNN_MODELS
from exatrkx_sweeps.models.mlp import edge_mlp, make_mlp


@GNN_MODELS.register("toy")
class ToyGNN(nn.Module):
    def __init__(
        self,
        node_dim: int,
        edge_dim: int,
        checkpointing: bool = False,
        hidden: int = 32,
        iterations: int = 2,
        mlp_layers: int = 2,
        layer_norm: bool = True,
        activation: str = "silu",
    ):
        super().__init__()
        self.iterations = iterations
        mlp = dict(n_layers=mlp_layers, layer_norm=layer_norm, activation=activation)
        self.encoder = make_mlp(node_dim, hidden, out_dim=hidden, **mlp)
        self.update = make_mlp(2 * hidden, hidden, out_dim=hidden, **mlp)
        self.classifier = make_mlp(2 * hidden + edge_dim, hidden, out_dim=1, **mlp)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor | None = None):
        h = self.encoder(x)
        both = torch.cat([edge_index, edge_index.flip(0)], dim=1)
        for _ in range(self.iterations):
            mean = scatter(h[both[0]], both[1], dim=0, dim_size=h.shape[0], reduce="mean")
            h = h + self.update(torch.cat([h, mean], dim=-1))
        return edge_mlp(self.classifier, h, edge_index, edge_attr).squeeze(-1)
