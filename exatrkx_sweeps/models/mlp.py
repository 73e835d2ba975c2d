"""Multi-layer perceptrons, the building block of every model here."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import ACTIVATIONS


def activation_module(name: str) -> nn.Module:
    """A new ``nn`` module of activation ``name`` (a key of :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}.")
    return getattr(nn, ACTIVATIONS[name])()


def make_mlp(
    in_dim: int,
    hidden: int,
    n_layers: int,
    out_dim: int,
    layer_norm: bool = True,
    activation: str = "relu",
    output_activation: str | None = None,
) -> nn.Sequential:
    """in_dim -> [Linear, (LayerNorm), act] x n_layers -> Linear -> out_dim (-> output act)."""
    activation_module(activation)  # a bad name fails before any layer is built
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(n_layers):
        layers.append(nn.Linear(width, hidden))
        if layer_norm:
            layers.append(nn.LayerNorm(hidden))
        layers.append(activation_module(activation))
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    if output_activation:
        layers.append(activation_module(output_activation))
    return nn.Sequential(*layers)


def run(module, *inputs: torch.Tensor | None, checkpointing: bool = False) -> torch.Tensor:
    """module(*inputs), recomputed in the backward pass when ``checkpointing`` (saves the
    activations' memory at the price of a second forward). ``module``: any callable."""
    if checkpointing and torch.is_grad_enabled():
        return checkpoint(module, *inputs, use_reentrant=False)
    return module(*inputs)


def edge_mlp(
    mlp: nn.Sequential,
    h: torch.Tensor,
    edge_index: torch.Tensor,
    edge_attr: torch.Tensor | None = None,
    checkpointing: bool = False,
) -> torch.Tensor:
    """``mlp(cat([h[src], h[dst], edge_attr]))`` without building that (E, 2F + F_edge)
    input: the first Linear layer is split into its source, target and edge blocks, the
    node blocks act once per hit (N rows) and are then gathered to the edges (E rows).
    The same function and parameters, with a third fewer multiply-adds per edge."""

    def f(h: torch.Tensor, edge_attr: torch.Tensor | None) -> torch.Tensor:
        first, n = mlp[0], h.shape[-1]
        w_src, w_dst, w_edge = first.weight.split([n, n, first.in_features - 2 * n], dim=1)
        a, b = nn.functional.linear(h, torch.cat([w_src, w_dst])).chunk(2, dim=-1)
        # index_select, not a[index]: its backward is an index_add, 3x faster on a CPU
        # than the accumulating index_put that indexing's backward does
        z = a.index_select(0, edge_index[0]) + b.index_select(0, edge_index[1])
        z = z + (first.bias if edge_attr is None else nn.functional.linear(edge_attr, w_edge, first.bias))
        return mlp[1:](z)

    return run(f, h, edge_attr, checkpointing=checkpointing)
