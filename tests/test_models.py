import pytest
import torch

from exatrkx_sweeps.errors import ConfigError
from exatrkx_sweeps.models.attention import AttentionGNN
from exatrkx_sweeps.models.gcn import GCN
from exatrkx_sweeps.models.interaction import InteractionGNN
from exatrkx_sweeps.models.mlp import edge_mlp, make_mlp
from exatrkx_sweeps.stages.common import autocast, check_precision


def _graph(n=400, e=2000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    edges = torch.randint(0, n, (2, e), generator=g)
    attr = torch.randn(e, 6, generator=g)
    y = (torch.rand(e, generator=g) < 0.3).float()
    return x, edges, attr, y


def _saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of fn()."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return total, out


@pytest.mark.parametrize("cls", [InteractionGNN, AttentionGNN, GCN])
def test_checkpointing_keeps_gradients_and_saves_memory(cls):
    x, edges, attr, y = _graph()
    torch.manual_seed(0)
    plain = cls(node_dim=3, edge_dim=6, hidden=32, iterations=4)
    ckpt = cls(node_dim=3, edge_dim=6, hidden=32, iterations=4, checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    grads, mem = [], []
    for model in (plain, ckpt):
        model.zero_grad()
        saved, logits = _saved_bytes(lambda m=model: m(x, edges, attr))
        torch.nn.functional.binary_cross_entropy_with_logits(logits, y).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        mem.append(saved)
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-4)
    if cls is not GCN:  # GCN's convolutions are not checkpointed, only its MLPs
        assert mem[1] < 0.6 * mem[0], mem
    else:
        assert mem[1] < mem[0]


@pytest.mark.parametrize("edge_dim", [0, 6])
def test_edge_mlp_equals_the_mlp_on_concatenated_hits(edge_dim):
    """The split first layer is the same function with the same gradients as the MLP
    on cat([h[src], h[dst], edge_attr])."""
    x, edges, attr, _ = _graph()
    torch.manual_seed(1)
    h = torch.randn(x.shape[0], 16, requires_grad=True)
    a = attr[:, :edge_dim].clone().requires_grad_(True) if edge_dim else None
    mlp = make_mlp(32 + edge_dim, 24, 2, 5, activation="silu")
    parts = [h[edges[0]], h[edges[1]]] + ([a] if edge_dim else [])
    ref = mlp(torch.cat(parts, dim=-1))
    out = edge_mlp(mlp, h, edges, a)
    assert torch.allclose(out, ref, atol=1e-5)
    g_ref = torch.autograd.grad(ref.square().sum(), [h, *mlp.parameters()])
    g_out = torch.autograd.grad(out.square().sum(), [h, *mlp.parameters()])
    for u, v in zip(g_ref, g_out, strict=True):
        assert torch.allclose(u, v, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "cls,aggregation",
    [(InteractionGNN, "sum"), (InteractionGNN, "sum_max"), (AttentionGNN, None), (GCN, None)],
)
def test_scoring_in_cache_sized_blocks_gives_the_same_scores(cls, aggregation, monkeypatch):
    """Scoring on a CPU runs the MLPs block by block (models.mlp.SCORING_BLOCK rows) and
    sums messages without copying the edges: every score is what one pass over all rows
    gives, to the last bit or two. Bit for bit on the AMD machines; on an Intel Xeon
    (MKL, AVX-512) the 1-wide output layer's matrix-vector product sums a 64-row block
    in another order than 1500 rows, and a logit differs by one unit in the last place.
    Training and tracing still see the plain one-pass network."""
    from exatrkx_sweeps.models import mlp

    x, edges, attr, _ = _graph(n=300, e=1500)
    torch.manual_seed(2)
    kwargs = {"aggregation": aggregation} if aggregation else {}
    model = cls(node_dim=3, edge_dim=6, hidden=16, iterations=3, **kwargs).eval()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    calls = []
    for m in norms:
        m.register_forward_hook(lambda *_: calls.append(1))

    def scored(*inputs):
        calls.clear()
        with torch.no_grad():
            return model(*inputs), len(calls)

    whole, passes = scored(x, edges, attr)
    monkeypatch.setattr(mlp, "SCORING_BLOCK", 64)  # 1500 edges, 300 hits: many blocks, a short last one
    blocked, block_passes = scored(x, edges, attr)
    last_bits = 4 * torch.finfo(whole.dtype).eps * float(whole.abs().max())
    assert float((blocked - whole).abs().max()) <= last_bits and block_passes > 3 * passes
    with torch.no_grad():
        traced = torch.jit.trace(model, (x, edges, attr), check_trace=False)
    assert torch.equal(traced(x, edges, attr), whole)  # one pass over all rows: any edge count
    assert torch.allclose(
        traced(x, edges[:, :700], attr[:700]), scored(x, edges[:, :700], attr[:700])[0], atol=1e-6
    )
    # what blocks: a CPU tensor being scored; with autograd on, one pass (gradients as before)
    rows = torch.zeros(65, 3)
    assert mlp._in_blocks(rows) is False
    with torch.no_grad():
        assert mlp._in_blocks(rows) is True and mlp._in_blocks(rows[:64]) is False


@pytest.mark.parametrize("how", ["sum", "max", "sum_max"])
def test_aggregation_equals_pyg_scatter_with_its_gradients(how):
    """index_add and ScatterMax are PyG's scatter sum and max, values and gradients, ties
    (split evenly among the tied edges) and hits with no edge (zeros) included."""
    from torch_geometric.utils import scatter

    from exatrkx_sweeps.models.interaction import aggregate

    _, edges, _, _ = _graph(n=60, e=300)
    g = torch.Generator().manual_seed(2)
    e = torch.randn(300, 8, generator=g, dtype=torch.float64)
    e[:40] = e[:40].round() + 0.5  # many exact ties at a hit (none at 0: torch's backward
    # also counts the zero it starts from there, which include_self=False leaves out)
    e.requires_grad_(True)
    n = 70  # hits 60-69 have no edge
    out = aggregate(e, edges, n, how)
    index, both = torch.cat([edges[1], edges[0]]), torch.cat([e, e])
    ref = torch.cat([scatter(both, index, 0, dim_size=n, reduce=r) for r in how.split("_")], -1)
    assert torch.equal(out, ref) and not out[60:].any()
    with torch.no_grad():  # scoring and export take plain scatters: the same values
        assert torch.equal(aggregate(e, edges, n, how), ref)
    w = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((out * w).sum(), e)
    (grad_ref,) = torch.autograd.grad((ref * w).sum(), e)
    assert torch.allclose(grad, grad_ref, atol=1e-12)


def test_interaction_aggregations_and_shapes():
    x, edges, attr, _ = _graph()
    for agg in ("sum", "max", "sum_max"):
        out = InteractionGNN(3, 6, hidden=16, iterations=2, aggregation=agg)(x, edges, attr)
        assert out.shape == (edges.shape[1],)
    with pytest.raises(ValueError, match="gnn.aggregation"):
        InteractionGNN(3, 6, aggregation="mean")


def test_precisions():
    x, edges, attr, y = _graph()
    model = InteractionGNN(3, 6, hidden=16, iterations=2)
    dev = torch.device("cpu")
    with autocast(check_precision("bf16", dev), dev):
        out = model(x, edges, attr)
    assert out.dtype == torch.bfloat16
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out.float(), y)
    loss.backward()
    assert torch.isfinite(loss)
    with pytest.raises(ConfigError, match="16-mixed: needs a CUDA device"):
        check_precision("16-mixed", dev)
    with pytest.raises(ConfigError, match="train.precision='8': must be one of auto, 32, bf16, 16-mixed"):
        check_precision("8", dev)
