"""Message passing with a KAN message and a KAN update."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.typing import Adj, OptTensor

from kangnn.nn.aggr import SIMPLE_AGGRS, scatter
from kangnn.nn.base import KANMessagePassing
from kangnn.nn.checks import _pair
from kangnn.nn.functions import build_function
from kangnn.nn.sparse import PairTensor, sparse_aggregate, sparse_targets, split_parts


class KANMPNNConv(KANMessagePassing):
    r"""A message-passing layer whose message and update functions are KANs (or MLPs).

    .. math::
        \mathbf{m}_{ij} &= F_m\left([\mathbf{h}_i \,\|\, \mathbf{h}_j \,\|\,
        \mathbf{e}_{ij}]\right) \\
        \mathbf{h}^{\prime}_i &= F_u\left([\mathbf{h}_i \,\|\,
        \textstyle\bigoplus_{j \in \mathcal{N}(i)} \mathbf{m}_{ij}]\right)

    The first layer of :math:`F_m` is additive over its inputs,
    :math:`F_m^{(1)}([\mathbf{h}_i \| \mathbf{h}_j \| \mathbf{e}_{ij}]) = A(\mathbf{h}_i) +
    B(\mathbf{h}_j) + C(\mathbf{e}_{ij})`, so with ``decompose=True`` :math:`A` and :math:`B`
    run once per node and are gathered to the edges; only :math:`C` and the later layers of
    :math:`F_m` run once per edge. With a one-layer message and sum or mean aggregation a sparse
    adjacency input runs as a sparse-dense product of the per-node :math:`B(\mathbf{h})`.

    Args:
        in_channels (int or tuple): Input feature width, or ``(source, target)`` widths.
        out_channels (int): Output feature width.
        edge_dim (int, optional): Edge feature width; ``None`` for a layer without edge features.
        function (str): ``"kan"`` or ``"mlp"``: what :math:`F_m` and :math:`F_u` are.
        hidden_channels (int, optional): Hidden width of :math:`F_m` and :math:`F_u` (default
            ``out_channels``).
        message_channels (int, optional): Width of the messages (default ``hidden_channels``).
        message_layers (int): Number of layers of :math:`F_m`. (default: ``2``)
        update_layers (int): Number of layers of :math:`F_u`. (default: ``2``)
        aggr (str or list or Aggregation): ``"sum"``, ``"mean"``, ``"max"``, ``"min"``, a list of
            them or any PyG aggregation; :math:`F_u` takes the aggregation's output width.
            (default: ``"sum"``)
        aggr_kwargs (dict, optional): Arguments of the aggregation.
        decompose (bool): Evaluate the node parts of :math:`F_m`'s first layer once per node
            (``True``) or the whole of :math:`F_m` once per edge (``False``). (default: ``True``)
        flow (str): ``"source_to_target"`` or ``"target_to_source"``.
        **kwargs: Options of the KAN (``basis``, ``grid_size``, ...) or the MLP (``act``).

    Shapes:
        - **input:**
          node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V}_s|, F_s), (|\mathcal{V}_t|, F_t))` if bipartite,
          edge indices :math:`(2, |\mathcal{E}|)` (or a sparse adjacency),
          edge features :math:`(|\mathcal{E}|, D)` (``D = edge_dim``; none without it)
        - **output:** node features :math:`(|\mathcal{V}|, F_{out})` or
          :math:`(|\mathcal{V}_t|, F_{out})` if bipartite
    """

    def __init__(
        self,
        in_channels: int | tuple[int, int],
        out_channels: int,
        edge_dim: int | None = None,
        *,
        function: str = "kan",
        hidden_channels: int | None = None,
        message_channels: int | None = None,
        message_layers: int = 2,
        update_layers: int = 2,
        aggr="sum",
        aggr_kwargs: dict | None = None,
        decompose: bool = True,
        flow: str = "source_to_target",
        **kwargs,
    ) -> None:
        super().__init__(aggr=aggr, aggr_kwargs=aggr_kwargs, flow=flow)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.edge_dim = edge_dim
        self.function = function
        in_src, in_dst = _pair(in_channels)
        self._in_src, self._in_dst = in_src, in_dst
        hidden = out_channels if hidden_channels is None else hidden_channels
        msg = hidden if message_channels is None else message_channels
        self.message_channels = msg
        self.message_fn = build_function(
            function, in_dst + in_src + (edge_dim or 0), msg, hidden, message_layers, **kwargs
        )
        self.update_fn = build_function(
            function,
            in_dst + self.aggr_out_channels(msg),
            out_channels,
            hidden,
            update_layers,
            **kwargs,
        )
        # Aggregate-then-transform: only a one-layer message is additive all the way through.
        self._fusable = (
            self.fuse and message_layers == 1 and SIMPLE_AGGRS.get(self.aggr) in ("sum", "mean")
        )
        self.decompose = decompose
        self.reset_parameters()

    @property
    def decompose(self) -> bool:
        """Whether the node parts of the message's first layer run once per node."""
        return self._decompose

    @decompose.setter
    def decompose(self, value: bool) -> None:
        self._decompose = bool(value)
        self.fuse = self._fusable and self._decompose

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.message_fn.reset_parameters()
        self.update_fn.reset_parameters()

    def forward(
        self, x: Tensor | PairTensor, edge_index: Adj, edge_attr: OptTensor = None
    ) -> Tensor:
        _, x_dst, out = self._aggregated(x, edge_index, edge_attr)
        return self.update_fn(torch.cat([x_dst, out], dim=-1))

    @torch.no_grad()
    def update_grid(
        self, x: Tensor | PairTensor, edge_index: Adj, edge_attr: OptTensor = None, **kwargs
    ) -> None:
        """Fit the KAN grids to the inputs that this batch gives :math:`F_m` and :math:`F_u`.

        A no-op for ``function="mlp"``. ``kwargs`` go to
        :meth:`kangnn.kan.KANLinear.update_grid`. Grids and coefficients are updated in
        place (same parameters; an optimizer keeps its state). Needs a ``[2, E]`` ``edge_index``.
        """
        x_src, x_dst, edge_attr = self.check_inputs(x, edge_index, edge_attr, self.edge_dim)
        z = self.edge_inputs(x_src, x_dst, edge_index, edge_attr)
        if z.size(0) > 0:
            self.message_fn.update_grid(z, **kwargs)
        _, _, out = self._aggregated(x, edge_index, edge_attr)
        self.update_fn.update_grid(torch.cat([x_dst, out], dim=-1), **kwargs)

    def message(
        self,
        h: Tensor | PairTensor,
        edge_index_i: Tensor,
        edge_index_j: Tensor,
        edge_attr: OptTensor = None,
    ) -> Tensor:
        return self.edge_message(h, edge_index_i, edge_index_j, edge_attr)

    def message_and_aggregate(
        self, adj_t: Adj, h: Tensor | PairTensor, edge_attr: OptTensor = None
    ) -> Tensor:
        # Only reached with decompose=True, a one-layer message and sum/mean aggregation:
        # sum_j (A(h_i) + B(h_j) + C(e_ij)) = deg_i A(h_i) + (Adj B(h))_i + sum_j C(e_ij).
        h_src, h_dst = split_parts(h)
        reduce = SIMPLE_AGGRS[self.aggr]
        out, deg = sparse_aggregate(adj_t, h_src, reduce)
        weight = deg if reduce == "sum" else (deg > 0).to(deg.dtype)
        out = out + weight.unsqueeze(-1) * h_dst
        if self.edge_dim is not None and edge_attr is not None and edge_attr.size(0) > 0:
            index = sparse_targets(adj_t)
            out = out + scatter(self.edge_part(edge_attr), index, h_dst.size(0), reduce)
        return out

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", edge_dim={self.edge_dim}, decompose={self.decompose})"
