"""Tests of kangnn.nn: the KAN message-passing layers, the function abstraction, aggregation."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch_geometric.loader import DataLoader

from kangnn.nn import (
    HAS_TORCH_SCATTER,
    DecomposableFunction,
    KANFunction,
    KANGatedConv,
    KANGINConv,
    KANGINEConv,
    KANMPNNConv,
    MLPFunction,
    build_function,
    get_scatter_backend,
    scatter,
    scatter_backend,
    set_range_checks,
    set_scatter_backend,
)

C, D = 8, 4  # node and edge feature widths of the small test graphs
FUNCTIONS = ("kan", "mlp")
needs_scatter = pytest.mark.skipif(not HAS_TORCH_SCATTER, reason="torch_scatter not installed")


def make_layer(name: str, function: str = "kan", dtype=torch.float32, **kw):
    """One layer of each kind with edge features where it takes them."""
    torch.manual_seed(0)
    if name == "gin":
        layer = KANGINConv(C, C, function=function, **kw)
    elif name in ("gine", "mpnn", "gated"):
        cls = {"gine": KANGINEConv, "mpnn": KANMPNNConv, "gated": KANGatedConv}[name]
        layer = cls(C, C, function=function, **({"edge_dim": D} | kw))
    else:
        raise ValueError(name)
    return layer.to(dtype)


LAYERS = ("gin", "gine", "mpnn", "gated")
EDGE_LAYERS = ("gine", "mpnn", "gated")


def graph(num_nodes: int = 7, num_edges: int = 16, dtype=torch.float32, seed: int = 0):
    """A random graph whose last node is isolated (no incoming or outgoing edges)."""
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes - 1, (2, num_edges), generator=g)
    x = torch.rand(num_nodes, C, generator=g, dtype=dtype) * 2 - 1
    edge_attr = torch.rand(num_edges, D, generator=g, dtype=dtype) * 2 - 1
    return x, edge_index, edge_attr


def call(layer, x, edge_index, edge_attr):
    return layer(x, edge_index, edge_attr if layer_takes_edges(layer) else None)


def layer_takes_edges(layer) -> bool:
    return isinstance(layer, KANGINEConv) or getattr(layer, "edge_dim", None) is not None


# --------------------------------------------------------------------------------------------
# The function abstraction


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_function_decomposition(function, num_layers):
    torch.manual_seed(0)
    f = build_function(function, 10, 5, hidden_channels=7, num_layers=num_layers)
    assert isinstance(f, KANFunction if function == "kan" else MLPFunction)
    assert (f.in_channels, f.out_channels) == (10, 5)
    assert len(f.layers) == num_layers
    a, b, c = torch.randn(6, 3), torch.randn(6, 4), torch.randn(6, 3)
    full = f(torch.cat([a, b, c], -1))
    parts = f.partial(a, 0, bias=True) + f.partial(b, 3) + f.partial(c, 7)
    torch.testing.assert_close(f.rest(parts), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_function_partials(function):
    """``partials`` stacks ``partial`` at several offsets, the bias at the first only."""
    torch.manual_seed(0)
    f = build_function(function, 10, 5, num_layers=2)
    a = torch.randn(6, 4)
    want = torch.stack([f.partial(a, 0, bias=True), f.partial(a, 4)], dim=1)
    torch.testing.assert_close(f.partials(a, [0, 4]), want, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="columns 7:11 are outside"):
        f.partials(a, [0, 7])


def test_decomposable_function_protocol():
    """Both function kinds (and what the layers build) are ``DecomposableFunction``s; a module
    that lacks one of the methods is not."""

    class NoPartials(torch.nn.Module):
        def forward(self, x):
            return x

        def partial(self, x_part, start, bias=False):
            return x_part

        def rest(self, y):
            return y

    for function in FUNCTIONS:
        assert isinstance(build_function(function, 6, 3), DecomposableFunction)
        assert isinstance(make_layer("mpnn", function).message_fn, DecomposableFunction)
    assert not isinstance(torch.nn.Linear(6, 3), DecomposableFunction)
    assert not isinstance(NoPartials(), DecomposableFunction)


def test_gather_sum_stacked():
    from kangnn.nn.sparse import gather_sum, gather_sum_stacked

    h = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    i, j = torch.tensor([0, 4, 4, 1]), torch.tensor([2, 2, 0, 1])
    torch.testing.assert_close(gather_sum_stacked(h, i, j), h[i, 0] + h[j, 1])
    torch.testing.assert_close(gather_sum(h[:, 0], i, h[:, 1], j), h[i, 0] + h[j, 1])
    assert torch.autograd.gradcheck(lambda t: gather_sum_stacked(t, i, j), (h,))
    empty = torch.tensor([], dtype=torch.long)
    assert gather_sum_stacked(h, empty, empty).shape == (0, 3)


def test_function_options():
    assert build_function("kan", 4, 3, hidden_channels=[5, 6]).widths == [4, 5, 6, 3]
    assert build_function("mlp", 4, 3, num_layers=1).widths == [4, 3]
    kan = build_function("kan", 4, 3, basis="rbf", grid_size=4)
    assert kan.layers[0].num_functions == 5
    with pytest.raises(ValueError, match="valid: kan, mlp"):
        build_function("transformer", 4, 3)
    with pytest.raises(ValueError, match="grid_size only apply to function='kan'"):
        build_function("mlp", 4, 3, grid_size=5)
    with pytest.raises(ValueError, match="columns"):
        build_function("mlp", 4, 3).partial(torch.randn(2, 3), 2)


# --------------------------------------------------------------------------------------------
# Interface


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_interface(name, function):
    layer = make_layer(name, function)
    x, edge_index, edge_attr = graph()
    out = call(layer, x, edge_index, edge_attr)
    assert out.shape == (x.size(0), C)
    out.square().sum().backward()
    assert all(p.grad is not None for p in layer.parameters() if p.requires_grad)
    assert (layer.in_channels, layer.out_channels, layer.function) == (C, C, function)
    assert function in repr(layer)
    reg = layer.regularization_loss()
    assert reg.item() > 0 if function == "kan" else reg.item() == 0
    before = [p.detach().clone() for p in layer.parameters()]
    layer.reset_parameters()
    assert any(not torch.equal(a, b) for a, b in zip(before, layer.parameters(), strict=True))


def test_mlp_same_interface():
    """The MLP baseline is the same layer: same arguments, same submodule names."""
    for name in LAYERS:
        kan, mlp = make_layer(name, "kan"), make_layer(name, "mlp")
        assert {n for n, _ in kan.named_children()} == {n for n, _ in mlp.named_children()}


@pytest.mark.parametrize("name", LAYERS)
def test_permutation_equivariance(name):
    layer = make_layer(name, aggr="sum")
    x, edge_index, edge_attr = graph(num_nodes=9, num_edges=24)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(9)
    eperm = torch.randperm(24, generator=torch.Generator().manual_seed(2))
    out = call(layer, x, edge_index, edge_attr)
    out_p = call(layer, x[perm], inv[edge_index][:, eperm], edge_attr[eperm])
    torch.testing.assert_close(out_p, out[perm], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["mpnn", "gated"])
@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("aggr", ["sum", "mean", "max", "min", ["sum", "max"]])
@pytest.mark.parametrize("edges", [True, False])
def test_decomposed_equals_naive(name, function, aggr, edges):
    """Outputs agree to 1e-5 in float32; gradients are compared in float64."""
    kw = {} if edges else {"edge_dim": None}
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-10)):
        torch.manual_seed(0)
        cls = KANMPNNConv if name == "mpnn" else KANGatedConv
        fast = cls(C, C, function=function, aggr=aggr, **({"edge_dim": D} | kw)).to(dtype)
        naive = copy.deepcopy(fast)
        naive.decompose = False
        x, edge_index, edge_attr = graph(dtype=dtype)
        ea = edge_attr if edges else None
        xs = [x.clone().requires_grad_(True) for _ in range(2)]
        outs = [m(xi, edge_index, ea) for m, xi in ((fast, xs[0]), (naive, xs[1]))]
        torch.testing.assert_close(outs[0], outs[1], atol=tol, rtol=tol)
        if dtype == torch.float32:
            continue
        for o in outs:
            o.square().sum().backward()
        torch.testing.assert_close(xs[0].grad, xs[1].grad, atol=tol, rtol=tol)
        for p, q in zip(fast.parameters(), naive.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, atol=tol, rtol=tol)


@pytest.mark.parametrize("name", ["mpnn", "gated"])
def test_decomposed_equals_naive_after_grid_update(name):
    """Grids fitted to directed edges differ between the target and source columns: the node
    parts then take one expansion each instead of a shared one, with the same result."""
    layer = make_layer(name, dtype=torch.float64)
    x, edge_index, edge_attr = graph(dtype=torch.float64)
    first = layer.message_fn.layers[0]
    spans = [slice(0, C), slice(C, 2 * C)]
    assert first._same_grids(spans)
    layer.update_grid(3 * x, edge_index, edge_attr)
    assert not first._same_grids(spans)
    naive = copy.deepcopy(layer)
    naive.decompose = False
    torch.testing.assert_close(
        layer(x, edge_index, edge_attr), naive(x, edge_index, edge_attr), atol=1e-10, rtol=1e-10
    )


@pytest.mark.parametrize("name", LAYERS)
def test_aggregated_messages(name):
    """The message half of forward, against the formula evaluated edge by edge."""
    layer = make_layer(name, dtype=torch.float64)
    x, edge_index, edge_attr = graph(dtype=torch.float64)
    j, i = edge_index
    if name == "gin":
        msg = x[j]
    elif name == "gine":
        msg = (x[j] + layer.lin(edge_attr)).relu()
    else:
        z = layer.message_fn(torch.cat([x[i], x[j], edge_attr], dim=-1))
        msg = z if name == "mpnn" else z[:, C:].sigmoid() * z[:, :C]
    want = torch.zeros(x.size(0), msg.size(1), dtype=x.dtype).index_add_(0, i, msg)
    got = layer.aggregated_messages(x, edge_index, edge_attr if name != "gin" else None)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_multi_aggregation_widths():
    layer = KANMPNNConv(C, C, D, message_channels=5, aggr=["sum", "mean", "max"])
    assert layer.update_fn.in_channels == C + 3 * 5
    x, edge_index, edge_attr = graph()
    assert layer(x, edge_index, edge_attr).shape == (7, C)
    gated = KANGatedConv(C, C, D, aggr=["sum", "max"])
    assert gated.lin_aggr is not None and gated(x, edge_index, edge_attr).shape == (7, C)
    with pytest.raises(ValueError, match="keep the width"):
        KANGINConv(C, C, aggr=["sum", "max"])


def test_bipartite_and_flow():
    torch.manual_seed(0)
    layer = KANMPNNConv((C, 5), 6, D)
    xs, xt = torch.randn(4, C), torch.randn(3, 5)
    edge_index = torch.tensor([[0, 1, 2, 3, 3], [0, 0, 1, 2, 1]])
    assert layer((xs, xt), edge_index, torch.randn(5, D)).shape == (3, 6)
    gin = make_layer("gin")
    rev = KANGINConv(C, C, flow="target_to_source")
    rev.load_state_dict(gin.state_dict())
    x, edge_index, _ = graph()
    torch.testing.assert_close(rev(x, edge_index.flip(0)), gin(x, edge_index))


# --------------------------------------------------------------------------------------------
# Aggregation backends


@needs_scatter
@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "min"])
def test_scatter_backends_agree(reduce):
    g = torch.Generator().manual_seed(0)
    index = torch.randint(0, 6, (40,), generator=g)  # targets 6..8 are isolated
    index_sorted = index.sort().values
    ptr = torch.ops.aten._convert_indices_from_coo_to_csr(index_sorted, 9)
    results = []
    for backend in ("torch", "torch_scatter"):
        for idx, p in ((index, None), (index_sorted, ptr)):
            src = torch.rand(40, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            src.requires_grad_(True)
            with scatter_backend(backend):
                out = scatter(src, idx, 9, reduce, ptr=p)
            out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
            results.append((p is not None, out.detach(), src.grad))
    for sorted_, out, grad in results:
        ref = results[1] if sorted_ else results[0]
        torch.testing.assert_close(out, ref[1])
        torch.testing.assert_close(grad, ref[2])
        assert torch.all(out[6:] == 0)


@needs_scatter
@pytest.mark.parametrize("aggr", ["sum", "mean", "max", "min"])
def test_layer_scatter_backends_agree(aggr):
    layer = make_layer("mpnn", aggr=aggr)
    x, edge_index, edge_attr = graph()
    results = []
    for backend in ("torch", "torch_scatter"):
        layer.zero_grad()
        xi = x.clone().requires_grad_(True)
        with scatter_backend(backend):
            out = layer(xi, edge_index, edge_attr)
        out.square().sum().backward()
        results.append((out.detach(), xi.grad, [p.grad.clone() for p in layer.parameters()]))
    (o1, g1, p1), (o2, g2, p2) = results
    torch.testing.assert_close(o1, o2)
    torch.testing.assert_close(g1, g2)
    for a, b in zip(p1, p2, strict=True):
        torch.testing.assert_close(a, b)


def test_scatter_backend_switch():
    before = get_scatter_backend()
    with scatter_backend("torch"):
        assert get_scatter_backend() == "torch"
    assert get_scatter_backend() == before
    with pytest.raises(ValueError, match="valid: auto, torch_scatter, torch"):
        set_scatter_backend("cuda")
    with pytest.raises(ValueError, match="unknown reduction"):
        scatter(torch.randn(3, 2), torch.zeros(3, dtype=torch.long), 2, "mul")


# --------------------------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_gradcheck(name, function):
    aggr = "mean" if name in ("mpnn", "gated") else "sum"
    layer = make_layer(name, function, dtype=torch.float64, aggr=aggr)
    x, edge_index, edge_attr = graph(num_nodes=5, num_edges=8, dtype=torch.float64)
    x.requires_grad_(True)
    edge_attr.requires_grad_(True)
    if layer_takes_edges(layer):
        inputs = (x, edge_attr)
    else:
        inputs = (x,)
    fn = lambda *a: call(layer, a[0], edge_index, a[-1])  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)


# --------------------------------------------------------------------------------------------
# Sparse adjacency inputs


def to_sparse(edge_index, num_nodes, values=None, layout=torch.sparse_csr):
    """The transposed adjacency ``[target, source]`` as a torch.sparse matrix."""
    n = edge_index.size(1)
    vals = torch.ones(n) if values is None else values
    size = (num_nodes, num_nodes) + tuple(vals.shape[1:])
    adj = torch.sparse_coo_tensor(edge_index.flip(0), vals, size).coalesce()
    return adj if layout == torch.sparse_coo else adj.to_sparse_csr()


def sorted_by_target(edge_index, edge_attr):
    order = (edge_index[1] * 1000 + edge_index[0]).argsort()
    return edge_index[:, order], edge_attr[order]


@pytest.mark.parametrize(
    "name,kw,fused",
    [
        ("gin", {}, True),
        ("gin", {"aggr": "mean"}, True),
        ("gin", {"aggr": "max"}, False),
        ("mpnn", {"message_layers": 1}, True),
        ("mpnn", {"message_layers": 1, "aggr": "mean"}, True),
        ("mpnn", {"message_layers": 1, "edge_dim": None}, True),
        ("mpnn", {}, False),
        ("gated", {}, False),
    ],
)
@pytest.mark.parametrize("layout", [torch.sparse_csr, torch.sparse_coo])
def test_sparse_adjacency(name, kw, fused, layout):
    layer = make_layer(name, **kw)
    assert layer.fuse == fused
    calls = []
    layer.register_message_and_aggregate_forward_hook(lambda *a: calls.append(1))
    x, edge_index, edge_attr = graph()
    # Distinct edges, in the sparse matrix's (target-major) order.
    key = torch.unique(edge_index[1] * 100 + edge_index[0])
    edge_index = torch.stack([key % 100, key // 100])
    edge_attr = torch.rand(edge_index.size(1), D)
    edge_index, edge_attr = sorted_by_target(edge_index, edge_attr)
    takes = layer_takes_edges(layer)
    ref = call(layer, x, edge_index, edge_attr)
    values = edge_attr if takes else None
    adj = to_sparse(edge_index, x.size(0), values, layout=torch.sparse_coo if takes else layout)
    xi = x.clone().requires_grad_(True)
    out = layer(xi, adj)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert torch.isfinite(xi.grad).all()
    assert bool(calls) == fused
    if takes:  # explicit edge_attr with a weight-free adjacency
        adj = to_sparse(edge_index, x.size(0), layout=layout)
        torch.testing.assert_close(layer(x, adj, edge_attr), ref, atol=1e-5, rtol=1e-5)


def test_fused_path_follows_decompose():
    layer = make_layer("mpnn", message_layers=1)
    assert layer.fuse
    layer.decompose = False
    assert not layer.fuse
    x, edge_index, _ = graph()
    edge_attr = torch.rand(edge_index.size(1), D)
    adj = to_sparse(edge_index, 7, edge_attr, layout=torch.sparse_coo)  # sums duplicate edges
    naive = layer(x, adj)
    layer.decompose = True
    torch.testing.assert_close(layer(x, adj), naive, atol=1e-5, rtol=1e-5)


def test_edge_index_subclass():
    from torch_geometric import EdgeIndex

    layer = make_layer("mpnn")
    x, edge_index, edge_attr = graph()
    ei = EdgeIndex(edge_index, sparse_size=(7, 7))
    torch.testing.assert_close(layer(x, ei, edge_attr), layer(x, edge_index, edge_attr))


# --------------------------------------------------------------------------------------------
# Errors and edge cases


@pytest.mark.parametrize("name", LAYERS)
def test_bad_inputs(name):
    layer = make_layer(name)
    x, edge_index, edge_attr = graph()
    ea = edge_attr if layer_takes_edges(layer) else None
    with pytest.raises(ValueError, match="x has 5 features but the layer was built with in_chan"):
        layer(x[:, :5], edge_index, ea)
    for row, value in ((0, 7), (1, 7), (0, -1)):
        bad = edge_index.clone()
        bad[row, 3] = value
        with pytest.raises(ValueError, match="edge_index is out of range"):
            layer(x, bad, ea)
    set_range_checks(False)  # no ValueError then (and no guarantee either)
    try:
        layer(x, bad, ea)
    except ValueError:
        pytest.fail("range check not switched off")
    except (IndexError, RuntimeError):
        pass
    finally:
        set_range_checks(True)
    with pytest.raises(ValueError, match="edge_index must be an integer tensor"):
        layer(x, edge_index.float(), ea)
    with pytest.raises(ValueError, match=r"edge_index must have shape \[2, num_edges\]"):
        layer(x, edge_index[:1], ea)
    with pytest.raises(ValueError, match="embed categorical atom features"):
        layer(x.long(), edge_index, ea)
    if layer_takes_edges(layer):
        with pytest.raises(ValueError, match="edge_attr is missing"):
            layer(x, edge_index)
        with pytest.raises(ValueError, match="edge_attr must have shape"):
            layer(x, edge_index, edge_attr[:, :2])
        with pytest.raises(ValueError, match="edge_attr has 3 rows"):
            layer(x, edge_index, edge_attr[:3])
        with pytest.raises(ValueError, match="embed categorical bond features"):
            layer(x, edge_index, edge_attr.long())
    else:
        with pytest.raises(ValueError, match="built without edge_dim"):
            layer(x, edge_index, edge_attr)
    no_edges = KANMPNNConv(C, C)
    with pytest.raises(ValueError, match="built without edge_dim"):
        no_edges(x, edge_index, edge_attr)


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("num_nodes", [0, 1, 5])
def test_no_edges_single_node_empty(name, num_nodes):
    layer = make_layer(name)
    x = torch.randn(num_nodes, C, requires_grad=True)
    edge_index = torch.empty(2, 0, dtype=torch.long)
    edge_attr = torch.empty(0, D)
    for backend in ("torch",) + (("torch_scatter",) if HAS_TORCH_SCATTER else ()):
        with scatter_backend(backend):
            out = call(layer, x, edge_index, edge_attr)
            assert out.shape == (num_nodes, C) and torch.isfinite(out).all()
            if num_nodes > 0:  # KANLinear returns a constant for zero rows
                out.sum().backward()
    if layer_takes_edges(layer):  # no edges: edge_attr may be left out
        assert layer(x, edge_index).shape == (num_nodes, C)
    if num_nodes == 1:  # a self-loop on a single node
        loop = torch.zeros(2, 1, dtype=torch.long)
        assert call(layer, x, loop, torch.randn(1, D)).shape == (1, C)


# --------------------------------------------------------------------------------------------
# Real molecules in PyG batches


SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "[Na+].[Cl-]", "C", "OC(=O)C1CC1"]


class MolNet(torch.nn.Module):
    """Embedding encoders, two layers, sum pooling: the shape of the integrator's model."""

    def __init__(self, name: str, function: str, hidden: int = 16):
        super().__init__()
        from kangnn.data import feature_dims

        atom_dims, bond_dims = feature_dims()
        self.atom = torch.nn.ModuleList(torch.nn.Embedding(d, hidden) for d in atom_dims)
        self.bond = torch.nn.ModuleList(torch.nn.Embedding(d, hidden) for d in bond_dims)
        cls = {"gine": KANGINEConv, "mpnn": KANMPNNConv, "gated": KANGatedConv}[name]
        self.convs = torch.nn.ModuleList(
            cls(hidden, hidden, hidden, function=function) for _ in range(2)
        )
        self.head = torch.nn.Linear(hidden, 1)

    def forward(self, data):
        from torch_geometric.nn import global_add_pool

        x = sum(emb(data.x[:, i]) for i, emb in enumerate(self.atom))
        e = sum(emb(data.edge_attr[:, i]) for i, emb in enumerate(self.bond))
        for conv in self.convs:
            x = torch.tanh(conv(x, data.edge_index, e))
        return self.head(global_add_pool(x, data.batch, size=data.num_graphs))


@pytest.mark.parametrize("name", ["gine", "mpnn", "gated"])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_batched_molecules(name, function):
    pytest.importorskip("rdkit")
    from kangnn.data import smiles_to_graph

    graphs = [smiles_to_graph(s) for s in SMILES]
    torch.manual_seed(0)
    model = MolNet(name, function)
    batch = next(iter(DataLoader(graphs, batch_size=len(graphs))))
    out = model(batch)
    assert out.shape == (len(SMILES), 1)
    singles = torch.cat([model(next(iter(DataLoader([g], batch_size=1)))) for g in graphs])
    torch.testing.assert_close(out, singles, atol=1e-4, rtol=1e-4)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_inside_pyg_sequential():
    from torch_geometric.nn import Sequential

    torch.manual_seed(0)
    model = Sequential(
        "x, edge_index, edge_attr",
        [
            (KANGINEConv(C, C, edge_dim=D), "x, edge_index, edge_attr -> x"),
            torch.nn.Tanh(),
            (KANGatedConv(C, C, D), "x, edge_index, edge_attr -> x"),
        ],
    )
    x, edge_index, edge_attr = graph()
    assert model(x, edge_index, edge_attr).shape == (7, C)


# --------------------------------------------------------------------------------------------
# Benchmark smoke test (figures are never asserted)


def test_conv_bench_smoke(tmp_path):
    from kangnn.bench import conv

    out = tmp_path / "conv.json"
    payload = conv.run([
        "--quick", "--nodes", "300", "--degree", "3", "6", "--batch-size", "4", "--hidden", "8",
        "--edge-dim", "4", "--repeats", "1", "--large-repeats", "1", "--warmup", "0",
        "--device", "cpu", "--out", str(out),
    ])  # fmt: skip
    saved = json.loads(out.read_text())
    assert saved["ratios"] == payload["ratios"]
    for key in ("machine", "threads", "config", "results", "ratios", "targets", "notes"):
        assert key in saved
    settings = {r["setting"] for r in saved["results"]}
    assert "synthetic" in settings
    assert {(r["layer"], r["variant"]) for r in saved["results"]} == {
        (layer, v) for layer in ("mpnn", "gated") for v in ("kan", "kan-naive", "mlp")
    }
    assert {r["degree"] for r in saved["ratios"] if r["setting"] == "synthetic"} == {3.0, 6.0}
    for row in saved["ratios"]:
        for key in ("message_speedup", "decompose_speedup", "time_vs_mlp", "memory_vs_mlp"):
            assert math.isfinite(row[key]) and row[key] > 0
        # Decomposing removes per-edge work only: the bound exceeds 1 and grows with the degree.
        assert row["message_bound"] > 1 and row["decompose_bound"] > 1
    for row in saved["results"]:
        assert row["max_abs_diff_vs_kan"] < 1e-4
    # Without edge features and with a one-layer message the message work is all per node: the
    # multiply-add bound of the message is then the average degree.
    payload = conv.run([
        "--nodes", "200", "--degree", "4", "--csv", str(tmp_path / "none.csv"), "--hidden", "8",
        "--edge-dim", "0", "--message-layers", "1", "--repeats", "1", "--large-repeats", "1",
        "--device", "cpu", "--out", str(out),
    ])  # fmt: skip
    assert payload["notes"] and {r["setting"] for r in payload["results"]} == {"synthetic"}
    for row in payload["ratios"]:
        assert row["message_bound"] == pytest.approx(4.0)
    widths = {r["layer"]: r["widths"] for r in payload["results"] if r["variant"] == "kan"}
    assert widths == {"mpnn": "16-8", "gated": "16-16"}


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_update_grid(name, function):
    layer = make_layer(name, function)
    x, edge_index, edge_attr = graph()
    x = 3 * x  # outside the initial grid [-1, 1]
    ea = edge_attr if layer_takes_edges(layer) else None
    before = call(layer, x, edge_index, edge_attr)
    layer.update_grid(x, edge_index, ea)
    after = call(layer, x, edge_index, edge_attr)
    assert torch.isfinite(after).all()
    if function == "mlp":
        torch.testing.assert_close(after, before)
    else:
        lo = [m.basis.lo for m in layer.modules() if hasattr(m, "basis")]
        assert any((v != -1).any() for v in lo)
