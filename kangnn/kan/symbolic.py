r"""Symbolic formulas from a trained KAN (pykan's ``auto_symbolic``).

Every edge function :math:`\phi(x)` of a :class:`~kangnn.kan.KAN` is fitted on the data it sees by
:math:`a\,f(b x + c) + d` for each ``f`` of a library, by least squares:

1. ``x`` is standardised (``z = (x - mean) / std``); a grid over ``(b, c)`` in ``z`` units (only
   the parameters that matter for ``f``: ``exp`` needs no shift, polynomials, ``|x|``, ``1/x``,
   ``sqrt`` and ``log`` no scale beyond a sign) gives for each grid point the closed-form ``a, d``
   of a linear least-squares fit, whose R² is the squared correlation of ``f(b z + c)`` with the
   edge's values. A grid point whose argument leaves ``f``'s domain (``1/x`` within 0.05 std of
   its pole, ``sqrt`` below 0, ``log`` below 0.05 std) or gives a non-finite value at any data
   point, or within half a standard deviation beyond the data's range, is rejected: a fitted
   formula is finite over the data range and a little beyond it.
2. The ``refine`` best functions of each edge (and any other that comes within ``r2_tol`` of
   the best) are refined from their grid optimum by eight rounds of a 7 x 7 grid around the best
   point so far, a third as wide each round (``a, d`` stay closed-form; invalid points are
   rejected as before; ``|b|`` stays within the coarse grid's scales, so ``sin`` or ``exp``
   with a tiny ``b`` cannot pose as a polynomial).
3. The simplest function whose R² is within ``r2_tol`` of the best one is chosen (complexity as
   in :data:`LIBRARY`). An edge whose best R² is below ``r2_threshold`` stays a spline; an edge
   whose :func:`~kangnn.kan.importance` score is below ``zero_threshold`` (or that is constant on
   the data) becomes its mean, the function ``0``.
4. With ``refit`` the constants of all fitted edges are refitted jointly (L-BFGS in float64,
   spline edges held as they are) so that the composed formula matches the KAN's output on the
   data: per-edge errors compound through the layers otherwise. The refit is kept only if it
   lowers the error and keeps every argument inside its function's domain.

The edge formulas are then composed through the layers in sympy. When every edge is symbolic the
result is a closed form; otherwise each spline edge appears as an undefined sympy function
``phi<l>_<i>_<j>`` (layer ``l``, input ``i``, output ``j``, from 0) of its argument, and
:meth:`SymbolicResult.evaluate` evaluates those through the KAN's own layer, so the formula can
always be evaluated. Polynomial formulas are expanded, small ones passed through
``sympy.simplify`` (kept only if it agrees numerically on the data).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy
import torch
from sympy.core.function import AppliedUndef
from torch import Tensor

from kangnn.kan.linear import KAN, KANLinear
from kangnn.kan.prune import _layers, edge_values, importance, layer_inputs, layer_norms

__all__ = [
    "LIBRARY",
    "EdgeFit",
    "SymbolicFunction",
    "SymbolicResult",
    "auto_symbolic",
    "fit_function",
    "rounded",
]


@dataclass(frozen=True)
class SymbolicFunction:
    """One library function ``f`` for the edge fits ``a * f(b * x + c) + d``.

    Parameters
    ----------
    name:
        Its name in reports (``"sin"``, ``"x^2"``, ...).
    numpy:
        Vectorised numpy implementation.
    sympy:
        The same function of a sympy expression.
    complexity:
        Used to prefer the simpler of two functions that fit equally well.
    scale:
        How ``b`` is searched: ``"pos"`` (``b > 0``: ``f`` odd, even or sign-absorbed),
        ``"signed"`` (both signs), ``"unit"`` (``b = +-1``: a scale is absorbed by ``a`` or ``c``)
        or ``"one"`` (``b = 1``).
    shift:
        How ``c`` is searched: ``"center"`` (``c = -b m`` for centres ``m`` in the data's units),
        ``"phase"`` (``c`` in ``[-pi, pi)``) or ``"none"`` (``c = 0``).
    domain:
        The valid arguments (``u -> bool array``, ``u`` in standardised units), or ``None``.
    torch:
        The same function of a tensor, for the joint refit of a formula's constants (a library
        with a function without it skips that refit).
    """

    name: str
    numpy: Callable[[np.ndarray], np.ndarray]
    sympy: Callable[[Any], Any]
    complexity: int
    scale: str = "pos"
    shift: str = "center"
    domain: Callable[[np.ndarray], np.ndarray] | None = None
    torch: Callable[[Tensor], Tensor] | None = None


def _sigmoid(u: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * u))  # no overflow for large |u|


#: The default library: ``0, x, x^2, x^3, x^4, 1/x, sqrt, exp, log, sin, tanh, abs, sigmoid,
#: gaussian``.
LIBRARY: dict[str, SymbolicFunction] = {
    f.name: f
    for f in (
        SymbolicFunction(
            "0", np.zeros_like, lambda u: sympy.Integer(0), 0, "one", "none", None, torch.zeros_like
        ),
        SymbolicFunction("x", lambda u: u, lambda u: u, 1, "one", "none", None, lambda u: u),
        SymbolicFunction("x^2", np.square, lambda u: u**2, 2, "one", torch=torch.square),
        SymbolicFunction("x^3", lambda u: u**3, lambda u: u**3, 3, "one", torch=lambda u: u**3),
        SymbolicFunction("x^4", lambda u: u**4, lambda u: u**4, 3, "one", torch=lambda u: u**4),
        SymbolicFunction(
            "1/x",
            lambda u: 1.0 / u,
            lambda u: 1 / u,
            2,
            "unit",
            domain=lambda u: np.abs(u) >= 0.05,
            torch=torch.reciprocal,
        ),
        SymbolicFunction(
            "sqrt", np.sqrt, sympy.sqrt, 2, "unit", domain=lambda u: u >= 0, torch=torch.sqrt
        ),
        SymbolicFunction("exp", np.exp, sympy.exp, 2, "signed", "none", torch=torch.exp),
        SymbolicFunction(
            "log", np.log, sympy.log, 2, "unit", domain=lambda u: u >= 0.05, torch=torch.log
        ),
        SymbolicFunction("sin", np.sin, sympy.sin, 2, "pos", "phase", torch=torch.sin),
        SymbolicFunction("tanh", np.tanh, sympy.tanh, 3, torch=torch.tanh),
        SymbolicFunction("abs", np.abs, sympy.Abs, 3, "one", torch=torch.abs),
        SymbolicFunction(
            "sigmoid", _sigmoid, lambda u: 1 / (1 + sympy.exp(-u)), 3, torch=torch.sigmoid
        ),
        SymbolicFunction(
            "gaussian",
            lambda u: np.exp(-(u**2)),
            lambda u: sympy.exp(-(u**2)),
            3,
            torch=lambda u: torch.exp(-(u**2)),
        ),
    )
}

KINDS = ("zero", "linear", "symbolic", "spline")

# Grids in standardised units (z = (x - mean) / std).
_SCALES = np.geomspace(0.25, 8.0, 13)
_CENTERS = np.concatenate([[-12.0, -8.0, -6.0], np.linspace(-4.0, 4.0, 17), [6.0, 8.0, 12.0]])
_PHASES = np.linspace(-math.pi, math.pi, 16, endpoint=False)


def _grid(f: SymbolicFunction) -> tuple[np.ndarray, np.ndarray]:
    """The ``(b, c)`` grid points of ``f``, two ``[G]`` arrays."""
    b = {
        "pos": _SCALES,
        "signed": np.concatenate([-_SCALES[::-1], _SCALES]),
        "unit": np.array([-1.0, 1.0]),
        "one": np.array([1.0]),
    }[f.scale]
    if f.shift == "none":
        return b, np.zeros_like(b)
    if f.shift == "phase":
        bb, cc = np.meshgrid(b, _PHASES, indexing="ij")
        return bb.ravel(), cc.ravel()
    bb, mm = np.meshgrid(b, _CENTERS, indexing="ij")
    return bb.ravel(), (-bb * mm).ravel()


def _values(
    f: SymbolicFunction, u: np.ndarray, n: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``f(u)`` at the first ``n`` points (default all) of each row of ``u`` (``[..., N]``), and
    whether the row is valid at every point (the points after ``n`` are checked only)."""
    with np.errstate(all="ignore"):
        v = f.numpy(u)
        ok = np.isfinite(v).all(-1)
        if f.domain is not None:
            ok &= f.domain(u).all(-1)
    return (v if n is None else v[..., :n]), ok


def _with_margin(z: np.ndarray) -> np.ndarray:
    """``z`` followed by points up to ``_MARGIN`` beyond its range on each side, where a fit
    must be valid as well: held-out data a little beyond the training range stay finite."""
    lo, hi = float(z.min()), float(z.max())
    left = np.linspace(lo - _MARGIN, lo, 5)[:-1]
    right = np.linspace(hi, hi + _MARGIN, 5)[1:]
    return np.concatenate([z, left, right])


def _corr2(v: np.ndarray, ok: np.ndarray, yn: np.ndarray) -> np.ndarray:
    """Squared correlations ``[G, Q]`` of the rows of ``v`` with the unit columns ``yn``; -inf
    for invalid or constant rows."""
    vc = v - v.mean(-1, keepdims=True)
    norm = np.sqrt((vc * vc).sum(-1))
    ok = ok & (norm > 1e-12 * (1.0 + np.abs(v).max(-1, initial=0.0)))
    vc = np.where(ok[:, None], vc, 0.0) / np.where(ok, norm, 1.0)[:, None]
    r2 = np.square(vc @ yn)
    r2[~ok] = -np.inf
    return np.minimum(r2, 1.0)


def _closed_form(v: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """``a, d, R²`` of the least-squares fit ``y ~ a v + d``."""
    vc, yc = v - v.mean(), y - y.mean()
    vv, yy = float(vc @ vc), float(yc @ yc)
    if vv <= 0 or yy <= 0:
        return 0.0, float(y.mean()), 0.0
    a = float(vc @ yc) / vv
    d = float(y.mean() - a * v.mean())
    return a, d, min(1.0, float(vc @ yc) ** 2 / (vv * yy))


def _refine(
    f: SymbolicFunction, z: np.ndarray, yn: np.ndarray, b: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zoom in on grid points, one per column of ``yn`` (``[N, Q]``, centred, unit norm):
    ``_ZOOMS`` rounds of a 7 x 7 grid over the free parameters of ``(b, c)`` around the best
    point so far, a third as wide each round. Returns the best ``(b, c, R²)``, each ``[Q]``."""
    free_b = f.scale in ("pos", "signed")
    free_c = f.shift != "none"
    q = np.arange(yn.shape[1])

    n = yn.shape[0]
    zm = _with_margin(z)

    def r2_of(bb: np.ndarray, cc: np.ndarray) -> np.ndarray:  # [Q, G] -> [Q, G]
        v, ok = _values(f, bb[..., None] * zm + cc[..., None], n)
        vc = v - v.mean(-1, keepdims=True)
        norm = np.sqrt((vc * vc).sum(-1))
        ok &= norm > 1e-12 * (1.0 + np.abs(v).max(-1))
        r = np.einsum("qgn,nq->qg", np.where(ok[..., None], vc, 0.0), yn)
        r2 = np.minimum(np.square(r / np.where(ok, norm, 1.0)), 1.0)
        r2[~ok] = -np.inf
        # Within the grid's scales: a tiny b lets sin or exp mimic a polynomial with a huge a.
        if free_b:
            r2[(np.abs(bb) < _SCALES[0] / 2) | (np.abs(bb) > 2 * _SCALES[-1])] = -np.inf
        if f.scale == "pos":
            r2[bb <= 0] = -np.inf
        return r2

    b, c = b.astype(np.float64).copy(), c.astype(np.float64).copy()
    best = r2_of(b[:, None], c[:, None])[:, 0]
    if not (free_b or free_c):
        return b, c, best
    # Start from the spacing of the coarse grid around each point.
    db = np.abs(b) * (_SCALES[1] / _SCALES[0] - 1.0) if free_b else np.zeros_like(b)
    if not free_c:
        dc = np.zeros_like(b)
    elif f.shift == "phase":
        dc = np.full_like(b, _PHASES[1] - _PHASES[0])
    else:
        dc = np.abs(b) * (_CENTERS[4] - _CENTERS[3])
    sb, sc = (g.ravel() for g in np.meshgrid(*[np.linspace(-1.0, 1.0, 7)] * 2, indexing="ij"))
    for _ in range(_ZOOMS):
        bb = b[:, None] + db[:, None] * sb
        cc = c[:, None] + dc[:, None] * sc
        r2 = r2_of(bb, cc)
        k = r2.argmax(1)
        better = r2[q, k] > best
        best = np.where(better, r2[q, k], best)
        b = np.where(better, bb[q, k], b)
        c = np.where(better, cc[q, k], c)
        db, dc = db / 3, dc / 3
    return b, c, best


_ZOOMS = 8
# Half a standard deviation: see _with_margin.
_MARGIN = 0.5


@dataclass
class EdgeFit:
    """The fit of one edge ``i -> j`` of layer ``layer``: ``a * f(b * x + c) + d``.

    ``kind`` is ``"zero"`` (constant ``d``), ``"linear"`` (``f = x``), ``"symbolic"`` (another
    library function) or ``"spline"`` (no fit reached ``r2_threshold``; ``name`` and ``r2`` are
    then those of the best attempt). Parameters are in the units of the edge's input and are
    those of the formula; ``r2`` is that of the per-edge fit to the spline, whose own
    ``(a, b, c, d)`` are kept in ``per_edge`` when a joint refit of the formula changed them.
    """

    layer: int
    i: int
    j: int
    name: str
    a: float
    b: float
    c: float
    d: float
    r2: float
    kind: str
    score: float = 0.0
    per_edge: tuple[float, float, float, float] | None = None

    @property
    def function_name(self) -> str:
        """The sympy function name a spline edge has in the formula."""
        return f"phi{self.layer}_{self.i}_{self.j}"

    def expr(self, arg: Any, library: Mapping[str, SymbolicFunction] = LIBRARY) -> Any:
        """This edge in the formula, a sympy expression of ``arg``: the fit, or for a spline
        edge the undefined function :attr:`function_name`."""
        if self.kind == "spline":
            return sympy.Function(self.function_name)(arg)
        return self.fitted_expr(arg, library)

    def fitted_expr(self, arg: Any, library: Mapping[str, SymbolicFunction] = LIBRARY) -> Any:
        """The library fit ``a * f(b * arg + c) + d`` (for a spline edge: its best attempt)."""
        a, b, c, d = (sympy.Float(v) for v in (self.a, self.b, self.c, self.d))
        if self.name == "0":
            return d
        if self.name == "x":
            return a * arg + d
        return a * library[self.name].sympy(b * arg + c) + d

    def fitted_values(
        self,
        x: np.ndarray,
        library: Mapping[str, SymbolicFunction] = LIBRARY,
        per_edge: bool = False,
    ) -> np.ndarray:
        """The library fit at ``x`` (numpy; NaN where it leaves its domain); with ``per_edge``
        the edge's own fit to its spline rather than the formula's refitted constants."""
        x = np.asarray(x, dtype=np.float64)
        a, b, c, d = (
            self.per_edge if per_edge and self.per_edge else (self.a, self.b, self.c, self.d)
        )
        if self.name == "0":
            return np.full_like(x, d)
        with np.errstate(all="ignore"):
            return a * library[self.name].numpy(b * x + c) + d

    def as_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "input": self.i,
            "output": self.j,
            "kind": self.kind,
            "function": self.name,
            "a": self.a,
            "b": self.b,
            "c": self.c,
            "d": self.d,
            "r2": self.r2,
            "score": self.score,
            "per_edge": None if self.per_edge is None else list(self.per_edge),
        }


@dataclass
class SymbolicResult:
    """What :func:`auto_symbolic` found.

    Attributes
    ----------
    formulas:
        One sympy expression per output of the KAN, in :attr:`symbols`.
    symbols:
        The input symbols ``x_1 .. x_n`` (1-based; for a pruned KAN with ``active_inputs`` the
        original input numbers).
    edges:
        Per layer, the :class:`EdgeFit` of every edge (``out * in`` of them, output-major).
    refitted:
        Whether the joint refit of the constants was kept (see :func:`auto_symbolic`).
    fit_r2:
        R² of the formula against the KAN's outputs on the rows it was fitted on.
    """

    formulas: list[Any]
    symbols: tuple[Any, ...]
    edges: list[list[EdgeFit]]
    refitted: bool = False
    fit_r2: float = math.nan
    _spline_fns: dict[str, Callable[[np.ndarray], np.ndarray]] = field(
        default_factory=dict, repr=False
    )
    _fast: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)
    _lambdified: Callable[..., Any] | None = field(default=None, repr=False)

    @property
    def formula(self) -> Any:
        """The formula: one expression for a single output, else a sympy ``Matrix`` of them."""
        return self.formulas[0] if len(self.formulas) == 1 else sympy.Matrix(self.formulas)

    @property
    def spline_edges(self) -> list[EdgeFit]:
        """The edges no library function fitted well enough (named functions in the formula)."""
        return [e for layer in self.edges for e in layer if e.kind == "spline"]

    @property
    def is_closed_form(self) -> bool:
        """Whether every edge is symbolic (no ``phi`` function in the formula)."""
        return not self.spline_edges

    def summary(self) -> list[dict[str, Any]]:
        """Per layer: the number of edges of each kind and of each library function."""
        out = []
        for layer, fits in enumerate(self.edges):
            kinds = {k: sum(e.kind == k for e in fits) for k in KINDS}
            funcs: dict[str, int] = {}
            for e in fits:
                if e.kind == "symbolic":
                    funcs[e.name] = funcs.get(e.name, 0) + 1
            out.append({"layer": layer, "edges": len(fits), **kinds, "functions": funcs})
        return out

    def lambdify(self) -> Callable[..., Any]:
        """``sympy.lambdify`` of the formulas (numpy), spline edges evaluated by the KAN."""
        if self._lambdified is None:
            modules = [self._spline_fns, "numpy"]
            self._lambdified = sympy.lambdify(self.symbols, self.formulas, modules=modules)
        return self._lambdified

    def evaluate(self, x: np.ndarray | Tensor, via_sympy: bool = False) -> np.ndarray:
        """The formulas at the rows of ``x`` ``[N, n]`` (columns as :attr:`symbols`): ``[N, out]``.

        ``x`` has the KAN's input columns (for a pruned KAN: its kept inputs only). The edges
        are evaluated layer by layer in float64 (spline edges by the KAN's own layers), which
        is the formula and much faster than its lambdified sympy expression for a large KAN;
        ``via_sympy=True`` evaluates :meth:`lambdify` instead (the same values).
        """
        if isinstance(x, Tensor):
            x = x.detach().cpu().double().numpy()
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.symbols):
            raise ValueError(
                f"expected inputs of shape [N, {len(self.symbols)}], got {tuple(x.shape)}"
            )
        if self._fast is not None and not via_sympy:
            return self._fast(x)
        values = self.lambdify()(*x.T)
        return np.stack(
            [np.broadcast_to(np.asarray(v, dtype=np.float64), x.shape[:1]) for v in values], 1
        )

    def formula_str(self, digits: int = 4) -> str:
        """The formula with every number rounded to ``digits`` significant digits."""
        return str(rounded(self.formula, digits))

    def to_dict(self, digits: int = 6) -> dict[str, Any]:
        """JSON-ready: formulas as strings (``digits`` significant digits), edges, summary."""
        return {
            "symbols": [str(s) for s in self.symbols],
            "formulas": [str(rounded(f, digits)) for f in self.formulas],
            "closed_form": self.is_closed_form,
            "refitted": self.refitted,
            "fit_r2": self.fit_r2,
            "spline_edges": [e.function_name for e in self.spline_edges],
            "summary": self.summary(),
            "edges": [[e.as_dict() for e in layer] for layer in self.edges],
        }


def rounded(expr: Any, digits: int = 4) -> Any:
    """``expr`` with every float rounded to ``digits`` significant digits, also inside
    functions (where ``sympy.N`` leaves them)."""
    return expr.xreplace({f: sympy.Float(f, digits) for f in expr.atoms(sympy.Float)})


def _library(library: Sequence[str] | Mapping[str, SymbolicFunction] | None):
    if library is None:
        return dict(LIBRARY)
    if isinstance(library, Mapping):
        lib = dict(library)
    else:
        unknown = [n for n in library if n not in LIBRARY]
        if unknown:
            raise ValueError(
                f"unknown library function(s) {', '.join(map(str, unknown))}; "
                f"valid: {', '.join(LIBRARY)}"
            )
        lib = {n: LIBRARY[n] for n in library}
    lib.setdefault("0", LIBRARY["0"])
    if len(lib) < 2:
        raise ValueError("the library needs at least one function besides 0")
    return lib


def _fit_input(
    x: np.ndarray,
    Y: np.ndarray,
    lib: Mapping[str, SymbolicFunction],
    refine: int,
    r2_tol: float,
) -> list[tuple[str, float, float, float, float, float]]:
    """Fit every column of ``Y`` ``[N, Q]`` as a function of ``x`` ``[N]``:
    ``(name, a, b, c, d, R²)`` per column, parameters in ``x``'s units."""
    mu, sigma = float(x.mean()), float(x.std())
    sigma = sigma if sigma > 0 else 1.0
    z = (x - mu) / sigma
    yc = Y - Y.mean(0)
    yn = yc / np.where((ynorm := np.sqrt((yc * yc).sum(0))) > 0, ynorm, 1.0)
    names = [n for n in lib if n != "0"]
    coarse = {}  # name -> (best b [Q], best c [Q], R² [Q])
    zm = _with_margin(z)
    for n in names:
        f = lib[n]
        b, c = _grid(f)
        v, ok = _values(f, b[:, None] * zm[None] + c[:, None], z.size)
        r2 = _corr2(v, ok, yn)
        k = r2.argmax(0)
        coarse[n] = (b[k], c[k], r2[k, np.arange(Y.shape[1])])
    # Refine each column's ``refine`` best functions, one batch per function; then those that
    # came within r2_tol of the best without being refined (the choice may fall on them).
    r2 = np.stack([coarse[n][2] for n in names])  # [F, Q]
    b_all = np.stack([coarse[n][0] for n in names]).astype(np.float64)
    c_all = np.stack([coarse[n][1] for n in names]).astype(np.float64)
    done = np.zeros_like(r2, dtype=bool)
    todo = np.zeros_like(done)
    if refine > 0:
        np.put_along_axis(todo, np.argsort(-r2, axis=0)[:refine], True, axis=0)
    for rnd in range(2):
        if rnd == 1 and refine > 0:
            todo = (r2 >= r2.max(0) - r2_tol) & ~done
        for k, n in enumerate(names):
            cols = np.nonzero(todo[k] & np.isfinite(r2[k]))[0]
            if cols.size:
                b_all[k, cols], c_all[k, cols], r2[k, cols] = _refine(
                    lib[n], z, yn[:, cols], b_all[k, cols], c_all[k, cols]
                )
        done |= todo
    complexity = np.array([lib[n].complexity for n in names])
    out = []
    for q in range(Y.shape[1]):
        y = Y[:, q]
        best = r2[:, q].max()
        if not np.isfinite(best):  # nothing valid: a constant
            out.append(("x", 0.0, 1.0, 0.0, float(y.mean()), 0.0))
            continue
        # The simplest function within r2_tol of the best one (the better one on a tie).
        ok = np.nonzero(r2[:, q] >= best - r2_tol)[0]
        k = int(min(ok, key=lambda i: (complexity[i], -r2[i, q])))
        n, b, c = names[k], float(b_all[k, q]), float(c_all[k, q])
        v, _ = _values(lib[n], (b * z + c)[None])
        a, d, fit_r2 = _closed_form(v[0], y)
        # Back to the input's units: b z + c = (b / sigma) x + (c - b mu / sigma).
        bx, cx = b / sigma, c - b * mu / sigma
        if n == "x":  # a (bx x + cx) + d written as a' x + d'
            a, d, bx, cx = a * bx, a * cx + d, 1.0, 0.0
        out.append((n, a, bx, cx, d, fit_r2))
    return out


def _r2(pred: np.ndarray, target: np.ndarray) -> float:
    """Coefficient of determination over all entries (1 for an exact constant match)."""
    p, t = np.asarray(pred, np.float64).ravel(), np.asarray(target, np.float64).ravel()
    sst = float(((t - t.mean()) ** 2).sum())
    sse = float(((p - t) ** 2).sum())
    if not np.isfinite(sse):
        return -math.inf
    return 1.0 - sse / sst if sst > 0 else float(sse == 0)


def _is_constant(y: np.ndarray) -> np.ndarray:
    """Per column of ``y`` ``[N, Q]``: constant up to rounding."""
    return y.std(0) <= 1e-12 * (1.0 + np.abs(y).max(0))


def _kind(name: str, r2: float, r2_threshold: float) -> str:
    return "spline" if r2 < r2_threshold else ("linear" if name == "x" else "symbolic")


def fit_function(
    x: np.ndarray | Tensor,
    y: np.ndarray | Tensor,
    library: Sequence[str] | Mapping[str, SymbolicFunction] | None = None,
    r2_threshold: float = 0.99,
    r2_tol: float = 1e-3,
    refine: int = 3,
) -> EdgeFit:
    """Fit ``y ~ a * f(b * x + c) + d`` over a library, as :func:`auto_symbolic` fits one edge.

    Parameters
    ----------
    x, y:
        ``[N]`` samples of a univariate function (``N >= 2``).
    library, r2_threshold, r2_tol, refine:
        As for :func:`auto_symbolic`.

    Returns
    -------
    EdgeFit
        With ``layer = i = j = 0`` and no score; ``kind`` is ``"zero"`` for a constant ``y``.

    Examples
    --------
    >>> x = np.linspace(-1, 1, 200)
    >>> fit = fit_function(x, 2 * np.sin(3 * x + 0.5) - 1)
    >>> fit.name, round(fit.b, 3), round(fit.r2, 6)
    ('sin', 3.0, 1.0)
    """
    xs = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64).ravel()
    ys = np.asarray(y.detach().cpu() if isinstance(y, Tensor) else y, dtype=np.float64).ravel()
    if xs.shape != ys.shape or xs.size < 2:
        raise ValueError(f"x and y need the same N >= 2 samples, got {xs.size} and {ys.size}")
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise ValueError("x and y must be finite")
    lib = _library(library)
    if _is_constant(ys[:, None])[0]:
        return EdgeFit(0, 0, 0, "0", 0.0, 1.0, 0.0, float(ys.mean()), 1.0, "zero")
    n, a, b, c, d, r2 = _fit_input(xs, ys[:, None], lib, refine, r2_tol)[0]
    return EdgeFit(0, 0, 0, n, a, b, c, d, r2, _kind(n, r2, r2_threshold))


def _simplify(expr: Any, symbols: Sequence[Any], x: np.ndarray, max_ops: int) -> Any:
    """Expand a polynomial; ``sympy.simplify`` a small expression if it agrees on ``x``."""
    if expr.atoms(AppliedUndef):
        return expr  # spline edges (undefined functions) inside: leave as composed
    try:
        if expr.is_polynomial(*symbols):
            return sympy.expand(expr)
        if sympy.count_ops(expr) > max_ops:
            return expr
        simple = sympy.simplify(expr)
        f0 = sympy.lambdify(symbols, expr, "numpy")
        f1 = sympy.lambdify(symbols, simple, "numpy")
        with np.errstate(all="ignore"):
            v0 = np.broadcast_to(np.asarray(f0(*x.T), dtype=np.float64), x.shape[:1])
            v1 = np.broadcast_to(np.asarray(f1(*x.T), dtype=np.float64), x.shape[:1])
        tol = 1e-6 * (1.0 + np.abs(v0).max())
        return simple if np.all(np.abs(v0 - v1) <= tol) else expr
    except (TypeError, ValueError, ZeroDivisionError):  # sympy gives up: keep what we have
        return expr


def _spline_fn(layer: KANLinear, i: int, j: int) -> Callable[[np.ndarray], np.ndarray]:
    """A numpy function evaluating edge ``i -> j`` of ``layer`` (the KAN's own spline)."""

    def phi(v: Any) -> np.ndarray:
        arr = np.asarray(v, dtype=np.float64)
        t = torch.as_tensor(arr.reshape(-1), dtype=layer.base_weight.dtype)
        t = t.to(layer.base_weight.device)
        with torch.no_grad():
            out = layer.partial(t[:, None], i)[:, j]
        return out.double().cpu().numpy().reshape(arr.shape)

    return phi


def _edge_groups(fits: list[EdgeFit]) -> dict[str, list[int]]:
    """Flat indices of a layer's edges by the function they use (``"spline"`` for splines)."""
    groups: dict[str, list[int]] = {}
    for k, e in enumerate(fits):
        groups.setdefault("spline" if e.kind == "spline" else e.name, []).append(k)
    return groups


def _spline_layers(
    layers: list[KANLinear], groups: list[dict[str, list[int]]]
) -> list[KANLinear | None]:
    """Per layer, a copy keeping only its spline edges (the others zeroed), or ``None``: one
    forward of it is the sum of the layer's spline edges."""
    out: list[KANLinear | None] = []
    for layer, group in zip(layers, groups, strict=True):
        if "spline" not in group:
            out.append(None)
            continue
        keep = torch.zeros(layer.out_features * layer.in_features, dtype=torch.bool)
        keep[group["spline"]] = True
        keep = keep.view(layer.out_features, layer.in_features).to(layer.base_weight.device)
        part = copy.deepcopy(layer)
        with torch.no_grad():
            part.base_weight.mul_(keep)
            part.spline_weight.mul_(keep[..., None])
        out.append(part.requires_grad_(False))
    return out


def _valid_args(f: SymbolicFunction, u: Tensor) -> bool:
    """Whether every column of arguments ``u`` ``[N, E]`` is in ``f``'s domain on the data and
    over its range widened by 15% on each side (zero included when it lies inside)."""
    lo, hi = u.min(0).values, u.max(0).values
    pad = 0.15 * (hi - lo)
    t = torch.linspace(0, 1, 65, dtype=u.dtype)[:, None]
    sweep = (lo - pad) + t * (hi - lo + 2 * pad)
    inside = ((lo - pad) < 0) & (hi + pad > 0)
    pts = torch.cat([u, sweep, torch.where(inside, 0.0, lo)[None]]).cpu().numpy()
    return bool(np.all(f.domain(pts)))


def _compose_torch(
    groups: list[dict[str, list[int]]],
    params: list[list[Tensor]],
    lib: Mapping[str, SymbolicFunction],
    x: Tensor,
    splines: list[KANLinear | None],
    first_splines: Tensor | None = None,
    check: bool = False,
    norms: Sequence[torch.nn.Module | None] | None = None,
) -> Tensor | None:
    """The formula as a torch computation of ``x`` (float64), spline edges by the KAN's layers
    (``first_splines``: the first layer's, precomputed), each layer's ``LayerNorm`` (``norms``)
    on its input; with ``check``, ``None`` if an argument leaves its function's domain on
    ``x``."""
    h = x
    norms = norms or [None] * len(groups)
    for level, (group, (a, b, c, d), spline, norm) in enumerate(
        zip(groups, params, splines, norms, strict=True)
    ):
        if norm is not None:
            h = _layer_norm_torch(norm, h)
        P = h.shape[1]
        if spline is None:
            out = h.new_zeros(h.shape[0], a.numel() // P)
        elif level == 0 and first_splines is not None:
            out = first_splines.clone()
        else:
            out = spline(h.to(spline.base_weight)).to(h)
        for name, flat in group.items():
            if name == "spline":
                continue
            idx = torch.tensor(flat, dtype=torch.long)
            i, j = idx % P, idx // P
            f = lib[name]
            u = b[idx] * h[:, i] + c[idx]
            if check and f.domain is not None and not _valid_args(f, u.detach()):
                return None
            out = out.index_add(1, j, a[idx] * f.torch(u) + d[idx])
        h = out
    if check and not bool(torch.isfinite(h).all()):
        return None
    return h


def _layer_norm_torch(norm: torch.nn.Module, h: Tensor) -> Tensor:
    """``norm`` (a ``LayerNorm``) applied in ``h``'s dtype (float64 in the formula)."""
    w = None if norm.weight is None else norm.weight.detach().to(h)
    b = None if norm.bias is None else norm.bias.detach().to(h)
    return torch.nn.functional.layer_norm(h, norm.normalized_shape, w, b, norm.eps)


def _layer_norm_sympy(norm: torch.nn.Module, nodes: list[Any]) -> list[Any]:
    """``norm`` (a ``LayerNorm``) written out on the expressions ``nodes``: each node minus
    their mean, over the root of their variance plus ``eps``, scaled and shifted."""
    n = len(nodes)
    mean = sympy.Add(*nodes) / n
    std = sympy.sqrt(sympy.Add(*((e - mean) ** 2 for e in nodes)) / n + sympy.Float(norm.eps))
    w = [1.0] * n if norm.weight is None else norm.weight.detach().double().tolist()
    b = [0.0] * n if norm.bias is None else norm.bias.detach().double().tolist()
    return [sympy.Float(w[q]) * (e - mean) / std + sympy.Float(b[q]) for q, e in enumerate(nodes)]


def _edge_params(edges: list[list[EdgeFit]]) -> list[list[Tensor]]:
    """Per layer, the ``a, b, c, d`` of its edges as four float64 tensors (output-major)."""
    return [
        list(torch.tensor([[e.a, e.b, e.c, e.d] for e in fits], dtype=torch.float64).t())
        for fits in edges
    ]


def _fast_evaluator(
    edges: list[list[EdgeFit]],
    layers: list[KANLinear],
    lib: Mapping[str, SymbolicFunction],
    norms: Sequence[torch.nn.Module | None] | None = None,
) -> Callable[[np.ndarray], np.ndarray] | None:
    """The formula as a numpy function by :func:`_compose_torch` (``None`` if a library
    function has no torch form)."""
    groups = [_edge_groups(fits) for fits in edges]
    if any(lib[n].torch is None for g in groups for n in g if n != "spline"):
        return None
    params = _edge_params(edges)
    splines = _spline_layers(layers, groups)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            xt = torch.as_tensor(x, dtype=torch.float64)
            return _compose_torch(groups, params, lib, xt, splines, norms=norms).numpy()

    return run


def _refit(
    edges: list[list[EdgeFit]],
    layers: list[KANLinear],
    lib: Mapping[str, SymbolicFunction],
    x: Tensor,
    target: Tensor,
    max_iter: int,
    norms: Sequence[torch.nn.Module | None] | None = None,
) -> bool:
    """Refit the constants ``a, b, c, d`` of all fitted edges jointly by L-BFGS so that the
    formula matches ``target`` (the KAN's output) on ``x``; the scale and shift only where the
    library searches them. Kept (``True``) only if it lowers the error and every argument
    stays inside its function's domain on ``x``."""
    groups = [_edge_groups(fits) for fits in edges]
    if any(lib[n].torch is None for g in groups for n in g if n != "spline"):
        return False
    if not any(e.kind in ("linear", "symbolic") for fits in edges for e in fits):
        return False  # only splines and constants: nothing to refit
    params, masks = [], []
    for fits, vals in zip(edges, _edge_params(edges), strict=True):
        free_b = [e.kind != "spline" and lib[e.name].scale in ("pos", "signed") for e in fits]
        free_c = [e.kind != "spline" and lib[e.name].shift != "none" for e in fits]
        free_ad = [e.kind != "spline" for e in fits]
        layer_masks = [torch.tensor(m, dtype=torch.float64) for m in (free_ad, free_b, free_c)]
        masks.append([layer_masks[0], layer_masks[1], layer_masks[2], layer_masks[0]])
        params.append([v.clone().requires_grad_(True) for v in vals])
    flat = [p for ps in params for p in ps]
    for p, m in zip(flat, [m for ms in masks for m in ms], strict=True):
        p.register_hook(lambda g, m=m: g * m)
    scale = target.var().clamp_min(1e-300)

    start = [p.detach().clone() for p in flat]
    splines = _spline_layers(layers, groups)
    first = splines[0](x.to(splines[0].base_weight)).to(x) if splines[0] is not None else None

    def error() -> Tensor:
        out = _compose_torch(groups, params, lib, x, splines, first, norms=norms)
        return ((out - target) ** 2).mean() / scale

    def loss_fn() -> Tensor:
        # A tiny pull towards the per-edge fits: the formula has exact symmetries (a hidden
        # unit scaled or shifted and undone in the next layer) that would otherwise drift.
        pull = sum(((p - s0) ** 2).sum() for p, s0 in zip(flat, start, strict=True))
        return error() + 1e-8 * pull

    with torch.no_grad():
        before = float(error())
    opt = torch.optim.LBFGS(flat, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = loss_fn()
        if torch.isfinite(loss):
            loss.backward()
        return loss

    with torch.enable_grad():
        try:
            opt.step(closure)
        except RuntimeError:  # a non-finite step inside the line search
            pass
    with torch.no_grad():
        out = _compose_torch(groups, params, lib, x, splines, first, check=True, norms=norms)
        after = float(((out - target) ** 2).mean() / scale) if out is not None else math.inf
        if not after < before:
            for p, s0 in zip(flat, start, strict=True):
                p.copy_(s0)
            return False
    for fits, (a, b, c, d) in zip(edges, params, strict=True):
        for k, e in enumerate(fits):
            if e.kind != "spline":
                e.per_edge = (e.a, e.b, e.c, e.d)
                e.a, e.b, e.c, e.d = float(a[k]), float(b[k]), float(c[k]), float(d[k])
    return True


@torch.no_grad()
def auto_symbolic(
    kan: KAN | KANLinear,
    x: Tensor,
    library: Sequence[str] | Mapping[str, SymbolicFunction] | None = None,
    r2_threshold: float = 0.99,
    zero_threshold: float = 1e-3,
    r2_tol: float = 1e-3,
    refine: int = 3,
    max_points: int = 512,
    simplify: bool = True,
    symbols: Sequence[str] | None = None,
    seed: int = 0,
    refit: bool = True,
    refit_max_params: int = 20000,
) -> SymbolicResult:
    """Fit every edge of ``kan`` by a library function and compose the formula of the KAN.

    See the module docstring for the procedure.

    Parameters
    ----------
    kan:
        A trained :class:`~kangnn.kan.KAN` (e.g. the result of :func:`~kangnn.kan.prune`).
    x:
        Data ``[N, in_features]`` the KAN is fitted on (its training inputs).
    library:
        Names from :data:`LIBRARY` (``0`` is always included) or a mapping of name to
        :class:`SymbolicFunction`; default the whole :data:`LIBRARY`.
    r2_threshold:
        An edge whose best fit has a lower R² stays a spline.
    zero_threshold:
        An edge whose importance score is lower becomes the constant ``0`` (plus its mean).
    r2_tol:
        The simplest function within this R² of the best one is chosen.
    refine:
        How many of the best grid functions of each edge are refined (0: grid only).
    max_points:
        At most this many rows of ``x`` (drawn with ``seed``) are used for the fits.
    simplify:
        Expand polynomial formulas and ``sympy.simplify`` small ones.
    symbols:
        Names of the input symbols (default ``x_1 .. x_n``; for a pruned KAN with
        ``active_inputs``, ``x_<i+1>`` for each kept input ``i``).
    seed:
        Seed of the row subsample.
    refit:
        Refit all fitted constants jointly (L-BFGS, float64) so that the composed formula
        matches the KAN's output on the data: per-edge fits compound their errors through the
        layers, and this removes most of that (pykan retrains the affine parameters after
        ``auto_symbolic`` for the same reason). Kept only if it lowers the error and keeps
        every argument in its function's domain. The edges then hold the refitted constants;
        their ``r2`` stays that of the per-edge fit that chose the function. Skipped above
        ``refit_max_params`` constants.
    refit_max_params:
        See ``refit``.

    Returns
    -------
    SymbolicResult
        ``.formula`` (sympy), ``.edges`` (per-edge fits), ``.evaluate(x)``.

    Examples
    --------
    >>> kan = KAN([2, 1])  # trained on y = sin(pi x_1) + x_2^2, x in [-1, 1]^2
    >>> res = auto_symbolic(kan, x)
    >>> res.formula        # e.g. 1.0*sin(3.142*x_1 + 0.0001) + 1.0*x_2**2 - 0.0002
    >>> res.evaluate(x)    # [N, 1], the formula's values
    """
    if not 0.0 <= r2_threshold <= 1.0:
        raise ValueError(f"r2_threshold must be in [0, 1], got {r2_threshold}")
    if refine < 0 or max_points < 2:
        raise ValueError(f"refine must be >= 0 and max_points >= 2, got {refine}, {max_points}")
    lib = _library(library)
    layers = _layers(kan)
    norms = layer_norms(kan)
    acts = layer_inputs(kan, x)
    n_in = layers[0].in_features
    if symbols is None:
        idx = getattr(kan, "active_inputs", None) or list(range(n_in))
        symbols = [f"x_{i + 1}" for i in idx]
    if len(symbols) != n_in:
        raise ValueError(f"expected {n_in} symbol names, got {len(symbols)}")
    syms = tuple(sympy.Symbol(s, real=True) for s in symbols)
    scores = importance(kan, acts[0]).edge_scores

    rows = torch.arange(acts[0].shape[0])
    if rows.numel() > max_points:
        g = torch.Generator().manual_seed(seed)
        rows = torch.randperm(rows.numel(), generator=g)[:max_points].sort().values

    edges: list[list[EdgeFit]] = []
    spline_fns: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    for level, layer in enumerate(layers):
        h = acts[level][rows]
        fits: dict[tuple[int, int], EdgeFit] = {}
        for i in range(layer.in_features):
            xi = h[:, i].double().cpu().numpy()
            Y = edge_values(layer, h, i).double().cpu().numpy()  # [N, out]
            score = scores[level][:, i]
            const = _is_constant(Y) | (score.numpy() < zero_threshold)
            varying = [j for j in range(layer.out_features) if not const[j]]
            found = _fit_input(xi, Y[:, varying], lib, refine, r2_tol) if varying else []
            for j in range(layer.out_features):
                s = float(score[j])
                if const[j]:
                    r2 = 1.0 if Y[:, j].std() == 0 else 0.0
                    fits[i, j] = EdgeFit(
                        level, i, j, "0", 0.0, 1.0, 0.0, float(Y[:, j].mean()), r2, "zero", s
                    )
                    continue
                n, a, b, c, d, r2 = found[varying.index(j)]
                kind = _kind(n, r2, r2_threshold)
                fits[i, j] = EdgeFit(level, i, j, n, a, b, c, d, r2, kind, s)
                if kind == "spline":
                    spline_fns[fits[i, j].function_name] = _spline_fn(layer, i, j)
        edges.append(
            [fits[i, j] for j in range(layer.out_features) for i in range(layer.in_features)]
        )

    xs = acts[0][rows].double()
    target = acts[-1][rows].double()
    n_params = 4 * sum(len(f) for f in edges)
    refitted = (
        refit
        and n_params <= refit_max_params
        and _refit(edges, layers, lib, xs, target, max_iter=200, norms=norms)
    )

    nodes: list[Any] = list(syms)
    for level, layer in enumerate(layers):
        if norms[level] is not None:
            nodes = _layer_norm_sympy(norms[level], nodes)
        fits = edges[level]
        nodes = [
            sympy.Add(
                *(
                    fits[j * layer.in_features + i].expr(nodes[i], lib)
                    for i in range(layer.in_features)
                )
            )
            for j in range(layer.out_features)
        ]
    if simplify:
        nodes = [_simplify(e, syms, xs.cpu().numpy(), max_ops=60) for e in nodes]
    result = SymbolicResult(
        formulas=nodes,
        symbols=syms,
        edges=edges,
        refitted=refitted,
        _spline_fns=spline_fns,
        _fast=_fast_evaluator(edges, layers, lib, norms),
    )
    result.fit_r2 = _r2(result.evaluate(xs), target.cpu().numpy())
    return result
