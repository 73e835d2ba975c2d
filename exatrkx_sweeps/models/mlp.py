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


# Scoring on a CPU (no autograd) goes through the rows in blocks of this many: one block's
# activations (4096 x 128 floats, 2 MB) stay in the processor's caches through every
# layer, so each LayerNorm and activation is a pass over cached memory instead of over
# hundreds of MB of RAM. The filter's MLP on 500k edges: 0.78 s in one piece, 0.59 s in
# blocks (2 cores, AVX2); the results are the same rows, computed in the same order (bit
# for bit on AMD processors; on an Intel Xeon, MKL sums the 1-wide output layer of a short
# block in another order: one unit in the last place).
SCORING_BLOCK = 4096


def eager_scoring(x: torch.Tensor) -> bool:
    """Whether ``x`` is being scored on a CPU, eagerly: without autograd (whose graph
    would keep every block's activations anyway), not traced or exported (TorchScript
    and ONNX take neither a loop over a data-dependent number of blocks nor every op)."""
    return (
        x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
    )


def _in_blocks(x: torch.Tensor) -> bool:
    """Whether the rows of ``x`` are scored block by block: more than one block of them,
    scored eagerly on a CPU."""
    return x.shape[0] > SCORING_BLOCK and eager_scoring(x)


def by_blocks(n_rows: int, block, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``block(rows)`` for consecutive :data:`SCORING_BLOCK`-row slices of ``n_rows``,
    written into one (n_rows, ...) output, each block plus ``residual[rows]`` when given:
    the same rows as concatenating the blocks (and adding the residual), without a
    second pass over the whole output for either."""
    out = None
    for i in range(0, n_rows, SCORING_BLOCK):
        rows = slice(i, i + SCORING_BLOCK)
        y = block(rows)
        if out is None:
            dtype = y.dtype if residual is None else torch.promote_types(y.dtype, residual.dtype)
            out = y.new_empty((n_rows, *y.shape[1:]), dtype=dtype)
        if residual is None:
            out[rows] = y
        else:
            torch.add(residual[rows], y, out=out[rows])
    return out


def rowwise(module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for a module that acts on each row alone (an MLP): in blocks of rows
    when scoring on a CPU (:data:`SCORING_BLOCK`), else in one call."""
    if not _in_blocks(x):
        return module(x)
    return by_blocks(x.shape[0], lambda rows: module(x[rows]))


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
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``mlp(cat([h[src], h[dst], edge_attr]))`` (plus ``residual``, when given) without
    building that (E, 2F + F_edge) input: the first Linear layer is split into its source,
    target and edge blocks, the node blocks act once per hit (N rows) and are then
    gathered to the edges (E rows). The same function and parameters, with a third fewer
    multiply-adds per edge. Scored on a CPU, the edges go through the layers, and the
    residual is added, in cache-sized blocks (:func:`by_blocks`)."""

    def f(h: torch.Tensor, edge_attr: torch.Tensor | None, residual: torch.Tensor | None) -> torch.Tensor:
        first, n = mlp[0], h.shape[-1]
        w_src, w_dst, w_edge = first.weight.split([n, n, first.in_features - 2 * n], dim=1)
        a, b = nn.functional.linear(h, torch.cat([w_src, w_dst])).chunk(2, dim=-1)

        def edges(rows: slice) -> torch.Tensor:
            # index_select, not a[index]: its backward is an index_add, 3x faster on a
            # CPU than the accumulating index_put that indexing's backward does
            z = a.index_select(0, edge_index[0, rows]) + b.index_select(0, edge_index[1, rows])
            if edge_attr is None:
                return mlp[1:](z + first.bias)
            return mlp[1:](z + nn.functional.linear(edge_attr[rows], w_edge, first.bias))

        if _in_blocks(edge_index.T):
            return by_blocks(edge_index.shape[1], edges, residual)
        out = edges(slice(None))
        return out if residual is None else residual + out

    return run(f, h, edge_attr, residual, checkpointing=checkpointing)
