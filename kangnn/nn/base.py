"""The base class of the KAN message-passing layers: aggregation and the decomposed message.

Input validation is in :mod:`kangnn.nn.checks`, the sparse and gather helpers in
:mod:`kangnn.nn.sparse`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.nn.aggr import MultiAggregation
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.typing import Adj, OptTensor
from torch_geometric.utils import is_torch_sparse_tensor

from kangnn.nn.aggr import SIMPLE_AGGRS, scatter
from kangnn.nn.checks import check_inputs
from kangnn.nn.functions import DecomposableFunction, regularization_loss
from kangnn.nn.sparse import PairTensor, gather_sum, gather_sum_stacked

__all__ = ["KANMessagePassing"]


class KANMessagePassing(MessagePassing):
    """Base class of the kangnn layers: scatter-backend aggregation and shared helpers."""

    #: The message function the helpers below decompose (set by the layers that use them).
    message_fn: DecomposableFunction

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
