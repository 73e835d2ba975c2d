"""Multi-layer perceptrons, the building block of every model here."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU, "gelu": nn.GELU, "leaky_relu": nn.LeakyReLU}


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
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}.")
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(n_layers):
        layers.append(nn.Linear(width, hidden))
        if layer_norm:
            layers.append(nn.LayerNorm(hidden))
        layers.append(ACTIVATIONS[activation]())
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    if output_activation:
        layers.append(ACTIVATIONS[output_activation]())
    return nn.Sequential(*layers)


def run(module: nn.Module, *inputs: torch.Tensor, checkpointing: bool = False) -> torch.Tensor:
    """module(*inputs), recomputed in the backward pass when ``checkpointing`` (saves the
    activations' memory at the price of a second forward)."""
    if checkpointing and torch.is_grad_enabled():
        return checkpoint(module, *inputs, use_reentrant=False)
    return module(*inputs)
