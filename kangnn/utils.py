"""Small helpers shared by the layers, models and benchmarks."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch


def count_parameters(module: torch.nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def match_width(
    build: Callable[[int], torch.nn.Module],
    target: int,
    lo: int = 1,
    hi: int = 8192,
) -> int:
    """The width in ``[lo, hi]`` whose model ``build(width)`` has about ``target`` parameters.

    The parameter count must grow with the width (true for every MLP built from a width); a
    bisection then finds the crossing and the closer of its two neighbours is returned.

    Parameters
    ----------
    build:
        Makes a model from a width.
    target:
        The parameter count to match (usually that of the KAN model).
    lo, hi:
        The search range for the width.
    """
    if count_parameters(build(lo)) >= target:
        return lo
    if count_parameters(build(hi)) < target:
        raise ValueError(f"no width up to {hi} reaches {target} parameters")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count_parameters(build(mid)) < target:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda w: abs(count_parameters(build(w)) - target))


def fall_back(state: dict, err: BaseException, failed: str, instead: str, stacklevel: int) -> None:
    """Record in ``state["failed"]`` that an optional fast path failed for good (its error's
    first line) and warn once, e.g. "the fused kernels could not be compiled (...); using X"."""
    state["failed"] = f"{type(err).__name__}: {err}".splitlines()[0]
    warnings.warn(
        f"kangnn: {failed} ({state['failed']}); {instead}",
        RuntimeWarning,
        stacklevel=stacklevel + 1,
    )
