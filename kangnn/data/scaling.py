"""Per-task standardisation of regression targets, fitted on the training part only.

Models train on standardised targets; predictions go back to the original units with
:meth:`TargetScaler.inverse_transform` before metrics are computed or predictions written.
Missing labels (NaN) are ignored when fitting and stay NaN.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["TargetScaler"]


class TargetScaler:
    """Standardise each target column: ``(y - mean) / std``.

    ``mean`` and ``std`` (population std, ``ddof=0``) come from the non-missing values of each
    column passed to :meth:`fit`, which should be the training part only. A column with zero
    spread (or a single value) gets ``std = 1``; a column with no values at all gets
    ``mean = 0, std = 1``.

    Examples
    --------
    >>> scaler = TargetScaler().fit(dataset.y[split["train"]])
    >>> loss = mse(model(batch), scaler.transform(batch.y))
    >>> pred = scaler.inverse_transform(model(batch))  # original units
    """

    def __init__(self) -> None:
        self.mean: list[float] | None = None
        self.std: list[float] | None = None

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`from_state_dict`) has set the statistics."""
        return self.mean is not None

    def fit(self, y: torch.Tensor | np.ndarray) -> TargetScaler:
        """Compute per-task mean and std over non-NaN values.

        Parameters
        ----------
        y : Tensor or ndarray, shape ``[N, T]`` (or ``[N]`` for one task)
            Training targets, NaN where missing.

        Returns
        -------
        TargetScaler
            ``self``.
        """
        arr = np.asarray(torch.as_tensor(y).detach().cpu(), dtype=np.float64)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise ValueError(f"expected targets of shape [N, T], got {tuple(arr.shape)}")
        mean: list[float] = []
        std: list[float] = []
        for col in arr.T:
            vals = col[~np.isnan(col)]
            if vals.size == 0:
                mean.append(0.0)
                std.append(1.0)
                continue
            m = float(vals.mean())
            s = float(vals.std())
            mean.append(m)
            std.append(s if s > 0.0 and math.isfinite(s) else 1.0)
        self.mean, self.std = mean, std
        return self

    def _stats(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mean is None or self.std is None:
            raise RuntimeError("TargetScaler is not fitted; call fit() on the training targets")
        if y.size(-1) != len(self.mean):
            raise ValueError(f"scaler was fitted on {len(self.mean)} tasks, got {y.size(-1)}")
        dtype = y.dtype if y.is_floating_point() else torch.float
        mean = torch.tensor(self.mean, dtype=dtype, device=y.device)
        std = torch.tensor(self.std, dtype=dtype, device=y.device)
        return mean, std

    def transform(self, y: torch.Tensor) -> torch.Tensor:
        """Standardise ``y`` (``[..., T]``); NaN stays NaN."""
        mean, std = self._stats(y)
        return (y - mean) / std

    def inverse_transform(self, y: torch.Tensor) -> torch.Tensor:
        """Map standardised values (e.g. predictions ``[..., T]``) back to original units."""
        mean, std = self._stats(y)
        return y * std + mean

    def state_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable statistics: ``{"mean": [...], "std": [...]}``."""
        if self.mean is None or self.std is None:
            raise RuntimeError("TargetScaler is not fitted")
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> TargetScaler:
        """Rebuild a scaler from :meth:`state_dict` output."""
        mean = [float(v) for v in state["mean"]]
        std = [float(v) for v in state["std"]]
        if len(mean) != len(std) or any(s <= 0 or not math.isfinite(s) for s in std):
            raise ValueError(f"invalid TargetScaler state: {state!r}")
        scaler = cls()
        scaler.mean, scaler.std = mean, std
        return scaler

    def __repr__(self) -> str:
        return f"TargetScaler(mean={self.mean}, std={self.std})"
