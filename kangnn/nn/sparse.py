"""Per-edge helpers of the kangnn layers: sparse adjacencies (aggregation, targets, edge count)
and the fused gathers of the decomposed layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.typing import Adj, SparseTensor
from torch_geometric.utils import is_torch_sparse_tensor, spmm, to_edge_index

__all__ = ["gather_sum", "gather_sum_stacked", "sparse_aggregate", "sparse_targets", "split_parts"]

PairTensor = tuple[Tensor, Tensor]


def _num_edges(edge_index: Adj) -> int:
    if isinstance(edge_index, SparseTensor):
        return edge_index.nnz()
    if is_torch_sparse_tensor(edge_index):
        return edge_index._nnz()
    return edge_index.size(1)


def _unit_adjacency(adj: Adj, dtype: torch.dtype) -> Adj:
    """The adjacency's sparsity pattern with unit values (CSR for ``torch.sparse``)."""
    if isinstance(adj, SparseTensor):
        return adj.set_value(None, layout=None)
    size = tuple(adj.size())[:2]
    if adj.layout == torch.sparse_csr:
        crow, col = adj.crow_indices(), adj.col_indices()
    else:
        index = to_edge_index(adj)[0]
        coo = torch.sparse_coo_tensor(
            index, torch.ones(index.size(1), dtype=dtype, device=index.device), size
        )
        csr = coo.coalesce().to_sparse_csr()
        crow, col = csr.crow_indices(), csr.col_indices()
    values = torch.ones(col.numel(), dtype=dtype, device=col.device)
    return torch.sparse_csr_tensor(crow, col, values, size=size)


def sparse_aggregate(adj: Adj, src: Tensor, reduce: str) -> tuple[Tensor, Tensor]:
    """``(A @ src, deg)``: the sum (or mean) of ``src`` over each target's neighbours.

    ``adj`` is the transposed adjacency (``SparseTensor`` or ``torch.sparse``); its values are
    ignored. ``deg`` is the float in-degree of every target.
    """
    unit = _unit_adjacency(adj, src.dtype)
    if isinstance(unit, SparseTensor):
        deg = unit.storage.rowcount().to(src.dtype)
    else:
        crow = unit.crow_indices()
        deg = (crow[1:] - crow[:-1]).to(src.dtype)
    if unit.size(0) == 0 or src.size(0) == 0 or _num_edges(unit) == 0:
        return src.new_zeros(unit.size(0), src.size(1)), deg
    return spmm(unit, src, reduce=reduce), deg


def sparse_targets(adj: Adj) -> Tensor:
    """Target index of every stored edge, in the order of the adjacency's values."""
    if isinstance(adj, SparseTensor):
        return adj.storage.row()
    return to_edge_index(adj)[0][0]


class _GatherSum(torch.autograd.Function):
    """``table[i] + table[j]`` in one pass and one allocation (``embedding_bag``)."""

    @staticmethod
    def forward(ctx, table: Tensor, i: Tensor, j: Tensor) -> Tensor:
        ctx.save_for_backward(i, j)
        ctx.rows = table.size(0)
        return F.embedding_bag(torch.stack([i, j], dim=1), table, mode="sum")

    @staticmethod
    def backward(ctx, grad: Tensor):
        i, j = ctx.saved_tensors
        grad_table = grad.new_zeros(ctx.rows, grad.size(1))
        grad_table.index_add_(0, i, grad).index_add_(0, j, grad)
        return grad_table, None, None


def gather_sum(a: Tensor, i: Tensor, b: Tensor, j: Tensor) -> Tensor:
    """``a[i] + b[j]`` for 2-D ``a``, ``b`` and index vectors ``i``, ``j`` of equal length.

    One gather kernel and one ``[E, F]`` allocation instead of two gathers and an addition; the
    backward pass is two ``index_add``. This is the per-edge cost of the decomposed layers.
    """
    if i.numel() == 0:
        return (a[:0] + b[:0]).reshape(0, a.size(1))
    return _GatherSum.apply(torch.cat([a, b], dim=0), i.long(), j.long() + a.size(0))


def gather_sum_stacked(h: Tensor, i: Tensor, j: Tensor) -> Tensor:
    """``h[i, 0] + h[j, 1]`` for ``h`` of shape ``[N, 2, F]`` (:func:`gather_sum` without the
    concatenation: the rows of ``h.view(2 N, F)`` already alternate between the two parts)."""
    if i.numel() == 0:
        return h.new_zeros(0, h.size(-1)) + h[:0, 0]
    return _GatherSum.apply(h.reshape(-1, h.size(-1)), 2 * i.long(), 2 * j.long() + 1)


def split_parts(h: Tensor | PairTensor) -> PairTensor:
    """``(source, target)`` node parts from what :meth:`KANMessagePassing.node_parts` returns."""
    return (h[:, 1], h[:, 0]) if isinstance(h, Tensor) else h
