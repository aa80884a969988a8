"""Directed message passing on bonds (chemprop's D-MPNN) with KAN (or MLP) functions."""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric import EdgeIndex
from torch_geometric.nn.resolver import activation_resolver
from torch_geometric.typing import OptTensor
from torch_geometric.utils import is_torch_sparse_tensor

from kangnn.nn.base import KANMessagePassing
from kangnn.nn.functions import DecomposableFunction, build_function

__all__ = ["KANDMPNNConv", "reverse_edge_index"]


def _edge_str(edge_index: Tensor, e: int) -> str:
    v, w = (int(t) for t in edge_index[:, e])
    return f"edge {e} ({v} -> {w})"


def reverse_edge_index(edge_index: Tensor, num_nodes: int | None = None) -> Tensor:
    """The index of the reverse of every directed edge: ``edge_index[:, rev[e]]`` is
    ``edge_index[:, e]`` flipped.

    When the edges come as consecutive pairs ``(v -> w, w -> v)`` (as :mod:`kangnn.data`, PyG's
    molecule datasets and chemprop build them, and as batching keeps them) the pairs are taken
    as they are; otherwise every edge is matched to its reverse by sorting, which needs the
    directed edges to be unique.

    Parameters
    ----------
    edge_index:
        ``[2, E]`` integer tensor.
    num_nodes:
        Number of nodes (default ``edge_index.max() + 1``).

    Returns
    -------
    Tensor
        ``rev``, long ``[E]``; a self-loop is its own reverse.

    Raises
    ------
    ValueError
        If an edge has no reverse edge, or (outside the paired layout) an edge occurs twice.
    """
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(
            f"edge_index must have shape [2, num_edges], got {tuple(edge_index.shape)}"
        )
    num_edges = edge_index.size(1)
    device = edge_index.device
    if num_edges == 0:
        return torch.empty(0, dtype=torch.long, device=device)
    edge_index = edge_index.long()
    if torch.compiler.is_compiling():
        # No data-dependent branch inside a compiled graph: the paired layout is taken as
        # given and checked on the device (an asynchronous assertion, no host sync).
        if num_edges % 2:
            raise ValueError("a compiled D-MPNN needs edges as (v -> w, w -> v) pairs")
        first, second = edge_index[:, 0::2], edge_index[:, 1::2]
        paired = (first == second.flip(0)).all()
        torch._assert_async(paired, "D-MPNN: edges are not (v -> w, w -> v) pairs")
        return torch.arange(num_edges, device=device).bitwise_xor(1)
    if num_edges % 2 == 0:
        first, second = edge_index[:, 0::2], edge_index[:, 1::2]
        if torch.equal(first, second.flip(0)):
            return torch.arange(num_edges, device=device).bitwise_xor_(1)
    n = int(edge_index.max()) + 1 if num_nodes is None else int(num_nodes)
    src, dst = edge_index
    key, order = torch.sort(src * n + dst)
    same = key[1:] == key[:-1]
    if bool(same.any()):
        e = int(order[1:][same][0])
        raise ValueError(
            f"{_edge_str(edge_index, e)} occurs more than once, so its reverse is ambiguous; "
            "remove duplicate edges (torch_geometric.utils.coalesce) or list each bond as "
            "consecutive (v -> w, w -> v) pairs"
        )
    rev_key = dst * n + src
    pos = torch.searchsorted(key, rev_key).clamp_(max=num_edges - 1)
    found = key[pos] == rev_key
    if not bool(found.all()):
        e = int((~found).nonzero()[0])
        v, w = (int(t) for t in edge_index[:, e])
        raise ValueError(
            f"{_edge_str(edge_index, e)} has no reverse edge ({w} -> {v}); directed bond message "
            "passing needs every bond in both directions (torch_geometric.utils.to_undirected)"
        )
    return order[pos]


class KANDMPNNConv(KANMessagePassing):
    r"""Directed message passing on bonds with KAN (or MLP) functions: chemprop's D-MPNN, from
    `"Analyzing Learned Molecular Representations for Property Prediction"
    <https://doi.org/10.1021/acs.jcim.9b00237>`_.

    Hidden states live on the directed bonds :math:`v \to w`; the message into a bond sums the
    states of the bonds entering its source atom except its own reverse bond:

    .. math::
        \mathbf{a}_{vw} &= F_i\left([\mathbf{x}_v \,\|\, \mathbf{e}_{vw}]\right), \qquad
        \mathbf{h}^{(0)}_{vw} = \tau(\mathbf{a}_{vw}) \\
        \mathbf{m}^{(t)}_{vw} &= \textstyle\sum_{k \in \mathcal{N}(v)} \mathbf{h}^{(t)}_{kv}
        - \mathbf{h}^{(t)}_{wv} \\
        \mathbf{h}^{(t+1)}_{vw} &= \tau\left(\mathbf{a}_{vw} + F_h(\mathbf{m}^{(t)}_{vw})\right),
        \qquad t = 0, \dots, T - 2 \\
        \mathbf{h}^{\prime}_v &= \tau\left(F_o\left([\mathbf{x}_v \,\|\,
        \textstyle\sum_{k \in \mathcal{N}(v)} \mathbf{h}^{(T-1)}_{kv}]\right)\right)

    with :math:`T` = ``depth``, :math:`\tau` the activation (ReLU, as in chemprop) and
    :math:`F_i, F_h, F_o` KANs (or MLPs; attributes ``input_fn``, ``hidden_fn``, ``output_fn``)
    in place of chemprop's :math:`\mathbf{W}_i, \mathbf{W}_h, \mathbf{W}_o`; an atom without
    bonds gets :math:`\tau(F_o([\mathbf{x}_v \| \mathbf{0}]))`. Dropout (if any) follows
    every :math:`\tau` but the first, as in chemprop. The first layer of :math:`F_i` is
    additive over its inputs, so with ``decompose=True`` the atom part runs once per atom and is
    gathered to the bonds leaving it; only the bond part runs once per directed bond.
    (:math:`F_h` takes one input, the message, so nothing of it can run per atom.)

    Every bond must be present in both directions. The reverse of each directed bond is found
    by :func:`reverse_edge_index` (or passed as ``rev_index``).

    Args:
        in_channels (int): Atom feature width.
        out_channels (int): Output atom embedding width.
        edge_dim (int, optional): Bond feature width; ``None`` for a layer without bond features
            (:math:`F_i` then reads :math:`\mathbf{x}_v` alone).
        function (str): ``"kan"`` or ``"mlp"``: what :math:`F_i, F_h, F_o` are.
        hidden_channels (int, optional): Hidden width inside :math:`F_i, F_h, F_o` when
            ``num_layers > 1`` (default ``out_channels``).
        message_channels (int, optional): Width of the bond states :math:`\mathbf{h}_{vw}`
            (default ``out_channels``; chemprop uses one width for both).
        num_layers (int): Number of layers of each of :math:`F_i, F_h, F_o`. (default: ``1``,
            chemprop's single weight matrices)
        depth (int): Number of message-passing steps :math:`T` (chemprop's ``depth``): the bond
            states are updated :math:`T - 1` times. (default: ``3``)
        activation (str): :math:`\tau`, any PyG activation name. (default: ``"relu"``)
        dropout (float): Dropout probability after the updates and the output. (default: ``0``)
        aggr (str): ``"sum"``, the only aggregation the reverse-bond subtraction is defined for
            (kept for a uniform signature). (default: ``"sum"``)
        decompose (bool): Evaluate the atom part of :math:`F_i`'s first layer once per atom
            (``True``) or all of :math:`F_i` once per directed bond (``False``). (default:
            ``True``)
        **kwargs: Options of the KAN (``basis``, ``grid_size``, ...) or the MLP (``act``).

    Shapes:
        - **input:** atom features :math:`(|\mathcal{V}|, F_{in})`, edge indices
          :math:`(2, |\mathcal{E}|)` holding every bond in both directions, bond features
          :math:`(|\mathcal{E}|, D)`, optionally ``rev_index`` :math:`(|\mathcal{E}|)`
        - **output:** atom features :math:`(|\mathcal{V}|, F_{out})`
    """

    #: Decomposed like a message function: its atom part runs once per atom.
    input_fn: DecomposableFunction

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        edge_dim: int | None = None,
        *,
        function: str = "kan",
        hidden_channels: int | None = None,
        message_channels: int | None = None,
        num_layers: int = 1,
        depth: int = 3,
        activation: str = "relu",
        dropout: float = 0.0,
        aggr: str = "sum",
        decompose: bool = True,
        **kwargs,
    ) -> None:
        if aggr not in ("sum", "add"):
            raise ValueError(
                f"KANDMPNNConv: aggr={aggr!r} is not supported; the message into a bond is the "
                "sum over the bonds entering its source atom minus its reverse bond (aggr='sum')"
            )
        super().__init__(aggr="sum")
        if not isinstance(in_channels, int) or not isinstance(out_channels, int):
            raise ValueError(
                f"KANDMPNNConv takes int in_channels and out_channels, got {in_channels!r}, "
                f"{out_channels!r}"
            )
        if int(depth) < 1:
            raise ValueError(f"KANDMPNNConv: depth must be >= 1, got {depth}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"KANDMPNNConv: dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.edge_dim = edge_dim
        self.function = function
        self.depth = int(depth)
        self.decompose = bool(decompose)
        self.dropout = float(dropout)
        msg = out_channels if message_channels is None else message_channels
        hidden = out_channels if hidden_channels is None else hidden_channels
        self.message_channels = msg
        self.activation = activation
        self.act = activation_resolver(activation)
        self.input_fn = build_function(
            function, in_channels + (edge_dim or 0), msg, hidden, num_layers, **kwargs
        )
        self.hidden_fn = build_function(function, msg, msg, hidden, num_layers, **kwargs)
        self.output_fn = build_function(
            function, in_channels + msg, out_channels, hidden, num_layers, **kwargs
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for fn in (self.input_fn, self.hidden_fn, self.output_fn):
            fn.reset_parameters()

    # ------------------------------------------------------------------ the pieces of forward

    def _prepare(
        self, x: Tensor, edge_index: Tensor, edge_attr: OptTensor, rev_index: OptTensor
    ) -> tuple[Tensor, Tensor, OptTensor, Tensor]:
        """Checked ``(x, edge_index, edge_attr, rev_index)``; ``edge_index`` as a plain tensor."""
        name = type(self).__name__
        if not isinstance(edge_index, Tensor) or is_torch_sparse_tensor(edge_index):
            raise ValueError(
                f"{name} needs a [2, num_edges] edge_index tensor (its hidden states live on "
                f"the directed edges), got {type(edge_index).__name__}"
            )
        if not isinstance(x, Tensor):
            raise ValueError(f"{name}: x must be one [num_nodes, features] tensor (no pairs)")
        if isinstance(edge_index, EdgeIndex):
            edge_index = edge_index.as_tensor()
        x, _, edge_attr = self.check_inputs(x, edge_index, edge_attr, self.edge_dim)
        if rev_index is None:
            try:
                rev_index = reverse_edge_index(edge_index, x.size(0))
            except ValueError as err:
                raise ValueError(f"{name}: {err}") from None
        else:
            self._check_rev(edge_index, rev_index)
        return x, edge_index, edge_attr, rev_index

    def _check_rev(self, edge_index: Tensor, rev_index: Tensor) -> None:
        name = type(self).__name__
        num_edges = edge_index.size(1)
        if rev_index.dim() != 1 or rev_index.numel() != num_edges:
            raise ValueError(
                f"{name}: rev_index must have shape [num_edges={num_edges}], "
                f"got {tuple(rev_index.shape)}"
            )
        if num_edges == 0:
            return
        integer = not (rev_index.is_floating_point() or rev_index.dtype == torch.bool)
        if not integer or int(rev_index.min()) < 0 or int(rev_index.max()) >= num_edges:
            raise ValueError(f"{name}: rev_index must hold integer edge ids in [0, {num_edges})")
        bad = (edge_index[:, rev_index] != edge_index.flip(0)).any(0)
        if bool(bad.any()):
            e = int(bad.nonzero()[0])
            raise ValueError(
                f"{name}: rev_index[{e}] = {int(rev_index[e])} is not the reverse of "
                f"{_edge_str(edge_index, e)}"
            )

    def _input(self, x: Tensor, edge_index: Tensor, edge_attr: OptTensor) -> Tensor:
        r""":math:`\mathbf{a}_{vw} = F_i([\mathbf{x}_v \| \mathbf{e}_{vw}])` for every bond."""
        src = edge_index[0]
        fn = self.input_fn
        if self.decompose:
            y = fn.partial(x, 0, bias=True).index_select(0, src)
            if edge_attr is not None:
                y = y + fn.partial(edge_attr, self.in_channels)
            return fn.rest(y)
        z = x.index_select(0, src)
        return fn(z if edge_attr is None else torch.cat([z, edge_attr], dim=-1))

    def _bond_message(self, h: Tensor, edge_index: Tensor, rev_index: Tensor, n: int) -> Tensor:
        r""":math:`\mathbf{m}_{vw} = \sum_k \mathbf{h}_{kv} - \mathbf{h}_{wv}` for every bond."""
        into = self.propagate(edge_index, h=h, size=(n, n))
        return into.index_select(0, edge_index[0]) - h.index_select(0, rev_index)

    def _drop(self, h: Tensor) -> Tensor:
        return torch.nn.functional.dropout(h, self.dropout, self.training)

    def _states(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: OptTensor,
        rev_index: Tensor,
        keep: list[Tensor] | None = None,
    ) -> Tensor:
        """The final bond states :math:`\\mathbf{h}^{(T-1)}`; ``keep`` collects the messages."""
        n = x.size(0)
        a = self._input(x, edge_index, edge_attr)
        h = self.act(a)
        for _ in range(self.depth - 1):
            m = self._bond_message(h, edge_index, rev_index, n)
            if keep is not None:
                keep.append(m)
            h = self._drop(self.act(a + self.hidden_fn(m)))
        return h

    def message(self, h: Tensor) -> Tensor:
        """A bond's message to its target atom is its hidden state."""
        return h

    # ------------------------------------------------------------------------------ public

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: OptTensor = None,
        rev_index: OptTensor = None,
    ) -> Tensor:
        """Atom embeddings ``[num_nodes, out_channels]``.

        ``rev_index`` (``[num_edges]``, optional) is the index of each edge's reverse; without
        it :func:`reverse_edge_index` finds it (cheaply when the bonds come in pairs).
        """
        x, edge_index, edge_attr, rev_index = self._prepare(x, edge_index, edge_attr, rev_index)
        return self._output(x, edge_index, self._states(x, edge_index, edge_attr, rev_index))

    def _output(self, x: Tensor, edge_index: Tensor, h: Tensor) -> Tensor:
        n = x.size(0)
        m = self.propagate(edge_index, h=h, size=(n, n))
        return self._drop(self.act(self.output_fn(torch.cat([x, m], dim=-1))))

    def bond_states(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: OptTensor = None,
        rev_index: OptTensor = None,
    ) -> Tensor:
        r"""The final hidden states :math:`\mathbf{h}^{(T-1)}_{vw}` of the directed bonds,
        ``[num_edges, message_channels]``, in the order of ``edge_index``."""
        x, edge_index, edge_attr, rev_index = self._prepare(x, edge_index, edge_attr, rev_index)
        return self._states(x, edge_index, edge_attr, rev_index)

    def aggregated_messages(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: OptTensor = None,
        rev_index: OptTensor = None,
    ) -> Tensor:
        r"""The message half of ``forward``: :math:`\sum_{k} \mathbf{h}^{(T-1)}_{kv}` for every
        atom, ``[num_nodes, message_channels]``, before :math:`F_o`."""
        x, edge_index, edge_attr, rev_index = self._prepare(x, edge_index, edge_attr, rev_index)
        h = self._states(x, edge_index, edge_attr, rev_index)
        return self.propagate(edge_index, h=h, size=(x.size(0), x.size(0)))

    @torch.no_grad()
    def update_grid(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: OptTensor = None,
        rev_index: OptTensor = None,
        **kwargs,
    ) -> None:
        """Fit the KAN grids to the inputs this batch gives :math:`F_i`, :math:`F_h` (its
        messages of every step) and :math:`F_o`, in that order (a no-op for an MLP).

        ``kwargs`` go to :meth:`kangnn.kan.KANLinear.update_grid`. The spline parameters are
        replaced, so build the optimizer again afterwards.
        """
        x, edge_index, edge_attr, rev_index = self._prepare(x, edge_index, edge_attr, rev_index)
        if edge_index.size(1) > 0:
            z = x.index_select(0, edge_index[0])
            self.input_fn.update_grid(
                z if edge_attr is None else torch.cat([z, edge_attr], -1), **kwargs
            )
            messages: list[Tensor] = []
            self._states(x, edge_index, edge_attr, rev_index, keep=messages)
            if messages:
                self.hidden_fn.update_grid(torch.cat(messages), **kwargs)
        h = self._states(x, edge_index, edge_attr, rev_index)
        n = x.size(0)
        m = self.propagate(edge_index, h=h, size=(n, n))
        self.output_fn.update_grid(torch.cat([x, m], dim=-1), **kwargs)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.in_channels}, {self.out_channels}, "
            f"edge_dim={self.edge_dim}, function={self.function!r}, depth={self.depth}, "
            f"decompose={self.decompose})"
        )
