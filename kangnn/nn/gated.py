"""Gated messages (CGConv / GatedGCN design) with KAN gate and value functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Linear
from torch_geometric.typing import Adj, OptTensor

from kangnn.nn.base import KANMessagePassing
from kangnn.nn.checks import _pair
from kangnn.nn.functions import build_function
from kangnn.nn.sparse import PairTensor


class KANGatedConv(KANMessagePassing):
    r"""Gated message passing with KAN gate and value functions, after CGConv (`"Crystal Graph
    Convolutional Neural Networks" <https://arxiv.org/abs/1710.10324>`_) and GatedGCN.

    .. math::
        \mathbf{z}_{ij} &= [\mathbf{h}_i \,\|\, \mathbf{h}_j \,\|\, \mathbf{e}_{ij}] \\
        \mathbf{m}_{ij} &= \sigma\left(F_g(\mathbf{z}_{ij})\right) \odot F_v(\mathbf{z}_{ij}) \\
        \mathbf{h}^{\prime}_i &= \mathbf{R}\mathbf{h}_i +
        \mathbf{P} \textstyle\bigoplus_{j \in \mathcal{N}(i)} \mathbf{m}_{ij}

    with :math:`[F_v \| F_g]` one KAN (or MLP) ``message_fn`` with ``2 * out_channels`` outputs
    (with one layer, the default, these are two independent functions; deeper ones share their
    hidden layers), :math:`\mathbf{R}` the identity (a linear map when ``out_channels`` differs
    from the target width) and :math:`\mathbf{P}` the identity (a linear map when the
    aggregation changes the width, e.g. a concatenating multi-aggregation). The first layer is
    additive over the parts of :math:`\mathbf{z}_{ij}`; with ``decompose=True`` the node parts
    run once per node and are gathered to the edges.

    Args:
        in_channels (int or tuple): Input feature width, or ``(source, target)`` widths.
        out_channels (int, optional): Output feature width (default: the target width).
        edge_dim (int, optional): Edge feature width; ``None`` for a layer without edge features.
        function (str): ``"kan"`` or ``"mlp"``: what :math:`F_g` and :math:`F_v` are.
        hidden_channels (int, optional): Hidden width of ``message_fn`` when ``num_layers > 1``
            (default ``out_channels``).
        num_layers (int): Number of layers of ``message_fn``. (default: ``1``: a KAN layer is
            already a learnable non-linear map, and all of it but the edge part then runs once
            per node)
        aggr (str or list or Aggregation): The aggregation. (default: ``"sum"``)
        aggr_kwargs (dict, optional): Arguments of the aggregation.
        decompose (bool): Evaluate the node parts of the first layers once per node (``True``)
            or the whole of :math:`F_g, F_v` once per edge (``False``). (default: ``True``)
        flow (str): ``"source_to_target"`` or ``"target_to_source"``.
        **kwargs: Options of the KAN (``basis``, ``grid_size``, ...) or the MLP (``act``).

    Shapes:
        - **input:**
          node features :math:`(|\mathcal{V}|, F)` or
          :math:`((|\mathcal{V}_s|, F_s), (|\mathcal{V}_t|, F_t))` if bipartite,
          edge indices :math:`(2, |\mathcal{E}|)` (or a sparse adjacency),
          edge features :math:`(|\mathcal{E}|, D)` when built with ``edge_dim=D``
        - **output:** node features :math:`(|\mathcal{V}|, F_{out})` or
          :math:`(|\mathcal{V}_t|, F_{out})` if bipartite; :math:`F_{out}` is :math:`F`
          (:math:`F_t`) unless ``out_channels`` is given
    """

    def __init__(
        self,
        in_channels: int | tuple[int, int],
        out_channels: int | None = None,
        edge_dim: int | None = None,
        *,
        function: str = "kan",
        hidden_channels: int | None = None,
        num_layers: int = 1,
        aggr="sum",
        aggr_kwargs: dict | None = None,
        decompose: bool = True,
        flow: str = "source_to_target",
        **kwargs,
    ) -> None:
        super().__init__(aggr=aggr, aggr_kwargs=aggr_kwargs, flow=flow)
        in_src, in_dst = _pair(in_channels)
        out_channels = in_dst if out_channels is None else out_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.edge_dim = edge_dim
        self.function = function
        self.decompose = decompose
        self._in_src, self._in_dst = in_src, in_dst
        z = in_dst + in_src + (edge_dim or 0)
        # One function with the value and gate side by side: each output of a KAN (or linear)
        # layer has its own weights, so with one layer this is exactly two functions F_g, F_v,
        # evaluated with one basis expansion and one gather per endpoint instead of two.
        self.message_fn = build_function(
            function, z, 2 * out_channels, hidden_channels, num_layers, **kwargs
        )
        self.lin_root = Linear(in_dst, out_channels, bias=False) if in_dst != out_channels else None
        agg = self.aggr_out_channels(out_channels)
        self.lin_aggr = Linear(agg, out_channels) if agg != out_channels else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.message_fn.reset_parameters()
        for lin in (self.lin_root, self.lin_aggr):
            if lin is not None:
                lin.reset_parameters()

    def forward(
        self, x: Tensor | PairTensor, edge_index: Adj, edge_attr: OptTensor = None
    ) -> Tensor:
        _, x_dst, out = self._aggregated(x, edge_index, edge_attr)
        if self.lin_aggr is not None:
            out = self.lin_aggr(out)
        root = x_dst if self.lin_root is None else self.lin_root(x_dst)
        return root + out

    @torch.no_grad()
    def update_grid(
        self, x: Tensor | PairTensor, edge_index: Adj, edge_attr: OptTensor = None, **kwargs
    ) -> None:
        r"""Fit the KAN grids to the inputs :math:`\mathbf{z}_{ij}` of this batch.

        A no-op for ``function="mlp"``. ``kwargs`` go to
        :meth:`kangnn.kan.KANLinear.update_grid`. Grids and coefficients are updated in
        place (same parameters; an optimizer keeps its state). Needs a ``[2, E]`` ``edge_index``.
        """
        x_src, x_dst, edge_attr = self.check_inputs(x, edge_index, edge_attr, self.edge_dim)
        z = self.edge_inputs(x_src, x_dst, edge_index, edge_attr)
        if z.size(0) > 0:
            self.message_fn.update_grid(z, **kwargs)

    def message(
        self,
        h: Tensor | PairTensor,
        edge_index_i: Tensor,
        edge_index_j: Tensor,
        edge_attr: OptTensor = None,
    ) -> Tensor:
        out = self.edge_message(h, edge_index_i, edge_index_j, edge_attr)
        return F.glu(out, dim=-1)  # value * sigmoid(gate), one fused kernel each way

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", edge_dim={self.edge_dim}, decompose={self.decompose})"
