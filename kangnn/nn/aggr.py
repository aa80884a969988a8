"""Scatter aggregation with a switchable backend: torch-scatter's kernels or torch's own.

``"auto"`` (the default) uses torch-scatter when it is importable, else torch. Both give the
same outputs and gradients (for ``max``/``min`` with ties, torch spreads the gradient over the
tied entries while torch-scatter gives it to one); a target with no incoming message gets 0 for
every reduction, as in PyG.

>>> from kangnn.nn.aggr import scatter_backend
>>> with scatter_backend("torch"):
...     out = conv(x, edge_index)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

try:
    import torch_scatter

    HAS_TORCH_SCATTER = True
    #: Whether the installed torch-scatter was built with CUDA kernels.
    TORCH_SCATTER_CUDA = int(torch.ops.torch_scatter.cuda_version()) != -1
except (ImportError, AttributeError, RuntimeError):  # pragma: no cover - installation
    torch_scatter = None
    HAS_TORCH_SCATTER = TORCH_SCATTER_CUDA = False

BACKENDS = ("auto", "torch_scatter", "torch")
REDUCTIONS = ("sum", "mean", "max", "min")
#: ``aggr`` strings of a ``MessagePassing`` layer that :func:`scatter` handles itself.
SIMPLE_AGGRS = {"add": "sum", "sum": "sum", "mean": "mean", "max": "max", "min": "min"}

_backend = "auto"


def set_scatter_backend(backend: str) -> None:
    """Choose the aggregation backend: ``"auto"``, ``"torch_scatter"`` or ``"torch"``."""
    global _backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown scatter backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "torch_scatter" and not HAS_TORCH_SCATTER:
        raise ValueError(
            "scatter backend 'torch_scatter' requested but torch_scatter is not installed"
        )
    _backend = backend


def get_scatter_backend(device: torch.device | str | None = None) -> str:
    """The backend in use: ``"torch_scatter"`` or ``"torch"`` (``"auto"`` resolved).

    With a CUDA ``device``, ``"auto"`` resolves to torch unless torch-scatter has CUDA kernels.
    """
    if _backend == "auto":
        on_cuda = device is not None and torch.device(device).type == "cuda"
        usable = TORCH_SCATTER_CUDA if on_cuda else HAS_TORCH_SCATTER
        return "torch_scatter" if usable else "torch"
    return _backend


@contextmanager
def scatter_backend(backend: str) -> Iterator[None]:
    """Context manager that sets the backend and restores the previous one on exit."""
    previous = _backend
    set_scatter_backend(backend)
    try:
        yield
    finally:
        set_scatter_backend(previous)


def scatter(
    src: Tensor,
    index: Tensor,
    dim_size: int,
    reduce: str = "sum",
    ptr: Tensor | None = None,
) -> Tensor:
    """Reduce the rows of ``src`` ``[E, *]`` into ``dim_size`` rows by ``index`` ``[E]``.

    Parameters
    ----------
    src:
        The messages, one row per edge.
    index:
        Target row of each message.
    dim_size:
        Number of output rows (targets without messages get 0).
    reduce:
        ``"sum"`` (or ``"add"``), ``"mean"``, ``"max"`` or ``"min"``.
    ptr:
        CSR pointers ``[dim_size + 1]`` when ``index`` is sorted; torch-scatter then runs
        ``segment_csr``.
    """
    name = SIMPLE_AGGRS.get(reduce)
    if name is None:
        raise ValueError(f"unknown reduction {reduce!r}; valid: {', '.join(REDUCTIONS)}")
    reduce = name
    if get_scatter_backend(src.device) == "torch_scatter" and src.numel() > 0:
        if ptr is not None and ptr.numel() == dim_size + 1:
            return torch_scatter.segment_csr(src, ptr.long(), reduce=reduce)
        return torch_scatter.scatter(src, index.long(), dim=0, dim_size=dim_size, reduce=reduce)
    return _scatter_torch(src, index, dim_size, reduce)


def _scatter_torch(src: Tensor, index: Tensor, dim_size: int, reduce: str) -> Tensor:
    index = index.long()
    out = src.new_zeros(dim_size, *src.shape[1:])
    if reduce in ("sum", "mean"):
        out = out.index_add(0, index, src)
        if reduce == "mean":
            count = torch.bincount(index, minlength=dim_size).clamp_(min=1)
            out = out / count.view(-1, *([1] * (src.dim() - 1))).to(src.dtype)
        return out
    idx = index.view(-1, *([1] * (src.dim() - 1))).expand_as(src)
    op = "amax" if reduce == "max" else "amin"
    return out.scatter_reduce(0, idx, src, reduce=op, include_self=False)
