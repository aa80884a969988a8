"""torch.compile, mixed precision and double backward of the KAN layers and models."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call
from torch_geometric.loader import DataLoader

from kangnn.data import feature_dims, smiles_to_graph
from kangnn.kan import BASES, KANLinear, set_fused
from kangnn.models import CONV_REGISTRY, MoleculeGNN

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "C", "ClC(Cl)(Cl)Cl", "[Na+].[Cl-]"]
ATOM_DIMS, BOND_DIMS = feature_dims("ogb")
SMALL = dict(hidden_channels=16, num_layers=2, grid_size=3, function_layers=2)
# Compiling is the slow part of these tests: the equality checks use one layer.
TINY = dict(SMALL, hidden_channels=8, num_layers=1)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def molecules(device: str = "cpu"):
    graphs = []
    for i, s in enumerate(SMILES):
        g = smiles_to_graph(s)
        g.y = torch.tensor([[float(i)]])
        graphs.append(g)
    return next(iter(DataLoader(graphs, batch_size=len(graphs)))).to(device)


def outputs_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(batch)
    (out.square().sum()).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return out.detach(), {k.removeprefix("_orig_mod."): g for k, g in grads.items()}


@pytest.mark.parametrize("conv", sorted(CONV_REGISTRY))
@pytest.mark.parametrize("function", ["kan", "mlp"])
def test_molecule_gnn_compiles_with_zero_graph_breaks(conv, function):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = MoleculeGNN(ATOM_DIMS, BOND_DIMS, 1, conv=conv, function=function, **SMALL)
    explained = torch._dynamo.explain(model)(molecules())
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


@pytest.mark.parametrize("conv", sorted(CONV_REGISTRY))
def test_compiled_model_equals_eager(conv):
    """The traced graph (plain-op KAN path, checkpointed) against the eager autograd function;
    ``aot_eager`` runs dynamo and AOTAutograd without code generation, to keep this fast."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = MoleculeGNN(ATOM_DIMS, BOND_DIMS, 1, conv=conv, function="kan", **TINY).double()
    batch = molecules()
    model.train()
    eager_out, eager_grads = outputs_and_grads(model, batch)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True, dynamic=True)
    out, grads = outputs_and_grads(compiled, batch)
    torch.testing.assert_close(out, eager_out, atol=1e-10, rtol=1e-10)
    assert grads.keys() == eager_grads.keys()
    for k in grads:
        torch.testing.assert_close(grads[k], eager_grads[k], atol=1e-9, rtol=1e-9, msg=k)


def test_inductor_compiled_model_equals_eager():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = MoleculeGNN(ATOM_DIMS, BOND_DIMS, 1, conv="gine", function="kan", **TINY)
    batch = molecules()
    eager_out, eager_grads = outputs_and_grads(model, batch)
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    out, grads = outputs_and_grads(compiled, batch)
    torch.testing.assert_close(out, eager_out, atol=1e-4, rtol=1e-4)
    for k in grads:
        torch.testing.assert_close(grads[k], eager_grads[k], atol=1e-4, rtol=1e-3, msg=k)


@pytest.mark.parametrize("basis", list(BASES))
def test_compiled_layer_equals_eager_for_every_basis(basis):
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = KANLinear(5, 3, basis=basis, grid_size=4).double()
    x = (1.5 * torch.randn(40, 5, dtype=torch.float64)).requires_grad_(True)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    results = []
    for fn in (layer, compiled):
        y = fn(x)
        grads = torch.autograd.grad(y.sin().sum(), [x, *layer.parameters()])
        results.append([y, *grads])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("basis", list(BASES))
@pytest.mark.parametrize("fused", [True, False])
def test_double_backward_is_exact(basis, fused):
    """gradgradcheck w.r.t. the input and both weights, float64: force models and gradient
    penalties get true second derivatives, never a silent wrong answer."""
    torch.manual_seed(0)
    layer = KANLinear(3, 2, basis=basis, grid_size=3).double()
    params = dict(layer.named_parameters())
    x = (0.8 * torch.randn(6, 3, dtype=torch.float64)).requires_grad_(True)
    names = list(params)

    def f(x, *weights):
        return functional_call(layer, dict(zip(names, weights, strict=True)), (x,))

    inputs = (x, *(p.detach().clone().requires_grad_(True) for p in params.values()))
    set_fused(fused)
    try:
        assert torch.autograd.gradgradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)
    finally:
        set_fused(True)


def test_gradient_penalty_matches_plain_autograd():
    """A gradient penalty (d/dw of |dy/dx|^2) equals the one through the recursion-free plain
    ops, which autograd differentiates twice on its own."""
    from kangnn.kan.linear import _plain_product

    torch.manual_seed(0)
    layer = KANLinear(4, 2).double()
    x = torch.randn(20, 4, dtype=torch.float64, requires_grad=True)

    def penalty(forward):
        (gx,) = torch.autograd.grad(forward(x).sum(), x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), layer.spline_weight)[0]

    plain = penalty(
        lambda v: _plain_product(v, layer._weight(slice(None)), layer.basis, slice(None), "silu")
    )
    torch.testing.assert_close(penalty(layer), plain, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("basis", ["bspline", "rbf"])
def test_bf16_autocast_is_finite_and_close_to_float32(basis):
    torch.manual_seed(0)
    layer = KANLinear(32, 16, basis=basis)
    x = torch.randn(256, 32, requires_grad=True)
    ref = layer(x)
    (gref,) = torch.autograd.grad(ref.square().sum(), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    (g,) = torch.autograd.grad(y.float().square().sum(), x)
    assert torch.isfinite(y).all() and torch.isfinite(g).all()
    assert g.dtype == torch.float32 and layer.spline_weight.dtype == torch.float32
    scale = ref.abs().max().item()
    assert (y.float() - ref).abs().max().item() < 0.03 * scale
    assert (g - gref).abs().max().item() < 0.05 * gref.abs().max().item()


def test_bf16_autocast_molecule_gnn():
    torch.manual_seed(0)
    model = MoleculeGNN(ATOM_DIMS, BOND_DIMS, 1, conv="gine", function="kan", **SMALL)
    batch = molecules()
    model.eval()
    with torch.no_grad():
        ref = model(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(batch)
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().max().item() < 0.05 * max(1.0, ref.abs().max().item())


@cuda
@pytest.mark.parametrize("order", [1, 3])
def test_fused_kernels_on_cuda_equal_eager(order):
    torch.manual_seed(0)
    layer = KANLinear(8, 4, spline_order=order).cuda()
    x = (1.5 * torch.randn(500, 8, device="cuda")).requires_grad_(True)
    results = []
    for fused in (False, True):
        set_fused(fused)
        try:
            y = layer(x)
            results.append([y, *torch.autograd.grad(y.sin().sum(), [x, *layer.parameters()])])
        finally:
            set_fused(True)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


@cuda
def test_compiled_model_on_cuda_bf16():
    torch.manual_seed(0)
    model = MoleculeGNN(ATOM_DIMS, BOND_DIMS, 1, conv="gine", function="kan", **SMALL).cuda()
    batch = molecules("cuda")
    compiled = torch.compile(model, dynamic=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = compiled(batch)
    out.float().square().sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
