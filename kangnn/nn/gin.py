"""GIN and GINE with a KAN (or MLP) update."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import Linear
from torch_geometric.typing import Adj, OptTensor

from kangnn.nn.aggr import SIMPLE_AGGRS
from kangnn.nn.base import KANMessagePassing
from kangnn.nn.functions import build_function
from kangnn.nn.sparse import PairTensor, sparse_aggregate


class _GINBase(KANMessagePassing):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        function: str,
        hidden_channels: int | None,
        num_layers: int,
        eps: float,
        train_eps: bool,
        aggr,
        aggr_kwargs: dict | None,
        flow: str,
        **kwargs,
    ) -> None:
        super().__init__(aggr=aggr, aggr_kwargs=aggr_kwargs, flow=flow)
        if not isinstance(in_channels, int):
            raise ValueError(f"{type(self).__name__} takes an int in_channels, got {in_channels!r}")
        if self.aggr_out_channels(in_channels) != in_channels:
            raise ValueError(
                f"{type(self).__name__} adds (1 + eps) * x to the aggregated messages, so the "
                f"aggregation must keep the width {in_channels} (got "
                f"{self.aggr_out_channels(in_channels)}; use MultiAggregation mode 'sum'/'mean')"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.function = function
        self.nn = build_function(
            function, in_channels, out_channels, hidden_channels, num_layers, **kwargs
        )
        self.initial_eps = eps
        if train_eps:
            self.eps = torch.nn.Parameter(torch.empty(1))
        else:
            self.register_buffer("eps", torch.empty(1))

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.nn.reset_parameters()
        self.eps.data.fill_(self.initial_eps)

    def _update(self, out: Tensor, x_dst: Tensor) -> Tensor:
        return self.nn(self._update_input(out, x_dst))

    def _update_input(self, out: Tensor, x_dst: Tensor) -> Tensor:
        return out + (1 + self.eps) * x_dst

    @torch.no_grad()
    def update_grid(
        self, x: Tensor | PairTensor, edge_index: Adj, edge_attr: OptTensor = None, **kwargs
    ) -> None:
        """Fit the KAN grids to the inputs that this batch gives :math:`F` (no-op for an MLP).

        ``kwargs`` go to :meth:`kangnn.kan.KANLinear.update_grid`. Grids and coefficients
        are updated in place (same parameters; an optimizer keeps its state).
        """
        x_src, x_dst, out = self._aggregated(x, edge_index, edge_attr)
        self.nn.update_grid(self._update_input(out, x_dst), **kwargs)


class KANGINConv(_GINBase):
    r"""GIN with a KAN update, from `"How Powerful are Graph Neural Networks?"
    <https://arxiv.org/abs/1810.00826>`_ and `"KAN-based Graph Neural Networks"
    <https://arxiv.org/abs/2406.18380>`_ (KAGIN).

    .. math::
        \mathbf{h}^{\prime}_i = F \left( (1 + \epsilon) \cdot \mathbf{h}_i +
        \sum_{j \in \mathcal{N}(i)} \mathbf{h}_j \right)

    with :math:`F` a KAN (or an MLP). The message is :math:`\mathbf{h}_j` itself, so a sparse
    adjacency (``SparseTensor`` / ``torch.sparse``) runs as one sparse-dense product.

    Args:
        in_channels (int): Input feature width.
        out_channels (int): Output feature width.
        function (str): ``"kan"`` or ``"mlp"``: what :math:`F` is.
        hidden_channels (int, optional): Hidden width of :math:`F` (default ``out_channels``).
        num_layers (int): Number of layers of :math:`F`. (default: ``2``)
        eps (float): (Initial) :math:`\epsilon`. (default: ``0.``)
        train_eps (bool): Make :math:`\epsilon` trainable. (default: ``False``)
        aggr (str or list or Aggregation): The aggregation; its output must keep the width
            ``in_channels``. (default: ``"sum"``)
        aggr_kwargs (dict, optional): Arguments of the aggregation.
        flow (str): ``"source_to_target"`` or ``"target_to_source"``.
        **kwargs: Options of the KAN (``basis``, ``grid_size``, ...) or the MLP (``act``).

    Shapes:
        - **input:**
          node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V}_s|, F_{in}), (|\mathcal{V}_t|, F_{in}))` if bipartite,
          edge indices :math:`(2, |\mathcal{E}|)` (or a sparse adjacency), no edge features
        - **output:** node features :math:`(|\mathcal{V}|, F_{out})` or
          :math:`(|\mathcal{V}_t|, F_{out})` if bipartite
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        function: str = "kan",
        hidden_channels: int | None = None,
        num_layers: int = 2,
        eps: float = 0.0,
        train_eps: bool = False,
        aggr="sum",
        aggr_kwargs: dict | None = None,
        flow: str = "source_to_target",
        **kwargs,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            function,
            hidden_channels,
            num_layers,
            eps,
            train_eps,
            aggr,
            aggr_kwargs,
            flow,
            **kwargs,
        )
        # The fused sparse product serves the sum and the mean.
        self.fuse = self.fuse and SIMPLE_AGGRS.get(self.aggr) in ("sum", "mean")
        self.reset_parameters()

    def forward(
        self, x: Tensor | PairTensor, edge_index: Adj, edge_attr: OptTensor = None
    ) -> Tensor:
        """``edge_attr`` is accepted for a uniform call signature and must be ``None``."""
        x_src, x_dst, out = self._aggregated(x, edge_index, edge_attr)
        return self._update(out, x_dst)

    def _aggregated(self, x, edge_index, edge_attr) -> tuple[Tensor, Tensor, Tensor]:
        if edge_attr is not None:
            raise ValueError(
                "KANGINConv: edge_attr was passed but GIN takes no edge features "
                "(built without edge_dim); use KANGINEConv for edge features"
            )
        x_src, x_dst, _ = self.check_inputs(x, edge_index, None, None)
        out = self.propagate(edge_index, x=(x_src, x_dst), size=(x_src.size(0), x_dst.size(0)))
        return x_src, x_dst, out

    def message(self, x_j: Tensor) -> Tensor:
        return x_j

    def message_and_aggregate(self, adj_t: Adj, x: PairTensor) -> Tensor:
        return sparse_aggregate(adj_t, x[0], SIMPLE_AGGRS[self.aggr])[0]


class KANGINEConv(_GINBase):
    r"""GINE with a KAN update, from `"Strategies for Pre-training Graph Neural Networks"
    <https://arxiv.org/abs/1905.12265>`_.

    .. math::
        \mathbf{h}^{\prime}_i = F \left( (1 + \epsilon) \cdot \mathbf{h}_i +
        \sum_{j \in \mathcal{N}(i)} \mathrm{ReLU}(\mathbf{h}_j + \mathbf{W}\mathbf{e}_{j,i})
        \right)

    with :math:`F` a KAN (or an MLP) and :math:`\mathbf{W}` a linear map of the edge features
    (the identity when ``edge_dim`` is ``None``).

    Args:
        in_channels (int): Input feature width.
        out_channels (int): Output feature width.
        edge_dim (int, optional): Edge feature width. If ``None``, ``edge_attr`` must have
            ``in_channels`` features. Edge features are required.
        function (str): ``"kan"`` or ``"mlp"``: what :math:`F` is.
        hidden_channels (int, optional): Hidden width of :math:`F` (default ``out_channels``).
        num_layers (int): Number of layers of :math:`F`. (default: ``2``)
        eps (float): (Initial) :math:`\epsilon`. (default: ``0.``)
        train_eps (bool): Make :math:`\epsilon` trainable. (default: ``False``)
        aggr (str or list or Aggregation): The aggregation; its output must keep the width
            ``in_channels``. (default: ``"sum"``)
        aggr_kwargs (dict, optional): Arguments of the aggregation.
        flow (str): ``"source_to_target"`` or ``"target_to_source"``.
        **kwargs: Options of the KAN (``basis``, ``grid_size``, ...) or the MLP (``act``).

    Shapes:
        - **input:**
          node features :math:`(|\mathcal{V}|, F_{in})` or
          :math:`((|\mathcal{V}_s|, F_{in}), (|\mathcal{V}_t|, F_{in}))` if bipartite,
          edge indices :math:`(2, |\mathcal{E}|)` (or a sparse adjacency),
          edge features :math:`(|\mathcal{E}|, D)` (``D = edge_dim``, or :math:`F_{in}` without it)
        - **output:** node features :math:`(|\mathcal{V}|, F_{out})` or
          :math:`(|\mathcal{V}_t|, F_{out})` if bipartite
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        edge_dim: int | None = None,
        *,
        function: str = "kan",
        hidden_channels: int | None = None,
        num_layers: int = 2,
        eps: float = 0.0,
        train_eps: bool = False,
        aggr="sum",
        aggr_kwargs: dict | None = None,
        flow: str = "source_to_target",
        **kwargs,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            function,
            hidden_channels,
            num_layers,
            eps,
            train_eps,
            aggr,
            aggr_kwargs,
            flow,
            **kwargs,
        )
        self.edge_dim = edge_dim
        self.lin = Linear(edge_dim, in_channels) if edge_dim is not None else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if getattr(self, "lin", None) is not None:
            self.lin.reset_parameters()

    def forward(
        self, x: Tensor | PairTensor, edge_index: Adj, edge_attr: OptTensor = None
    ) -> Tensor:
        x_src, x_dst, out = self._aggregated(x, edge_index, edge_attr)
        return self._update(out, x_dst)

    def _aggregated(self, x, edge_index, edge_attr) -> tuple[Tensor, Tensor, Tensor]:
        edge_width = self.in_channels if self.edge_dim is None else self.edge_dim
        x_src, x_dst, edge_attr = self.check_inputs(x, edge_index, edge_attr, edge_width)
        out = self.propagate(
            edge_index, x=(x_src, x_dst), edge_attr=edge_attr, size=(x_src.size(0), x_dst.size(0))
        )
        return x_src, x_dst, out

    def message(self, x_j: Tensor, edge_attr: Tensor) -> Tensor:
        if self.lin is not None:
            edge_attr = self.lin(edge_attr)
        return (x_j + edge_attr).relu()
