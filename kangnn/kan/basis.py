"""Univariate bases for :class:`~kangnn.kan.KANLinear`.

A basis turns each input coordinate ``x_p`` into ``K`` function values ``B_1(x_p) .. B_K(x_p)``.
Every basis keeps one uniform grid per input (``lo[p]`` and step ``h[p]``), so
:meth:`KANLinear.update_grid` can move the grid of each input on its own.

A new basis is one short class: subclass :class:`Basis`, set ``num_functions`` and implement
:meth:`Basis.expand`. The layer's backward pass then differentiates ``expand`` by autograd on a
recomputation; override :meth:`Basis.expand_grad` to do that in closed form.
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Basis(nn.Module):
    """Base class: ``num_functions`` functions per input on a per-input uniform grid.

    Parameters
    ----------
    in_features:
        Number of inputs, each with its own grid.
    grid_size:
        Number of grid intervals ``G`` inside ``grid_range``.
    grid_range:
        The interval ``[a, b]`` the grid covers at initialisation.
    """

    num_functions: int

    def __init__(self, in_features: int, grid_size: int, grid_range: tuple[float, float]) -> None:
        super().__init__()
        a, b = float(grid_range[0]), float(grid_range[1])
        if not b > a:
            raise ValueError(f"grid_range must satisfy a < b, got {grid_range!r}")
        if grid_size < 1:
            raise ValueError(f"grid_size must be >= 1, got {grid_size}")
        self.in_features = in_features
        self.grid_size = grid_size
        self.register_buffer("lo", torch.full((in_features,), a))
        self.register_buffer("h", torch.full((in_features,), (b - a) / grid_size))
        self.grid_ids: tuple[int, ...] = (0,) * in_features

    @property
    def hi(self) -> Tensor:
        """Upper end of each input's grid range."""
        return self.lo + self.h * self.grid_size

    def set_grid(self, lo: Tensor, hi: Tensor, cols: slice = slice(None)) -> None:
        """Move the grids of inputs ``cols`` (default all) to ``[lo[p], hi[p]]``, in place.

        The number of intervals stays; change grids only through this method (or
        ``load_state_dict``), which keeps :attr:`grid_ids` current.
        """
        self.lo[cols] = lo
        self.h[cols] = (hi - lo) / self.grid_size
        self._update_grid_ids()

    def _update_grid_ids(self) -> None:
        # Which inputs share a grid, as plain Python ints: layers read it to expand a shared
        # input once for several column blocks, with no device sync and nothing for
        # torch.compile to trace. Computed (one sync) only when a grid changes.
        grids = torch.stack([self.lo, self.h], dim=1)
        self.grid_ids = tuple(torch.unique(grids, dim=0, return_inverse=True)[1].tolist())

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._update_grid_ids()

    @torch.no_grad()
    def second_moment(self) -> float:
        """``E[sum_k B_k(z)^2]`` for ``z ~ N(0, 1)`` on the grid of input 0: the variance a spline
        with unit-variance independent coefficients has on standardised input (used to
        initialise the coefficients)."""
        z = torch.linspace(-12.0, 12.0, 24001, dtype=torch.float64, device=self.lo.device)
        density = torch.exp(-0.5 * z.square()) / math.sqrt(2 * math.pi) * (z[1] - z[0])
        values = copy.deepcopy(self).double().expand(z[:, None], slice(0, 1))[:, 0]
        return float((values.square().sum(-1) * density).sum())

    def expand(self, x: Tensor, cols: slice = slice(None)) -> Tensor:
        """Values ``[N, P, K]`` of the functions at ``x`` ``[N, P]`` (grids of inputs ``cols``)."""
        raise NotImplementedError

    def expand_grad(self, x: Tensor, grad: Tensor, cols: slice = slice(None)) -> Tensor:
        """``sum_k grad[n, p, k] * dB_k/dx (x[n, p])``, shape ``[N, P]``.

        The default differentiates :meth:`expand` by autograd; subclasses may do it in closed form.
        """
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            (gx,) = torch.autograd.grad(self.expand(xr, cols), xr, grad)
        return gx

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, grid_size={self.grid_size}"


def _bspline_local_polynomials(order: int) -> np.ndarray:
    """Coefficients ``M[d, r]`` of the ``order + 1`` non-zero uniform B-splines on one interval.

    On the interval ``[t_m, t_m+1)`` with local coordinate ``t`` in ``[0, 1)``, the basis function
    ``B_{m-order+r}`` equals ``sum_d M[d, r] t**d``. Built once, exactly, from the Cox-de Boor
    recursion on polynomials: with uniform knots it reads
    ``b^d_r = ((t + d - r) b^{d-1}_{r-1} + (r + 1 - t) b^{d-1}_r) / d``.
    """
    P = np.polynomial.Polynomial
    t = P([0.0, 1.0])
    prev = [P([1.0])]
    for d in range(1, order + 1):
        cur = []
        for r in range(d + 1):
            left = (t + d - r) * prev[r - 1] if r >= 1 else P([0.0])
            right = (r + 1 - t) * prev[r] if r < d else P([0.0])
            cur.append((left + right) / d)
        prev = cur
    coef = np.zeros((order + 1, order + 1))
    for r, poly in enumerate(prev):
        c = poly.coef
        coef[: len(c), r] = c
    return coef


def _outside(m: Tensor, k: int, K: int) -> bool:
    """Whether any interval index ``m`` lies outside ``[k, K)``, i.e. beyond the grid range."""
    if m.numel() == 0:
        return False
    lo, hi = torch.aminmax(m)
    return bool(lo < k) or bool(hi >= K)


class SplineLayout(NamedTuple):
    """Per-input constants of :meth:`BSplineBasis.layout` (all ``[P]`` or ``[k+1, P]``)."""

    inv_h: Tensor
    shift: Tensor
    columns: Tensor
    lowest: Tensor
    highest: Tensor


class BSplineBasis(Basis):
    r"""Uniform B-splines of order ``k`` (degree ``k``): ``G + k`` functions per input.

    The knots are ``t_i = a + (i - k) h`` for ``i = 0 .. G + 2k``, so the functions cover
    ``[a - k h, b + k h]``. At any ``x`` only ``k + 1`` of them are non-zero; they are evaluated in
    closed form as fixed polynomials of the position inside the knot interval, never through the
    Cox-de Boor recursion. Beyond the outer knots every function is exactly zero (the spline fades
    out continuously), so a KAN layer is carried by its base branch there and never returns NaN or
    inf for finite input.
    """

    def __init__(
        self, in_features: int, grid_size: int = 5, grid_range=(-1.0, 1.0), spline_order: int = 3
    ) -> None:
        super().__init__(in_features, grid_size, grid_range)
        if spline_order < 1:
            raise ValueError(f"spline_order must be >= 1, got {spline_order}")
        self.order = spline_order
        self.num_functions = grid_size + spline_order
        coef = _bspline_local_polynomials(spline_order)
        # Plain floats: the polynomials are evaluated with scalar coefficients (see _polyval).
        self._coef = coef.tolist()
        self._dcoef = (coef * np.arange(spline_order + 1)[:, None])[1:].tolist()

    @staticmethod
    def _polyval(coef: list[list[float]], powers: list[Tensor]) -> Tensor:
        """``[N, R, P]``: polynomial ``r`` (coefficients ``coef[d][r]``, low to high) at ``t``.

        ``powers[d]`` is ``t**d`` (``[N, P]`` for ``d >= 1``). One contiguous ``[N, P]`` plane per
        polynomial, with scalar coefficients and zero terms skipped: this vectorises far better
        than broadcasting a coefficient vector over a short trailing dimension.
        """
        t = powers[1]
        out = t.new_empty(t.shape[0], len(coef[0]), t.shape[1])
        for r in range(len(coef[0])):
            plane = out[:, r]
            terms = [d for d in range(1, len(coef)) if coef[d][r] != 0.0]
            if not terms:
                plane.fill_(coef[0][r])
                continue
            torch.mul(powers[terms[-1]], coef[terms[-1]][r], out=plane)
            for d in reversed(terms[:-1]):
                plane.add_(powers[d], alpha=coef[d][r])
            if coef[0][r] != 0.0:
                plane.add_(coef[0][r])
        return out

    def layout(self, cols: slice, stride: int, first: int) -> SplineLayout:
        """:meth:`_layout`, cached per grid (every layer call needs it; it changes only with the
        grid, which :meth:`set_grid` and ``load_state_dict`` announce)."""
        key = (cols.start, cols.stop, stride, first, self.lo.device, self.lo.dtype)
        cache = self.__dict__.setdefault("_layouts", {})
        if key not in cache:
            cache[key] = self._layout(cols, stride, first)
        return cache[key]

    def _update_grid_ids(self) -> None:
        super()._update_grid_ids()
        self.__dict__.pop("_layouts", None)

    def _layout(self, cols: slice, stride: int, first: int) -> SplineLayout:
        """Per-input constants for writing inputs ``cols`` into a row of features.

        Function ``i`` of input ``p`` goes to column ``p * stride + first + i``. Functions that do
        not exist (within ``k`` steps beyond the outer knots) are sent to column
        ``p * stride + first - 1`` or ``p * stride + first + K``: the caller reserves those
        columns and overwrites or zeroes them.
        """
        inv_h = 1.0 / self.h[cols]
        # int32 index arithmetic is twice as fast as int64; the result is widened once.
        base = torch.arange(inv_h.shape[0], device=inv_h.device, dtype=torch.int32) * stride + first
        offsets = torch.arange(-self.order, 1, device=inv_h.device, dtype=torch.int32)
        return SplineLayout(
            inv_h=inv_h,
            shift=self.order - self.lo[cols] * inv_h,
            columns=base + offsets.unsqueeze(-1),
            lowest=base - 1,
            highest=base + self.num_functions,
        )

    def locate(self, x: Tensor, layout: SplineLayout) -> tuple[Tensor, list[Tensor]]:
        """Feature columns ``[N, (k+1) P]`` of the non-zero functions at ``x`` ``[N, P]``, and the
        powers ``t, t**2, .., t**k`` (at list positions 1..k) of the position inside the interval.
        """
        k, K = self.order, self.num_functions
        # Knot units counted from t_0. Far-away inputs are clamped so the integer cast stays in
        # range; nothing changes for them, every function is zero there.
        v = torch.addcmul(layout.shift, x, layout.inv_h).clamp_(-1.0, K + k + 1.0)
        m = v.floor()
        t = v.sub_(m)
        index = m.int().unsqueeze(1) + layout.columns
        # Only inputs beyond the grid range have absent functions. On CPU the check is cheaper
        # than clamping every index; on GPU a check would cost a device sync.
        if x.device.type != "cpu" or _outside(m, k, K):
            torch.clamp_(index, min=layout.lowest, max=layout.highest)
        index = index.long()
        powers = [t.new_ones(()), t]
        for _ in range(2, k + 1):
            powers.append(powers[-1] * t)
        return index.flatten(1), powers

    def scatter_into(self, out: Tensor, index: Tensor, powers: list[Tensor]) -> None:
        """Add the basis values located by :meth:`locate` into the rows of ``out``.

        The caller then overwrites the reserved columns (e.g. with the base branch), which removes
        the values of absent functions.
        """
        out.scatter_add_(1, index, self._polyval(self._coef, powers).flatten(1))

    def gather_grad(
        self, grad: Tensor, index: Tensor, powers: list[Tensor], layout: SplineLayout
    ) -> Tensor:
        """``sum_i grad[n, column(p, i)] * dB_i/dx`` at the located inputs, ``[N, P]``.

        ``grad`` ``[N, W]`` must hold zeros in the reserved columns (see :meth:`layout`).
        """
        dvals = self._polyval(self._dcoef, powers)
        picked = grad.gather(1, index).view_as(dvals)
        return (picked * dvals).sum(1) * layout.inv_h

    def expand(self, x: Tensor, cols: slice = slice(None)) -> Tensor:
        N, P = x.shape
        S = self.num_functions + 1
        # One spare column per input (and one at the end) takes the values of absent functions.
        out = x.new_zeros(N, P * S + 1)
        self.scatter_into(out, *self.locate(x, self.layout(cols, S, 1)))
        return out[:, :-1].view(N, P, S)[..., 1:]

    def expand_grad(self, x: Tensor, grad: Tensor, cols: slice = slice(None)) -> Tensor:
        layout = self.layout(cols, self.num_functions + 1, 1)
        padded = F.pad(F.pad(grad, (1, 0)).flatten(1), (0, 1))
        return self.gather_grad(padded, *self.locate(x, layout), layout)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", spline_order={self.order}"


class RBFBasis(Basis):
    r"""Gaussian radial basis functions (FastKAN): ``exp(-((x - mu_k) / h)^2)``.

    ``G + 1`` centres ``mu_k`` sit on the grid points of ``grid_range``; the width is the grid step.
    """

    def __init__(self, in_features: int, grid_size: int = 5, grid_range=(-1.0, 1.0)) -> None:
        super().__init__(in_features, grid_size, grid_range)
        self.num_functions = grid_size + 1
        self.register_buffer("steps", torch.arange(grid_size + 1.0), persistent=False)

    def _z(self, x: Tensor, cols: slice) -> Tensor:
        return (x - self.lo[cols]).div(self.h[cols]).unsqueeze(-1) - self.steps.to(x.dtype)

    def expand(self, x: Tensor, cols: slice = slice(None)) -> Tensor:
        return torch.exp(-self._z(x, cols).square())

    def expand_grad(self, x: Tensor, grad: Tensor, cols: slice = slice(None)) -> Tensor:
        z = self._z(x, cols)
        return (grad * torch.exp(-z.square()) * z).sum(-1) * (-2.0 / self.h[cols])


class ChebyshevBasis(Basis):
    r"""Chebyshev polynomials ``T_0 .. T_G`` of the input mapped to ``[-1, 1]`` (ChebyKAN).

    The input is mapped affinely so that ``grid_range`` becomes ``[-1, 1]`` and then squashed with
    ``tanh``, which keeps the polynomials bounded for any input.
    """

    def __init__(self, in_features: int, grid_size: int = 5, grid_range=(-1.0, 1.0)) -> None:
        super().__init__(in_features, grid_size, grid_range)
        self.num_functions = grid_size + 1

    def expand(self, x: Tensor, cols: slice = slice(None)) -> Tensor:
        mid = self.lo[cols] + 0.5 * self.h[cols] * self.grid_size
        u = torch.tanh((x - mid) / (0.5 * self.h[cols] * self.grid_size))
        # T_n(u) = cos(n arccos u) is unstable at |u| = 1 for gradients; use the recurrence.
        terms = [torch.ones_like(u), u]
        for _ in range(2, self.num_functions):
            terms.append(2 * u * terms[-1] - terms[-2])
        return torch.stack(terms[: self.num_functions], dim=-1)


class FourierBasis(Basis):
    r"""Fourier features ``cos(n w x), sin(n w x)`` for ``n = 1 .. G``: ``2 G`` functions.

    ``w`` maps ``grid_range`` onto one period ``[-pi, pi]``.
    """

    def __init__(self, in_features: int, grid_size: int = 5, grid_range=(-1.0, 1.0)) -> None:
        super().__init__(in_features, grid_size, grid_range)
        self.num_functions = 2 * grid_size
        self.register_buffer("freqs", torch.arange(1.0, grid_size + 1.0), persistent=False)

    def _phase(self, x: Tensor, cols: slice) -> Tensor:
        span = self.h[cols] * self.grid_size
        u = (x - self.lo[cols]) / span * (2 * math.pi) - math.pi
        return u.unsqueeze(-1) * self.freqs.to(x.dtype)

    def expand(self, x: Tensor, cols: slice = slice(None)) -> Tensor:
        ph = self._phase(x, cols)
        return torch.cat([torch.cos(ph), torch.sin(ph)], dim=-1)

    def expand_grad(self, x: Tensor, grad: Tensor, cols: slice = slice(None)) -> Tensor:
        ph = self._phase(x, cols)
        n = ph.shape[-1]
        span = (self.h[cols] * self.grid_size).unsqueeze(-1)
        scale = self.freqs.to(x.dtype) * (2 * math.pi) / span
        d = grad[..., n:] * torch.cos(ph) - grad[..., :n] * torch.sin(ph)
        return (d * scale).sum(-1)


BASES: dict[str, type[Basis]] = {
    "bspline": BSplineBasis,
    "rbf": RBFBasis,
    "chebyshev": ChebyshevBasis,
    "fourier": FourierBasis,
}


def make_basis(name: str, in_features: int, grid_size: int, grid_range, **kwargs) -> Basis:
    """Build a basis by name (one of :data:`BASES`)."""
    try:
        cls = BASES[name]
    except KeyError:
        raise ValueError(f"unknown basis {name!r}; valid: {', '.join(BASES)}") from None
    return cls(in_features, grid_size=grid_size, grid_range=grid_range, **kwargs)
