"""What the KAN message-passing layers share: input checks, aggregation, sparse helpers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.nn.aggr import MultiAggregation
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.typing import Adj, OptTensor, SparseTensor
from torch_geometric.utils import is_torch_sparse_tensor, spmm, to_edge_index

from kangnn.nn.aggr import SIMPLE_AGGRS, scatter
from kangnn.nn.functions import regularization_loss

PairTensor = tuple[Tensor, Tensor]

_check_ranges = True


def set_range_checks(enabled: bool) -> None:
    """Turn the ``edge_index`` range check of every layer on (default) or off.

    On CPU the check reads the index extremes and raises a :class:`ValueError` naming them; on a
    GPU it is an asynchronous device-side assertion (no host synchronisation); inside
    ``torch.compile`` it is skipped. Without it an out-of-range index is undefined behaviour:
    the decomposed layers may read a wrong row without an error.
    """
    global _check_ranges
    _check_ranges = bool(enabled)


def _pair(channels: int | tuple[int, int]) -> tuple[int, int]:
    return (channels, channels) if isinstance(channels, int) else tuple(channels)


def _num_edges(edge_index: Adj) -> int:
    if isinstance(edge_index, SparseTensor):
        return edge_index.nnz()
    if is_torch_sparse_tensor(edge_index):
        return edge_index._nnz()
    return edge_index.size(1)


def check_inputs(
    name: str,
    x: Tensor | PairTensor,
    edge_index: Adj,
    edge_attr: Tensor | None,
    in_channels: int | tuple[int, int],
    edge_dim: int | None,
    flow: str = "source_to_target",
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Check a layer's inputs and raise a :class:`ValueError` that names the problem.

    Parameters
    ----------
    name:
        The layer's name, for the messages.
    x:
        Node features ``[N, F]`` or a ``(source, target)`` pair for bipartite graphs.
    edge_index:
        ``[2, E]`` integer tensor (or ``EdgeIndex``), ``SparseTensor`` or ``torch.sparse`` matrix
        (the transposed adjacency ``[N_target, N_source]``, as in PyG).
    edge_attr:
        Edge features ``[E, edge_dim]`` or ``None``.
    in_channels:
        Expected feature widths (an int, or ``(source, target)``).
    edge_dim:
        Expected edge feature width, or ``None`` if the layer takes no edge features. Edge
        features are then required (unless there are no edges); for a sparse adjacency they may
        come from its values.

    Returns
    -------
    ``(x_source, x_target, edge_attr)``.
    """
    if isinstance(x, Tensor):
        x_src = x_dst = x
    elif isinstance(x, (tuple, list)) and len(x) == 2 and all(isinstance(t, Tensor) for t in x):
        x_src, x_dst = x
    else:
        raise ValueError(f"{name}: x must be a tensor or a (source, target) pair of tensors")
    in_src, in_dst = _pair(in_channels)
    for t, want, role in ((x_src, in_src, "source "), (x_dst, in_dst, "target ")):
        role = "" if x_src is x_dst else role
        if t.dim() != 2:
            raise ValueError(
                f"{name}: {role}x must be 2-D [num_nodes, features], got {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise ValueError(
                f"{name}: {role}x has dtype {t.dtype}; the layer takes float features, so embed "
                "categorical atom features first (e.g. one nn.Embedding per column)"
            )
        if t.size(1) != want:
            raise ValueError(
                f"{name}: {role}x has {t.size(1)} features but the layer was built with "
                f"in_channels={want}"
            )
    n_src, n_dst = x_src.size(0), x_dst.size(0)

    sparse_values = None
    if isinstance(edge_index, SparseTensor) or is_torch_sparse_tensor(edge_index):
        if tuple(edge_index.size())[:2] != (n_dst, n_src):
            raise ValueError(
                f"{name}: the sparse adjacency has size {tuple(edge_index.size())[:2]} but x gives "
                f"(num_target_nodes, num_source_nodes) = ({n_dst}, {n_src})"
            )
        if edge_dim is not None and edge_attr is None:
            if isinstance(edge_index, SparseTensor):
                sparse_values = edge_index.storage.value()
            else:
                sparse_values = to_edge_index(edge_index)[1]
    elif isinstance(edge_index, Tensor):
        if (
            edge_index.is_floating_point()
            or edge_index.is_complex()
            or edge_index.dtype == torch.bool
        ):
            raise ValueError(
                f"{name}: edge_index must be an integer tensor, got {edge_index.dtype}"
            )
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(
                f"{name}: edge_index must have shape [2, num_edges], got {tuple(edge_index.shape)}"
            )
        if _check_ranges and edge_index.numel() > 0 and edge_index.device.type != "cpu":
            # On a GPU a host-side check would sync every layer call: assert on the device
            # instead (asynchronous; a failure surfaces as a device-side assertion).
            s, t = (0, 1) if flow == "source_to_target" else (1, 0)
            lo, hi = torch.aminmax(edge_index, dim=1)
            ok = (lo.min() >= 0) & (hi[s] < n_src) & (hi[t] < n_dst)
            torch._assert_async(ok, f"{name}: edge_index is out of range")
        elif _check_ranges and edge_index.numel() > 0 and not torch.compiler.is_compiling():
            # (Inside torch.compile the check would break the graph: compiled models skip it.)
            lo, hi = (v.tolist() for v in torch.aminmax(edge_index, dim=1))
            s, t = (0, 1) if flow == "source_to_target" else (1, 0)
            if min(lo) < 0 or hi[s] >= n_src or hi[t] >= n_dst:
                raise ValueError(
                    f"{name}: edge_index is out of range: source indices span [{lo[s]}, {hi[s]}] "
                    f"for {n_src} source nodes, target indices [{lo[t]}, {hi[t]}] for {n_dst} "
                    "target nodes"
                )
    else:
        raise ValueError(
            f"{name}: edge_index must be a [2, num_edges] integer tensor, a SparseTensor or a "
            f"torch.sparse tensor, got {type(edge_index).__name__}"
        )

    num_edges = _num_edges(edge_index)
    if edge_dim is None:
        if edge_attr is not None:
            raise ValueError(
                f"{name}: edge_attr was passed but the layer was built without edge_dim; "
                "build it with edge_dim=<edge feature width> to use edge features"
            )
        return x_src, x_dst, None
    if edge_attr is None:
        edge_attr = sparse_values
    if edge_attr is None:
        if num_edges > 0:
            raise ValueError(
                f"{name}: the layer was built with edge_dim={edge_dim} but edge_attr is missing"
            )
        return x_src, x_dst, x_src.new_zeros(0, edge_dim)
    if edge_attr.dim() == 1 and edge_dim == 1:
        edge_attr = edge_attr.unsqueeze(-1)
    if not edge_attr.is_floating_point():
        raise ValueError(
            f"{name}: edge_attr has dtype {edge_attr.dtype}; the layer takes float edge features, "
            "so embed categorical bond features first"
        )
    if edge_attr.dim() != 2 or edge_attr.size(1) != edge_dim:
        raise ValueError(
            f"{name}: edge_attr must have shape [num_edges, edge_dim={edge_dim}], "
            f"got {tuple(edge_attr.shape)}"
        )
    if edge_attr.size(0) != num_edges:
        raise ValueError(
            f"{name}: edge_attr has {edge_attr.size(0)} rows but there are {num_edges} edges"
        )
    return x_src, x_dst, edge_attr


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


class KANMessagePassing(MessagePassing):
    """Base class of the kangnn layers: scatter-backend aggregation and shared helpers."""

    def aggregate(
        self,
        inputs: Tensor,
        index: Tensor,
        ptr: Tensor | None = None,
        dim_size: int | None = None,
    ) -> Tensor:
        """Sum/mean/max/min through :func:`kangnn.nn.aggr.scatter`; other aggregations via PyG."""
        if isinstance(self.aggr, str) and self.aggr in SIMPLE_AGGRS:
            if dim_size is None:
                dim_size = int(index.max()) + 1 if index.numel() > 0 else 0
            return scatter(inputs, index, dim_size, self.aggr, ptr)
        return self.aggr_module(inputs, index, ptr=ptr, dim_size=dim_size, dim=self.node_dim)

    def aggr_out_channels(self, channels: int) -> int:
        """Width of the aggregation's output for messages of width ``channels``."""
        module = self.aggr_module
        if isinstance(module, MultiAggregation):
            return module.get_out_channels(channels)
        out = getattr(module, "out_channels", None)
        return out if isinstance(out, int) else channels

    def regularization_loss(self, **kwargs) -> Tensor:
        """Sum of the KAN regularisers of the layer's KAN functions (0 for ``function="mlp"``)."""
        return regularization_loss(self, **kwargs)

    def edge_inputs(
        self, x_src: Tensor, x_dst: Tensor, edge_index: Adj, edge_attr: Tensor | None
    ) -> Tensor:
        """The per-edge input ``[h_i || h_j || e_ij]`` of a message function (for grid updates)."""
        if not isinstance(edge_index, Tensor) or is_torch_sparse_tensor(edge_index):
            raise ValueError(
                f"{type(self).__name__}.update_grid needs a [2, num_edges] edge_index tensor"
            )
        i, j = (1, 0) if self.flow == "source_to_target" else (0, 1)
        z = [x_dst[edge_index[i]], x_src[edge_index[j]]]
        return torch.cat(z if edge_attr is None else [*z, edge_attr], dim=-1)

    def aggregated_messages(
        self, x: Tensor | PairTensor, edge_index: Adj, edge_attr: OptTensor = None
    ) -> Tensor:
        r"""The message half of ``forward``: :math:`\bigoplus_{j} \mathbf{m}_{ij}` for every
        target node, ``[num_target_nodes, aggregated width]``, before the update."""
        return self._aggregated(x, edge_index, edge_attr)[-1]

    # The helpers below serve layers whose ``message_fn`` reads ``[h_i || h_j || e_ij]``
    # (``_in_dst``, ``_in_src`` and ``edge_dim`` wide), with a ``decompose`` switch.

    def _aggregated(
        self, x: Tensor | PairTensor, edge_index: Adj, edge_attr: OptTensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(x_source, x_target, aggregated messages)`` of a layer with a ``message_fn``."""
        x_src, x_dst, edge_attr = self.check_inputs(x, edge_index, edge_attr, self.edge_dim)
        out = self.propagate(
            edge_index,
            h=self.node_parts(x_src, x_dst),
            edge_attr=edge_attr,
            size=(x_src.size(0), x_dst.size(0)),
        )
        return x_src, x_dst, out

    def node_parts(self, x_src: Tensor, x_dst: Tensor) -> Tensor | PairTensor:
        """What ``propagate`` hands to :meth:`edge_message`: with ``decompose`` the first layer's
        contributions of the source and target features (once per node), else the features.

        When source and target are one feature matrix both parts come from one basis expansion,
        as an ``[N, 2, F]`` tensor (target part first); else a ``(source, target)`` pair.
        """
        if not self.decompose:
            return x_src, x_dst
        if x_src is x_dst:
            return self.message_fn.partials(x_dst, [0, self._in_dst])
        return (
            self.message_fn.partial(x_src, self._in_dst),
            self.message_fn.partial(x_dst, 0, bias=True),
        )

    def edge_part(self, edge_attr: Tensor) -> Tensor:
        """The first layer's contribution of the edge features."""
        return self.message_fn.partial(edge_attr, self._in_dst + self._in_src)

    def edge_message(
        self,
        h: Tensor | PairTensor,
        edge_index_i: Tensor,
        edge_index_j: Tensor,
        edge_attr: OptTensor,
    ) -> Tensor:
        """``message_fn([h_i || h_j || e_ij])`` for every edge, from :meth:`node_parts`."""
        if self.edge_dim is None:
            edge_attr = None  # e.g. the values of a weighted sparse adjacency
        if self.decompose:
            if isinstance(h, Tensor):
                y = gather_sum_stacked(h, edge_index_i, edge_index_j)
            else:
                y = gather_sum(h[1], edge_index_i, h[0], edge_index_j)
            if edge_attr is not None:
                y = y.add_(self.edge_part(edge_attr))
            return self.message_fn.rest(y)
        h_src, h_dst = h
        z = [h_dst.index_select(0, edge_index_i), h_src.index_select(0, edge_index_j)]
        if edge_attr is not None:
            z.append(edge_attr)
        return self.message_fn(torch.cat(z, dim=-1))

    def check_inputs(
        self,
        x: Tensor | PairTensor,
        edge_index: Adj,
        edge_attr: Tensor | None,
        edge_dim: int | None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """:func:`check_inputs` with this layer's name, ``in_channels`` and flow."""
        return check_inputs(
            type(self).__name__, x, edge_index, edge_attr, self.in_channels, edge_dim, self.flow
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_channels}, {self.out_channels}, "
            f"function={self.function!r}, aggr={self.aggr!r})"
        )
