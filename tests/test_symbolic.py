"""Importance, pruning and symbolic formulas of KANs: oracles, round trips, planted functions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import sympy
import torch
from sympy.core.function import AppliedUndef

from kangnn.kan import (
    KAN,
    LIBRARY,
    KANLinear,
    auto_symbolic,
    fit_function,
    importance,
    prune,
    sparsity_loss,
)


def r2(pred, target) -> float:
    p = np.asarray(pred, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    return float(1.0 - ((p - t) ** 2).sum() / ((t - t.mean()) ** 2).sum())


def objective(kan, x, y, sparsity=0.0):
    """The mean squared error plus ``sparsity * sparsity_loss`` on the first 500 rows."""
    loss = torch.nn.functional.mse_loss(kan(x), y)
    return loss + sparsity * sparsity_loss(kan, x[:500]) if sparsity else loss


def fit(kan, x, y, steps, lr, sparsity=0.0, grid_updates=(), cosine=False):
    """Adam on the mean squared error (plus ``sparsity * sparsity_loss`` on 500 rows), updating
    the grids to the data at the steps ``grid_updates`` (a new optimizer each time), the way a
    user trains a KAN for pruning and formulas."""
    opt = torch.optim.Adam(kan.parameters(), lr=lr)
    for step in range(steps):
        if step in grid_updates:
            kan.update_grid(x)
            opt = torch.optim.Adam(kan.parameters(), lr=lr)
        if cosine:
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        opt.zero_grad()
        objective(kan, x, y, sparsity).backward()
        opt.step()
    return kan


def held_out(n_inputs: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.rand(2000, n_inputs, generator=g) * 2 - 1


# --- importance -----------------------------------------------------------------------------


def test_importance_matches_an_independent_oracle():
    torch.manual_seed(0)
    kan = KAN([3, 4, 2]).double()
    x = torch.rand(500, 3, dtype=torch.float64) * 2 - 1
    imp = importance(kan, x)
    # Oracle through forward() only: a layer is a sum over its inputs, so replacing input p by
    # a constant shifts edge p -> q by a constant and leaves the std of phi_qp(x_p).
    with torch.no_grad():
        h = [x, kan.layers[0](x)]
        scale, node = [], []
        for layer, inp in zip(kan.layers, h, strict=True):
            cols = []
            for p in range(inp.shape[1]):
                fixed = inp.clone()
                fixed[:, p] = 0.3
                cols.append((layer(inp) - layer(fixed)).std(0, unbiased=False))
            scale.append(torch.stack(cols, 1))
            node.append(layer(inp).std(0, unbiased=False))
    for got, want in zip(imp.edge_scale, scale, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)
    # pykan's recursion by hand: outputs score 1, edges share their node's spread.
    e1 = scale[1] / node[1][:, None]
    s1 = e1.sum(0)
    e0 = scale[0] * (s1 / node[0])[:, None]
    torch.testing.assert_close(imp.edge_scores[1].double(), e1, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(imp.hidden[0].double(), s1, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(imp.inputs.double(), e0.sum(0), rtol=1e-3, atol=1e-6)
    assert imp.node_scores[-1].tolist() == [1.0, 1.0]
    mean_abs = importance(kan, x, method="mean_abs")
    assert mean_abs.method == "mean_abs" and mean_abs.inputs.shape == (3,)


def planted_dead_kan() -> tuple[KAN, torch.Tensor]:
    """KAN([3, 4, 1]) whose input 2 and hidden unit 3 only add constants on [-1, 1]."""
    torch.manual_seed(1)
    kan = KAN([3, 4, 1]).double()
    with torch.no_grad():
        first, second = kan.layers
        # B-splines sum to one inside the grid: equal coefficients make a constant edge.
        first.base_weight[:, 2] = 0
        first.spline_weight[:, 2, :] = torch.tensor([0.5, -0.2, 0.3, 0.7])[:, None]
        second.base_weight[:, 3] = 0
        second.spline_weight[:, 3, :] = 0.4
        # Hidden unit 3 stays inside its grid (as unit 3's outputs on x do not matter).
        second.basis.set_grid(torch.full((4,), -20.0), torch.full((4,), 20.0))
    x = torch.rand(800, 3, dtype=torch.float64) * 1.8 - 0.9
    return kan, x


def test_prune_drops_constant_input_and_unit_and_keeps_the_function():
    kan, x = planted_dead_kan()
    imp = importance(kan, x)
    assert float(imp.inputs[2]) < 1e-6 and float(imp.hidden[0][3]) < 1e-6
    assert float(imp.inputs[:2].min()) > 0.05
    small = prune(kan, x, threshold=1e-2)
    assert small.active_inputs == [0, 1]
    assert small.active_units == [[0, 1], [0, 1, 2], [0]]
    assert small.widths == [2, 3, 1] and small.layers[0].in_features == 2
    assert small.max_deviation < 1e-8
    # The same function on fresh points too: the constants were folded, not dropped.
    xt = torch.rand(300, 3, dtype=torch.float64) * 1.8 - 0.9
    with torch.no_grad():
        torch.testing.assert_close(small(xt[:, [0, 1]]), kan(xt), atol=1e-8, rtol=0)
    # Threshold 0 keeps everything, exactly.
    same = prune(kan, x, threshold=0.0)
    assert same.widths == [3, 4, 1] and same.max_deviation == 0.0


def test_sparsity_loss_is_pykans_regulariser():
    torch.manual_seed(4)
    kan = KAN([3, 2, 1]).double()
    x = torch.rand(200, 3, dtype=torch.float64) * 2 - 1
    loss = sparsity_loss(kan, x, l1=1.0, entropy=2.0)
    expected = 0.0
    with torch.no_grad():
        h = x
        for layer in kan.layers:
            # The edges through the layer's own partial() of one column, where sparsity_loss
            # expands the basis itself.
            s = torch.stack(
                [layer.partial(h[:, p : p + 1], p).abs().mean(0) for p in range(h.shape[1])], 1
            )
            ent = 0.0
            for dim in (1, 0):
                q = s / (s.sum(dim, keepdim=True) + 1)
                ent -= (q * torch.log2(q + 1e-4)).sum(dim).mean()
            expected += s.sum() + 2.0 * ent
            h = layer(h)
    assert float(loss) == pytest.approx(float(expected), rel=1e-9)
    loss.backward()
    for layer in kan.layers:
        assert layer.base_weight.grad.abs().sum() > 0 and layer.spline_weight.grad.abs().sum() > 0


def test_bad_arguments_are_clear():
    kan = KAN([3, 2])
    with pytest.raises(ValueError, match=r"shape \[N, 3\]"):
        importance(kan, torch.rand(10, 4))
    with pytest.raises(ValueError, match="at least 2 samples"):
        importance(kan, torch.rand(1, 3))
    with pytest.raises(ValueError, match="NaN"):
        importance(kan, torch.full((5, 3), float("nan")))
    with pytest.raises(ValueError, match="unknown importance method 'l2'"):
        importance(kan, torch.rand(10, 3), method="l2")
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        prune(kan, torch.rand(10, 3), threshold=-1)
    with pytest.raises(TypeError, match="expected a KAN"):
        importance(torch.nn.Linear(3, 2), torch.rand(10, 3))
    with pytest.raises(ValueError, match="unknown library function"):
        auto_symbolic(kan, torch.rand(10, 3), library=["sin", "cosh"])
    with pytest.raises(ValueError, match="expected 3 symbol names"):
        auto_symbolic(kan, torch.rand(10, 3), symbols=["a"])
    with pytest.raises(ValueError, match="same N"):
        fit_function(np.zeros(5), np.zeros(4))


# --- per-edge fits --------------------------------------------------------------------------

PLANTED = {
    "x": (lambda x: 2 * x + 1, {"x"}),
    "x^2": (lambda x: 1.5 * (x - 0.2) ** 2 - 1, {"x^2"}),
    "x^3": (lambda x: (x + 0.1) ** 3, {"x^3"}),
    "x^4": (lambda x: 0.5 * (x - 0.1) ** 4 + 0.2, {"x^4"}),
    "1/x": (lambda x: 1 / (x + 1.5), {"1/x"}),
    "sqrt": (lambda x: np.sqrt(x + 1.5), {"sqrt"}),
    "exp": (lambda x: np.exp(1.5 * x), {"exp"}),
    "log": (lambda x: np.log(x + 1.5), {"log"}),
    "sin": (lambda x: 2 * np.sin(3 * x + 0.5) - 1, {"sin"}),
    # sigmoid(u) = (1 + tanh(u / 2)) / 2: the two are the same family.
    "tanh": (lambda x: np.tanh(4 * x - 1), {"tanh", "sigmoid"}),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-(5 * x + 1))), {"tanh", "sigmoid"}),
    "abs": (lambda x: np.abs(x - 0.3), {"abs"}),
    "gaussian": (lambda x: np.exp(-((2 * x - 0.5) ** 2)), {"gaussian"}),
}


def test_the_default_library_is_the_issues():
    assert set(LIBRARY) == {"0", *PLANTED}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_fit_function_recovers_each_library_function(name):
    f, names = PLANTED[name]
    x = np.linspace(-1, 1, 300)
    y = f(x)
    got = fit_function(x, y)
    assert got.name in names, (got.name, got.r2)
    assert got.r2 > 0.99999 and got.kind == ("linear" if name == "x" else "symbolic")
    # The parameters reproduce the data through the sympy expression.
    t = sympy.Symbol("t")
    values = sympy.lambdify(t, got.expr(t), "numpy")(x)
    np.testing.assert_allclose(values, y, atol=2e-3 * np.abs(y).max())


def test_fits_stay_inside_their_domain_and_constants_are_zero():
    x = np.linspace(-1, 1, 200)
    for lib in (["1/x"], ["log"], ["sqrt"]):
        got = fit_function(x, x**2, library=lib)
        t = sympy.Symbol("t")
        fine = np.linspace(-1, 1, 1001)
        values = sympy.lambdify(t, got.fitted_expr(t), "numpy")(fine)
        assert np.isfinite(values).all(), (lib, got)
        np.testing.assert_allclose(got.fitted_values(fine), values)
    const = fit_function(x, np.full_like(x, 2.5))
    assert const.kind == "zero" and const.name == "0" and const.d == pytest.approx(2.5)
    noisy = fit_function(x, np.random.default_rng(0).normal(size=200))
    assert noisy.kind == "spline" and noisy.r2 < 0.99


# --- composed formulas ----------------------------------------------------------------------


def test_spline_edges_compose_to_exactly_the_model():
    torch.manual_seed(2)
    kan = KAN([2, 3, 1]).double()
    x = torch.rand(400, 2, dtype=torch.float64) * 2 - 1
    res = auto_symbolic(kan, x, r2_threshold=1.0, zero_threshold=0.0)
    assert not res.is_closed_form
    assert len(res.spline_edges) == 9
    assert {str(f.func) for f in res.formula.atoms(AppliedUndef)} == {
        e.function_name for e in res.spline_edges
    }
    with torch.no_grad():
        expected = kan(x).numpy()
    # Both the layer-by-layer evaluation and the lambdified sympy formula are the model.
    np.testing.assert_allclose(res.evaluate(x), expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(res.evaluate(x, via_sympy=True), expected, rtol=1e-9, atol=1e-9)
    summary = res.summary()
    assert [s["spline"] for s in summary] == [6, 3]
    json.dumps(res.to_dict())


def test_single_layer_and_multiple_outputs():
    torch.manual_seed(3)
    layer = KANLinear(2, 2).double()
    x = torch.rand(300, 2, dtype=torch.float64) * 2 - 1
    res = auto_symbolic(layer, x, r2_threshold=1.0, zero_threshold=0.0)
    assert isinstance(res.formula, sympy.Matrix) and res.formula.shape == (2, 1)
    with torch.no_grad():
        np.testing.assert_allclose(res.evaluate(x), layer(x).numpy(), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match=r"shape \[N, 2\]"):
        res.evaluate(np.zeros((3, 5)))


# --- planted functions ----------------------------------------------------------------------


def test_sin_plus_square_with_kan_2_1():
    torch.manual_seed(0)
    x = torch.rand(3000, 2) * 2 - 1
    y = (torch.sin(math.pi * x[:, 0]) + x[:, 1] ** 2)[:, None]
    kan = fit(KAN([2, 1]), x, y, steps=400, lr=0.1, cosine=True)
    res = auto_symbolic(kan, x)
    assert res.is_closed_form
    fits = {e.i: e for e in res.edges[0]}
    assert fits[0].name == "sin" and abs(abs(fits[0].b) - math.pi) < 0.01
    assert fits[1].name == "x^2"
    assert "sin(3.14*x_1" in res.formula_str(3)  # rounded inside functions too
    xt = held_out(2)
    yt = torch.sin(math.pi * xt[:, 0]) + xt[:, 1] ** 2
    assert r2(res.evaluate(xt), yt) > 0.99
    # Round trip: the sympy formula, lambdified and re-parsed from its string, is the model.
    x1, x2 = res.symbols
    f = sympy.lambdify((x1, x2), res.formula, "numpy")
    with torch.no_grad():
        model = kan(xt).numpy()[:, 0]
    a, b = xt.double().numpy().T
    assert r2(f(a, b), model) > 0.999
    np.testing.assert_allclose(res.evaluate(xt), res.evaluate(xt, via_sympy=True), rtol=1e-9)
    parsed = sympy.sympify(str(res.formula), locals={"x_1": x1, "x_2": x2})
    g = sympy.lambdify((x1, x2), parsed, "numpy")
    np.testing.assert_allclose(g(a, b), res.evaluate(xt)[:, 0], rtol=1e-12, atol=1e-12)


def test_exp_of_sin_plus_square_with_kan_2_5_1(monkeypatch):
    """pykan's example: sparsity-regularised training, pruning to one hidden unit, a short
    retraining of the pruned KAN, then the formula."""
    from kangnn.kan import fused

    # Where the sparsity training ends up is sensitive to rounding: the native kernels are built
    # with -march=native, so on another CPU they round differently and the same seed may end
    # with two units in use (seen on an AMD EPYC). The eager path recovers it there too.
    # Even so, which local optimum one start reaches differs between CPUs (an Intel Xeon ends
    # seed 0 with two units sharing the work); three starts, kept by the objective they were
    # trained on (a two-unit optimum scores clearly worse: 0.82 vs 0.54-0.64), as a user would.
    monkeypatch.setitem(fused._state, "enabled", False)
    torch.manual_seed(0)
    x = torch.rand(3000, 2) * 2 - 1
    y = torch.exp(torch.sin(math.pi * x[:, 0]) + x[:, 1] ** 2)[:, None]

    def trained(seed: int) -> tuple[float, KAN]:
        torch.manual_seed(seed)
        kan = fit(KAN([2, 5, 1]), x, y, steps=300, lr=0.03, sparsity=0.1, grid_updates=(50, 100))
        with torch.no_grad():
            return float(objective(kan, x, y, sparsity=0.1)), kan

    _, kan = min((trained(seed) for seed in range(3)), key=lambda t: t[0])
    small = prune(kan, x, threshold=0.05)
    assert small.widths == [2, 1, 1] and small.active_inputs == [0, 1]
    fit(small, x, y, steps=400, lr=0.05, grid_updates=(0,), cosine=True)
    res = auto_symbolic(small, x)
    assert res.is_closed_form
    assert sorted(e.name for e in res.edges[0]) == ["sin", "x^2"]
    # exp comes back; a sigmoid deep in its left tail is the same curve on a range (and the
    # richer family), so a less precisely trained outer edge may pick it.
    assert res.edges[1][0].name in ("exp", "sigmoid")
    xt = held_out(2)
    yt = torch.exp(torch.sin(math.pi * xt[:, 0]) + xt[:, 1] ** 2)
    assert r2(res.evaluate(xt), yt) > 0.99


def test_product_with_kan_2_2_1():
    """x1 x2 = ((x1 + x2)^2 - (x1 - x2)^2) / 4: two hidden units, even functions after them.
    Their fits reach R² 0.98 only (``r2_threshold=0.95`` accepts them); the joint refit of
    the formula's constants makes the composition accurate."""
    torch.manual_seed(0)
    x = torch.rand(3000, 2) * 2 - 1
    y = (x[:, 0] * x[:, 1])[:, None]
    kan = fit(KAN([2, 2, 1]), x, y, steps=400, lr=0.05, grid_updates=(30, 60), cosine=True)
    res = auto_symbolic(kan, x, r2_threshold=0.95)
    assert res.refitted and res.fit_r2 > 0.99
    assert res.is_closed_form
    xt = held_out(2)
    assert r2(res.evaluate(xt), xt[:, 0] * xt[:, 1]) > 0.99


def test_prune_drops_the_unused_input_of_a_trained_kan():
    torch.manual_seed(0)
    x = torch.rand(3000, 3) * 2 - 1
    y = (torch.sin(math.pi * x[:, 0]) + x[:, 1])[:, None]
    kan = fit(
        KAN([3, 4, 1]), x, y, 400, lr=0.05, sparsity=0.01, grid_updates=(50, 100), cosine=True
    )
    imp = importance(kan, x)
    assert float(imp.inputs[2]) < 0.01 < float(imp.inputs[:2].min())
    small = prune(kan, x)
    assert small.active_inputs == [0, 1] and small.layers[0].in_features == 2
    xt = held_out(3)
    with torch.no_grad():
        dev = (small(xt[:, small.active_inputs]) - kan(xt)).abs().max()
    assert small.max_deviation < 0.05 and float(dev) < 0.05
    res = auto_symbolic(small, x[:, small.active_inputs])
    assert res.symbols == tuple(sympy.Symbol(s, real=True) for s in ("x_1", "x_2"))
    yt = torch.sin(math.pi * xt[:, 0]) + xt[:, 1]
    assert r2(res.evaluate(xt[:, small.active_inputs]), yt) > 0.99


# --- KANs with a LayerNorm between their layers (model.kan_layer_norm) -----------------------


def _normed_kan(seed: int = 3):
    from kangnn.nn import KANFunction

    torch.manual_seed(seed)
    kan = KANFunction([4, 5, 2], layer_norm=True).double()
    with torch.no_grad():  # a norm that is not the identity
        kan.norms[0].weight.uniform_(0.5, 1.5)
        kan.norms[0].bias.uniform_(-0.3, 0.3)
        kan.layers[0].base_weight[:, 3] = 0.0  # input 3 unused
        kan.layers[0].spline_weight[:, 3] = 0.0
    return kan


def test_layer_inputs_importance_and_prune_see_the_layer_norm():
    from kangnn.kan.prune import layer_inputs

    kan = _normed_kan()
    x = torch.rand(500, 4, dtype=torch.float64) * 2 - 1
    acts = layer_inputs(kan, x)
    with torch.no_grad():
        y0 = kan.layers[0](x)
        np.testing.assert_allclose(acts[1], kan.norms[0](y0), atol=1e-12)
        np.testing.assert_allclose(acts[-1], kan(x), atol=1e-12)
    imp = importance(kan, x)
    np.testing.assert_allclose(imp.node_scale[0], y0.std(0, unbiased=False), rtol=1e-5)
    pruned = prune(kan, x, threshold=1e-2)
    assert pruned.active_inputs == [0, 1, 2] and pruned.widths == [3, 5, 2]  # units kept
    assert pruned.layer_norm and pruned.max_deviation < 1e-9
    with torch.no_grad():
        np.testing.assert_allclose(pruned(x[:, :3]), kan(x), atol=1e-9)


def test_formula_of_a_kan_with_layer_norm_is_the_model():
    kan = _normed_kan()
    x = torch.rand(400, 4, dtype=torch.float64) * 2 - 1
    res = auto_symbolic(kan, x, r2_threshold=1.0, zero_threshold=0.0)  # every edge a spline
    with torch.no_grad():
        expected = kan(x).numpy()
    np.testing.assert_allclose(res.evaluate(x), expected, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(res.evaluate(x, via_sympy=True), expected, rtol=1e-8, atol=1e-8)
    closed = auto_symbolic(kan, x)  # library fits where they fit: close to the model
    assert r2(closed.evaluate(x), expected) > 0.9
    np.testing.assert_allclose(closed.evaluate(x, via_sympy=True), closed.evaluate(x), atol=1e-8)
