"""Tests of kangnn.kan: the KAN layer against an independent oracle, gradients, grids, scale."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from kangnn import KAN, KANLinear
from kangnn.kan import BASES, Basis, set_fused, set_saved_expansion_limit
from kangnn.kan.reference import RecursiveKANLinear, bspline_recursive, knots_of


def cox_de_boor(x: float, knots: list[float], i: int, k: int) -> float:
    """The textbook recursion, one scalar at a time: the oracle for the closed form."""
    if k == 0:
        return 1.0 if knots[i] <= x < knots[i + 1] else 0.0
    left = (x - knots[i]) / (knots[i + k] - knots[i]) * cox_de_boor(x, knots, i, k - 1)
    right = (
        (knots[i + k + 1] - x)
        / (knots[i + k + 1] - knots[i + 1])
        * cox_de_boor(x, knots, i + 1, k - 1)
    )
    return left + right


def oracle_points(grid_size: int, order: int) -> torch.Tensor:
    """Points on every knot, between knots, and outside the grid on both sides."""
    h = 2.0 / grid_size
    knots = [-1.0 + (i - order) * h for i in range(grid_size + 2 * order + 1)]
    between = [(a + b) / 2 for a, b in zip(knots[:-1], knots[1:], strict=True)]
    thirds = [a + (b - a) / 3 for a, b in zip(knots[:-1], knots[1:], strict=True)]
    outside = [knots[0] - 0.3, knots[0] - 5.0, knots[-1] + 0.2, knots[-1] + 7.0, -1e6, 1e6]
    return torch.tensor(knots + between + thirds + outside, dtype=torch.float64)


def params_gradcheck(layer: torch.nn.Module, x: torch.Tensor) -> bool:
    names = [n for n, _ in layer.named_parameters()]
    values = [p.detach().clone().requires_grad_(True) for _, p in layer.named_parameters()]

    def f(x, *params):
        return functional_call(layer, dict(zip(names, params, strict=True)), (x,))

    return torch.autograd.gradcheck(f, (x, *values), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("grid_size", [1, 3, 5])
def test_bspline_matches_cox_de_boor(order, grid_size):
    layer = KANLinear(1, 1, grid_size=grid_size, spline_order=order).double()
    x = oracle_points(grid_size, order)
    fast = layer.basis.expand(x[:, None])[:, 0]
    knots = knots_of(layer.basis)[0].tolist()
    expected = torch.tensor(
        [[cox_de_boor(v, knots, i, order) for i in range(grid_size + order)] for v in x.tolist()],
        dtype=torch.float64,
    )
    assert fast.shape == expected.shape
    torch.testing.assert_close(fast, expected, atol=1e-6, rtol=0)
    # The vectorised recursion used by the benchmark agrees too.
    vec = bspline_recursive(x[:, None], knots_of(layer.basis), order)[:, 0]
    torch.testing.assert_close(vec, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_layer_matches_recursive_layer(order):
    torch.manual_seed(order)
    layer = KANLinear(5, 3, grid_size=4, spline_order=order).double()
    ref = RecursiveKANLinear.from_layer(layer)
    x = torch.randn(257, 5, dtype=torch.float64) * 1.7
    torch.testing.assert_close(layer(x), ref(x), atol=1e-10, rtol=0)
    # Gradients of the fast backward agree with autograd through the recursion.
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    w = torch.randn(257, 3, dtype=torch.float64)
    (layer(x1) * w).sum().backward()
    (ref(x2) * w).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-9, rtol=0)
    torch.testing.assert_close(layer.spline_weight.grad, ref.spline_weight.grad)
    torch.testing.assert_close(layer.base_weight.grad, ref.base_weight.grad)


def test_large_batch_uses_row_blocks_and_agrees():
    # More rows than one CPU block: the blocked path must give the one-shot result.
    torch.manual_seed(0)
    layer = KANLinear(64, 8).double()
    ref = RecursiveKANLinear.from_layer(layer)
    x = torch.randn(20000, 64, dtype=torch.float64)
    torch.testing.assert_close(layer(x), ref(x), atol=1e-10, rtol=0)


@pytest.fixture
def eager_and_fused():
    """Run a layer on the eager path and on the fused kernels; restores the setting."""
    from kangnn.kan import fused

    def run(fn, use_fused):
        set_fused(use_fused)
        try:
            return fn()
        finally:
            set_fused(True)

    yield run
    fused._state["failed"] = None


@pytest.fixture(params=["native", "compiled"])
def kernels(request, monkeypatch):
    """Which fused CPU kernels serve: the native ones or torch.compile's; the name of the
    function that runs them, to spy on."""
    from kangnn.kan import fused, native

    if request.param == "native":
        if not native.native_enabled(torch.zeros(1), 1):
            pytest.skip(f"native kernels not built here: {native._state['failed']}")
        return native, "spline_features", "add_spline_input_grad"
    monkeypatch.setitem(native._state, "enabled", False)
    return fused, "_run", "_run"


@pytest.mark.parametrize("order,grid_size", [(1, 3), (2, 1), (3, 5), (4, 4)])
@pytest.mark.parametrize("act", ["silu", "tanh"])
def test_fused_kernels_equal_eager_path(
    order, grid_size, act, kernels, eager_and_fused, monkeypatch
):
    from kangnn.kan import fused

    calls = []

    def spy(module, name):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a: calls.append(name) or real(*a))

    module, features_fn, grad_fn = kernels
    for name in {features_fn, grad_fn}:
        spy(module, name)
    for name in ("features", "input_grad"):
        spy(fused, name)
    torch.manual_seed(order)
    layer = KANLinear(5, 3, grid_size=grid_size, spline_order=order, base_activation=act)
    # Inside, on the knots of, at the edges of and far outside the grid; float32 and float64.
    knots = layer.basis.lo[0] + layer.basis.h[0] * torch.arange(-order, grid_size + order + 1)
    x = torch.cat([torch.randn(300, 5) * 1.5, knots.repeat(5, 1).T, torch.full((2, 5), 1e9)])
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-5)):
        layer = layer.to(dtype)
        xs = x.to(dtype)
        w = torch.randn(len(x), 3, dtype=dtype)

        def outputs(layer=layer, xs=xs, w=w):
            xr = xs.clone().requires_grad_(True)
            y = layer(xr)
            grads = torch.autograd.grad((y * w).sum(), [xr, layer.base_weight, layer.spline_weight])
            return [y, *grads]

        eager = eager_and_fused(outputs, False)
        assert not calls
        # The forward's expansion kept for the backward (small batch), or rebuilt there.
        for limit, builds in ((8 << 20, 1), (0, 2)):
            set_saved_expansion_limit(limit)
            try:
                fast = eager_and_fused(outputs, True)
            finally:
                set_saved_expansion_limit(8 << 20)
            # Every kernel call reached the chosen implementation.
            assert calls.count("features") == builds and calls.count("input_grad") == 1
            if features_fn == grad_fn:
                assert calls.count(features_fn) == builds + 1
            else:
                assert calls.count(features_fn) == builds and calls.count(grad_fn) == 1
            calls.clear()
            if order == 1 and dtype == torch.float32:
                # On a knot a hat function has a kink, and float rounding decides which side's
                # slope an input gets (the kernels round x / h + shift differently).
                eager[1], fast[1] = eager[1][:300], fast[1][:300]
            for a, b in zip(eager, fast, strict=True):
                tol_a = tol * max(1.0, a.abs().max().item())
                torch.testing.assert_close(b, a, atol=tol_a, rtol=0)


@pytest.mark.parametrize("order", [2, 3, 5, 7])
def test_native_kernels_equal_compiled_ones_on_threads(order, monkeypatch):
    """The native kernels, on one thread and on two (row blocks of an OpenMP loop), give the
    compiled kernels' features and input gradients for every compiled-in order."""
    from kangnn.kan import fused, native

    if not native.native_enabled(torch.zeros(1), order):
        pytest.skip(f"native kernels not built here: {native._state['failed']}")
    torch.manual_seed(order)
    num, P = 6 + order, 24
    shift = torch.rand(P, dtype=torch.float64) + order
    inv_h = torch.rand(P, dtype=torch.float64) + 2.0
    x = torch.randn(1000, P, dtype=torch.float64) * 2
    g = torch.randn(1000, (num + 1) * P, dtype=torch.float64)
    got = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            got.append([fused.features(x, shift, inv_h, num, order, "gelu"),
                        fused.input_grad(x, g, shift, inv_h, num, order, "gelu")])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setitem(native._state, "enabled", False)
    want = [fused.features(x, shift, inv_h, num, order, "gelu"),
            fused.input_grad(x, g, shift, inv_h, num, order, "gelu")]  # fmt: skip
    for one in got:
        for a, b in zip(one, want, strict=True):
            torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-11)
    assert torch.equal(got[0][0], got[1][0]) and torch.equal(got[0][1], got[1][1])


def test_fused_kernels_fall_back_when_they_cannot_compile(eager_and_fused, monkeypatch):
    from kangnn.kan import fused, native

    monkeypatch.setitem(native._state, "enabled", False)
    torch.manual_seed(0)
    layer = KANLinear(4, 2)
    x = torch.randn(50, 4)
    want = eager_and_fused(lambda: layer(x), False)

    def broken(*args):
        raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(fused, "_compiled", lambda *a: broken)
    with pytest.warns(RuntimeWarning, match=r"could not be compiled \(RuntimeError: no C\+\+ "
                      r"compiler found\); using the eager path"):  # fmt: skip
        got = layer(x)
    torch.testing.assert_close(got, want)
    assert not fused.fused_enabled(x)  # one warning, then the eager path without retrying


def test_native_kernels_fall_back_when_they_cannot_build(monkeypatch, tmp_path):
    """A failed build warns once, naming the error, and the compiled kernels serve instead."""
    from kangnn.kan import native

    torch.manual_seed(0)
    layer = KANLinear(4, 2)
    x = torch.randn(50, 4)
    monkeypatch.setitem(native._state, "enabled", False)
    want = layer(x)
    monkeypatch.setitem(native._state, "enabled", True)
    monkeypatch.setenv("KANGNN_CACHE", str(tmp_path))  # nothing cached there: a fresh build
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    native._library.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match=r"native B-spline kernels could not be built "
                          r"\(RuntimeError: no C\+\+ compiler found \(set \$CXX\)\)"):  # fmt: skip
            got = layer(x)
        assert not native.native_enabled(x, 3) and native._state["failed"]
        torch.testing.assert_close(got, want)
    finally:
        native._state["failed"] = None
        native._library.cache_clear()


@pytest.mark.parametrize("basis", list(BASES))
@pytest.mark.parametrize("act", ["silu", "identity", "gelu"])
def test_gradcheck_every_basis(basis, act):
    torch.manual_seed(0)
    layer = KANLinear(3, 2, basis=basis, grid_size=4, base_activation=act).double()
    # Inside, at the edges of and well outside the grid.
    x = torch.cat([torch.rand(12, 3) * 2 - 1, torch.randn(12, 3) * 2]).double()
    assert params_gradcheck(layer, x.requires_grad_(True))


@pytest.mark.parametrize("basis", list(BASES))
def test_float32_matches_float64_and_leading_dims(basis):
    torch.manual_seed(0)
    layer = KANLinear(6, 4, basis=basis)
    x = torch.randn(2, 3, 5, 6)
    out = layer(x)
    assert out.shape == (2, 3, 5, 4) and out.dtype == torch.float32
    torch.testing.assert_close(out, layer(x.reshape(-1, 6)).reshape(2, 3, 5, 4))
    out64 = layer.double()(x.double())
    torch.testing.assert_close(out.double(), out64, atol=1e-5, rtol=1e-5)


def test_outside_the_grid_base_branch_carries_and_nothing_blows_up():
    torch.manual_seed(0)
    layer = KANLinear(3, 2, grid_size=5, spline_order=3).double()
    # Beyond k grid steps past grid_range every B-spline is zero: only the base branch is left.
    far = torch.tensor([[2.3, -2.3, 40.0], [1e8, -1e8, 3.0], [1e30, -1e30, -1e30]]).double()
    base_only = torch.nn.functional.silu(far) @ layer.base_weight.T
    torch.testing.assert_close(layer(far), base_only)
    # The largest float32 values: the spline part is exactly zero, the output stays finite.
    x = torch.tensor([[3.4e38, -3.4e38, 0.0]] * 70)
    assert torch.isfinite(KANLinear(3, 2)(x)).all()
    assert torch.isfinite(KANLinear(3, 2, base_activation="tanh")(x)).all()
    # The spline part fades continuously to zero at the outer knot.
    edge = 1.0 + 3 * 0.4
    near = layer.basis.expand(torch.tensor([[edge - 1e-9] * 3], dtype=torch.float64))
    assert near.abs().max() < 1e-12


def test_partial_sums_to_forward():
    torch.manual_seed(0)
    layer = KANLinear(10, 4)
    x = torch.randn(50, 10)
    parts = layer.partial(x[:, :3], 0) + layer.partial(x[:, 3:7], 3) + layer.partial(x[:, 7:], 7)
    torch.testing.assert_close(parts, layer(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="outside the layer's 10 inputs"):
        layer.partial(x[:, :4], 8)


@pytest.mark.parametrize("basis", ["bspline", "rbf"])
def test_partials_share_one_expansion_and_equal_partial(basis):
    torch.manual_seed(0)
    layer = KANLinear(10, 4, basis=basis).double()
    x = torch.randn(40, 3, dtype=torch.float64, requires_grad=True)
    starts = [0, 3, 7]

    def both():
        shared = layer.partials(x, starts)
        separate = torch.stack([layer.partial(x, s) for s in starts], dim=-2)
        return shared, separate

    # Same grids: one expansion. Grids fitted apart: one per block. Same values either way.
    for same in (True, False):
        if not same:
            layer.basis.set_grid(layer.basis.lo - 0.3 * torch.arange(10.0).double(), layer.basis.hi)
        assert layer._same_grids([slice(s, s + 3) for s in starts]) is same
        shared, separate = both()
        assert shared.shape == (40, 3, 4)
        torch.testing.assert_close(shared, separate, atol=1e-12, rtol=1e-12)
        grads = [
            torch.autograd.grad(out.sin().sum(), [x, layer.base_weight, layer.spline_weight])
            for out in both()
        ]
        for g, h in zip(*grads, strict=True):
            torch.testing.assert_close(g, h, atol=1e-12, rtol=1e-12)
    assert torch.autograd.gradcheck(lambda t: layer.partials(t, [0, 7]), (x[:5].detach()
                                    .requires_grad_(True),), fast_mode=True)  # fmt: skip
    with pytest.raises(ValueError, match="columns 8:11 are outside the layer's 10 inputs"):
        layer.partials(x, [0, 8])


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="unknown basis 'spline'; valid: bspline"):
        KANLinear(2, 2, basis="spline")
    with pytest.raises(ValueError, match="spline_order must be >= 1"):
        KANLinear(2, 2, spline_order=0)
    with pytest.raises(ValueError, match="grid_range must satisfy a < b"):
        KANLinear(2, 2, grid_range=(1.0, -1.0))
    with pytest.raises(ValueError, match="unknown base_activation"):
        KANLinear(2, 2, base_activation="swish")
    with pytest.raises(ValueError, match="expects 2 input features, got 3"):
        KANLinear(2, 2)(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="at least two widths"):
        KAN([4])


def test_empty_batch():
    layer = KANLinear(3, 2)
    x = torch.zeros(0, 3, requires_grad=True)
    out = layer(x)
    assert out.shape == (0, 2)
    out.sum().backward()


@pytest.mark.parametrize("order", [2, 3])
def test_update_grid_keeps_the_function(order):
    torch.manual_seed(0)
    layer = KANLinear(3, 2, grid_size=6, spline_order=order).double()
    x = torch.rand(2000, 3, dtype=torch.float64) * 0.8 - 0.6  # narrower than the grid
    before = layer(x)
    layer.update_grid(x)
    assert layer.basis.lo.min() > -0.65 and layer.basis.hi.max() < 0.25
    err = (layer(x) - before).abs().max().item()
    assert err < 0.05 * before.abs().max().item(), err


def test_update_grid_rank_deficient_data_stays_finite():
    layer = KANLinear(3, 2).double()
    x = torch.zeros(100, 3, dtype=torch.float64)
    x[:, 1] = 0.5  # constant inputs: no spread at all
    before = layer(x)
    layer.update_grid(x)
    assert torch.isfinite(layer.spline_weight).all()
    # The ridge towards the current coefficients costs a little exactness (about 1e-4).
    torch.testing.assert_close(layer(x), before, atol=5e-4, rtol=0)
    assert layer.spline_weight.abs().max() < 10 * layer.spline_weight.new_tensor(1.0)
    with pytest.raises(ValueError, match="at least one sample"):
        layer.update_grid(torch.zeros(0, 3))


@pytest.mark.parametrize("order", [1, 2, 3])
def test_extend_grid_keeps_the_function(order):
    torch.manual_seed(0)
    layer = KANLinear(2, 3, grid_size=4, spline_order=order).double()
    x = torch.linspace(-1, 1, 301, dtype=torch.float64)[:, None].repeat(1, 2)
    before = layer(x)
    layer.extend_grid(8)  # a multiple: the refined knots hold the same spline exactly
    assert layer.basis.grid_size == 8 and layer.spline_weight.shape == (3, 2, 8 + order)
    torch.testing.assert_close(layer(x), before, atol=1e-6, rtol=0)
    layer.extend_grid(11)  # not a multiple: a close least-squares fit (relative to its scale)
    assert (layer(x) - before).abs().max() < 0.3 * before.std()


def test_deep_stack_stays_well_scaled():
    torch.manual_seed(0)
    model = KAN([64] * 9)
    with torch.no_grad():
        out = model(torch.randn(4096, 64))
    assert 0.3 < out.std().item() < 3.0


def test_regularization_loss_from_weights():
    layer = KANLinear(4, 3)
    with torch.no_grad():
        layer.spline_weight.zero_()
        layer.spline_weight[0, 0] = 1.0  # one active edge: L1 = 1, entropy 0
    torch.testing.assert_close(layer.regularization_loss(), torch.tensor(1.0))
    with torch.no_grad():
        layer.spline_weight.fill_(0.5)  # 12 equal edges: L1 = 6, entropy log 12
    reg = layer.regularization_loss(regularize_activation=1.0, regularize_entropy=1.0)
    torch.testing.assert_close(reg, torch.tensor(6.0 + math.log(12)))
    reg.backward()
    assert layer.spline_weight.grad is not None
    model = KAN([4, 3, 2])
    torch.testing.assert_close(
        model.regularization_loss(), sum(m.regularization_loss() for m in model.layers)
    )


def test_edge_functions_are_the_layer():
    torch.manual_seed(0)
    layer = KANLinear(3, 2).double()
    grid = torch.linspace(-1.5, 1.5, 7, dtype=torch.float64)
    phi = layer.edge_functions(grid)  # [7, out, in]
    x = torch.tensor([[grid[2], grid[5], grid[0]]], dtype=torch.float64)
    expected = phi[2, :, 0] + phi[5, :, 1] + phi[0, :, 2]
    torch.testing.assert_close(layer(x)[0], expected)


def test_a_new_basis_is_one_short_class():
    class Hat(Basis):
        """Triangular bumps on the grid points: autograd supplies the derivative."""

        def __init__(self, in_features, grid_size=4, grid_range=(-1.0, 1.0)):
            super().__init__(in_features, grid_size, grid_range)
            self.num_functions = grid_size + 1

        def expand(self, x, cols=slice(None)):
            z = (x - self.lo[cols]) / self.h[cols]
            return torch.relu(1 - (z.unsqueeze(-1) - torch.arange(self.num_functions)).abs())

    layer = KANLinear(2, 2).double()
    layer.basis = Hat(2).double()
    layer.spline_weight = torch.nn.Parameter(torch.randn(2, 2, 5, dtype=torch.float64))
    x = (torch.rand(9, 2, dtype=torch.float64) * 1.8 - 0.9).requires_grad_(True)
    assert params_gradcheck(layer, x)


def test_learns_sin():
    torch.manual_seed(0)
    layer = KANLinear(1, 1, grid_size=10)
    x = torch.linspace(-1, 1, 512).unsqueeze(1)
    y = torch.sin(math.pi * x)
    opt = torch.optim.LBFGS(layer.parameters(), lr=1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(layer(x), y)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    mse = torch.nn.functional.mse_loss(layer(x), y).item()
    assert mse < 1e-4, mse


def test_torch_compile_matches_eager():
    torch.manual_seed(0)
    model = KAN([4, 8, 2])
    x = torch.randn(32, 4, requires_grad=True)
    ref = model(x)
    ref.sum().backward()
    grad = x.grad.clone()
    x.grad = None
    out = torch.compile(model)(x)
    out.sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(x.grad, grad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("basis", list(BASES))
def test_cuda_matches_cpu(basis):
    torch.manual_seed(0)
    layer = KANLinear(16, 8, basis=basis).double()
    x = torch.randn(3000, 16, dtype=torch.float64, requires_grad=True)
    layer(x).square().sum().backward()
    cpu_grads = [x.grad.clone(), layer.spline_weight.grad.clone()]
    layer_cuda = layer.cuda()
    xc = x.detach().cuda().requires_grad_(True)
    layer_cuda.spline_weight.grad = None
    out = layer_cuda(xc)
    out.square().sum().backward()
    torch.testing.assert_close(out.cpu(), layer.cpu()(x.detach()))
    torch.testing.assert_close(xc.grad.cpu(), cpu_grads[0])
    torch.testing.assert_close(layer_cuda.spline_weight.grad.cpu(), cpu_grads[1])
