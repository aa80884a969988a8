"""Normal scores of whole-molecule descriptors, fitted on the training molecules."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["QuantileNormal"]


class QuantileNormal(nn.Module):
    r"""Map each feature column to standard-normal scores through its empirical quantiles.

    :math:`z = \Phi^{-1}(\hat F(x))`, with :math:`\hat F` the column's empirical CDF on the
    data given to :meth:`fit` (linear between ``num_quantiles`` quantiles, a tied run of
    quantiles mapped to its middle probability) clipped to ``[p_min, 1 - p_min]``. Heavy-tailed
    descriptors (RDKit's ``Ipc`` reaches 1e30) become bounded and roughly Gaussian, which is what
    a KAN grid and an MLP alike want. Missing values (NaN) map to 0, the median, and so does
    every value of a column that is constant (or missing) on the fitted data: the model could
    not have learned what a change there means. The quantiles are buffers, so checkpoints carry
    the fitted transform (as sklearn's ``QuantileTransformer(output_distribution="normal")``
    would, fitted on train only).

    Parameters
    ----------
    num_features:
        Number of columns ``D``.
    num_quantiles:
        Number of quantiles kept per column.
    p_min:
        Smallest probability (about 2.6 standard deviations for the default 0.005).

    Shapes
    ------
    input ``[N, D]`` → output ``[N, D]``.
    """

    def __init__(self, num_features: int, num_quantiles: int = 101, p_min: float = 0.005) -> None:
        super().__init__()
        if num_features < 1 or num_quantiles < 2:
            raise ValueError(
                f"QuantileNormal needs num_features >= 1 and num_quantiles >= 2, got "
                f"{num_features} and {num_quantiles}"
            )
        self.num_features = num_features
        self.p_min = p_min
        self.register_buffer("probs", torch.linspace(0.0, 1.0, num_quantiles))
        self.register_buffer("quantiles", torch.zeros(num_features, num_quantiles))
        self.register_buffer("fitted", torch.tensor(False))
        # Reading ``fitted`` syncs with the device: checked on the first call only.
        self._seen_fitted = False

    @torch.no_grad()
    def fit(self, x: Tensor) -> QuantileNormal:
        """Fit the quantiles on ``x`` ``[N, D]`` (NaN ignored; an all-NaN column maps to 0)."""
        if x.dim() != 2 or x.size(1) != self.num_features:
            raise ValueError(
                f"expected descriptors of shape [N, {self.num_features}], got {tuple(x.shape)}"
            )
        q = torch.nanquantile(x.double(), self.probs.double(), dim=0).T  # [D, Q]
        self.quantiles.copy_(torch.nan_to_num(q, nan=0.0).to(self.quantiles.dtype))
        self.fitted.fill_(True)
        return self

    def _cdf(self, x: Tensor, right: bool) -> Tensor:
        q = self.quantiles
        n = q.size(1)
        # i quantiles lie below x (right: at or below): 0 and n are the tails
        i = torch.searchsorted(q, x, right=right)
        hi = i.clamp(1, n - 1)
        lo = hi - 1
        q_lo, q_hi = q.gather(1, lo), q.gather(1, hi)
        t = ((x - q_lo) / (q_hi - q_lo).clamp_min(1e-12)).clamp_(0.0, 1.0)
        p = self.probs[lo] + t * (self.probs[hi] - self.probs[lo])
        return torch.where(i == n, torch.ones_like(p), torch.where(i == 0, torch.zeros_like(p), p))

    def forward(self, x: Tensor) -> Tensor:
        """Normal scores of ``x`` ``[N, D]``; NaN → 0."""
        if x.dim() != 2 or x.size(1) != self.num_features:
            raise ValueError(
                f"expected descriptors of shape [N, {self.num_features}], got {tuple(x.shape)}"
            )
        if not self._seen_fitted and not torch.compiler.is_compiling():
            if not bool(self.fitted):
                raise RuntimeError(
                    "QuantileNormal is not fitted: call fit() on training data first"
                )
            self._seen_fitted = True
        missing = torch.isnan(x)
        xt = torch.where(missing, torch.zeros_like(x), x).T.contiguous().to(self.quantiles.dtype)
        # Interpolated from the left and from the right: equal inside a strictly increasing
        # stretch, and the middle of a tied run (a discrete descriptor) on it.
        p = 0.5 * (self._cdf(xt, right=False) + self._cdf(xt, right=True))
        z = torch.special.ndtri(p.clamp(self.p_min, 1.0 - self.p_min)).T
        constant = self.quantiles[:, -1] <= self.quantiles[:, 0]
        return torch.where(missing | constant, torch.zeros_like(z), z).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_quantiles={self.probs.numel()}"
