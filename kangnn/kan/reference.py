"""Reference KAN layer: the Cox-de Boor recursion with autograd through it (efficient-kan style).

Slow and memory-hungry on purpose: it is what :class:`~kangnn.kan.KANLinear` is measured against
in ``python -m kangnn.bench layer``. It computes the same function as a B-spline ``KANLinear``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kangnn.kan.basis import BSplineBasis


def bspline_recursive(x: Tensor, knots: Tensor, order: int) -> Tensor:
    """B-spline values by the Cox-de Boor recursion.

    Parameters
    ----------
    x:
        ``[N, P]`` inputs.
    knots:
        ``[P, G + 2 * order + 1]`` knot vector of each input.
    order:
        Spline order (degree).

    Returns
    -------
    ``[N, P, G + order]`` basis values.
    """
    x = x.unsqueeze(-1)
    bases = ((x >= knots[:, :-1]) & (x < knots[:, 1:])).to(x.dtype)
    for d in range(1, order + 1):
        left = (x - knots[:, : -(d + 1)]) / (knots[:, d:-1] - knots[:, : -(d + 1)])
        right = (knots[:, d + 1 :] - x) / (knots[:, d + 1 :] - knots[:, 1:-d])
        bases = left * bases[..., :-1] + right * bases[..., 1:]
    return bases


def knots_of(basis: BSplineBasis) -> Tensor:
    """The ``[P, G + 2k + 1]`` knot vectors of a uniform B-spline basis."""
    k, G = basis.order, basis.grid_size
    i = torch.arange(G + 2 * k + 1, dtype=basis.lo.dtype, device=basis.lo.device)
    return basis.lo[:, None] + (i - k) * basis.h[:, None]


class RecursiveKANLinear(nn.Module):
    """The B-spline KAN layer computed by the plain recursion, for benchmarks and checks.

    Holds its own copy of a :class:`~kangnn.kan.KANLinear`'s parameters and grid (see
    :meth:`from_layer`), and evaluates ``silu(x) @ W_b^T + B(x) @ C^T`` with autograd recording
    every step of the recursion.
    """

    def __init__(self, base_weight: Tensor, spline_weight: Tensor, knots: Tensor, order: int):
        super().__init__()
        self.base_weight = nn.Parameter(base_weight.detach().clone())
        self.spline_weight = nn.Parameter(spline_weight.detach().clone())
        self.register_buffer("knots", knots.detach().clone())
        self.order = order

    @classmethod
    def from_layer(cls, layer) -> RecursiveKANLinear:
        if not isinstance(layer.basis, BSplineBasis):
            raise ValueError("RecursiveKANLinear needs a B-spline KANLinear")
        return cls(layer.base_weight, layer.spline_weight, knots_of(layer.basis), layer.basis.order)

    def forward(self, x: Tensor) -> Tensor:
        spline = bspline_recursive(x, self.knots, self.order).flatten(1)
        return F.linear(F.silu(x), self.base_weight) + F.linear(
            spline, self.spline_weight.flatten(1)
        )
