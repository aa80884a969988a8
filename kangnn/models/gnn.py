"""The molecule GNN shared by every KAN model and its MLP baseline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool

from kangnn.models.descriptors import QuantileNormal
from kangnn.nn import (
    KANDMPNNConv,
    KANGatedConv,
    KANGINConv,
    KANGINEConv,
    KANMPNNConv,
    build_function,
)
from kangnn.nn.functions import FUNCTIONS, KAN_OPTIONS, regularization_loss

__all__ = ["CONV_REGISTRY", "READOUTS", "FeatureEncoder", "MoleculeGNN"]

#: The message-passing layers a :class:`MoleculeGNN` can stack, by name.
CONV_REGISTRY: dict[str, type[nn.Module]] = {
    "gin": KANGINConv,
    "gine": KANGINEConv,
    "mpnn": KANMPNNConv,
    "gated": KANGatedConv,
    "dmpnn": KANDMPNNConv,
}
#: Convs that use bond features.
EDGE_CONVS = frozenset({"gine", "mpnn", "gated", "dmpnn"})
READOUTS = {"sum": global_add_pool, "mean": global_mean_pool, "max": global_max_pool}


class FeatureEncoder(nn.Module):
    """Embed each categorical feature column and sum the embeddings (OGB's AtomEncoder).

    Parameters
    ----------
    feature_dims:
        Cardinality of each column of the long feature matrix.
    out_channels:
        Embedding width.
    """

    def __init__(self, feature_dims: Sequence[int], out_channels: int) -> None:
        super().__init__()
        self.feature_dims = list(feature_dims)
        self.embeddings = nn.ModuleList(nn.Embedding(d, out_channels) for d in self.feature_dims)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for emb in self.embeddings:
            nn.init.xavier_uniform_(emb.weight)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` long ``[N, len(feature_dims)]`` → ``[N, out_channels]``."""
        if x.dim() != 2 or x.size(1) != len(self.embeddings):
            raise ValueError(
                f"expected a long feature matrix with {len(self.embeddings)} columns, "
                f"got shape {tuple(x.shape)}"
            )
        out = self.embeddings[0](x[:, 0])
        for i in range(1, len(self.embeddings)):
            out = out + self.embeddings[i](x[:, i])
        return out


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(channels)
    if kind == "layer":
        return nn.LayerNorm(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; valid: batch, layer, none")


class MoleculeGNN(nn.Module):
    r"""Atom/bond encoders → L residual message-passing layers → readout → head.

    With ``num_descriptors > 0`` the head also sees each molecule's descriptors
    (``data.descriptors`` ``[num_graphs, D]``, :mod:`kangnn.data.descriptors`) as normal scores
    (:class:`~kangnn.models.descriptors.QuantileNormal`, fitted by :meth:`fit_descriptors`),
    concatenated to the normalised graph embedding, as chemprop's extra molecule features are.

    Each layer is pre-normalised, ``h ← h + dropout(conv(norm(h)))``, so every KAN function sees
    standardised inputs (B-spline grids cover ``[-1, 1]``); the pooled graph embedding is
    normalised again before the head. ``function`` (``"kan"`` or ``"mlp"``) sets the learnable
    functions of every conv (message and update) and of the head alike, so a KAN model and its
    MLP baseline differ in those functions only.

    Parameters
    ----------
    atom_feature_dims, bond_feature_dims:
        Categorical cardinalities of the atom and bond feature columns
        (:func:`kangnn.data.feature_dims`).
    num_tasks:
        Number of outputs.
    conv:
        ``"gin"``, ``"gine"``, ``"mpnn"``, ``"gated"`` or ``"dmpnn"`` (see
        :data:`CONV_REGISTRY`). ``"dmpnn"`` is chemprop's directed bond message passing: one
        :class:`~kangnn.nn.KANDMPNNConv` whose ``depth`` is ``num_layers`` (chemprop's depth)
        instead of a stack of layers, in the same residual block as the others. (Without the
        residual, an output channel that ReLU keeps at zero on the training molecules has a
        near-zero batch-norm variance, and a test molecule that switches it on is scaled up by
        orders of magnitude.)
    function:
        ``"kan"`` or ``"mlp"``.
    hidden_channels:
        Node (and bond) embedding width, kept by every layer.
    num_layers:
        Number of message-passing layers (for ``"dmpnn"``: message-passing steps).
    readout:
        ``"sum"``, ``"mean"`` or ``"max"`` pooling of the node embeddings.
    dropout:
        Dropout on each layer's residual branch and before the head.
    norm:
        ``"batch"``, ``"layer"`` or ``"none"``.
    function_hidden_channels:
        Hidden width inside each message/update/head function (default ``hidden_channels``).
        This is the width parameter matching changes for the MLP baseline.
    function_layers:
        Number of layers of each function (>= 2 for parameter matching to have a width to set).
    aggr:
        Neighbourhood aggregation of the convs.
    num_descriptors:
        Width ``D`` of ``data.descriptors`` (0: the head sees the graph embedding only).
    **kan_options:
        KAN options (``grid_size``, ``spline_order``, ``basis``, ``grid_range``, and
        ``layer_norm`` inside each KAN function, see :class:`~kangnn.nn.KANFunction`); ignored
        for ``"mlp"``.

    Examples
    --------
    >>> from kangnn.data import feature_dims
    >>> atom_dims, bond_dims = feature_dims("ogb")
    >>> model = MoleculeGNN(atom_dims, bond_dims, num_tasks=1, conv="gine", function="kan")
    >>> out = model(batch)  # [num_graphs, 1]
    """

    def __init__(
        self,
        atom_feature_dims: Sequence[int],
        bond_feature_dims: Sequence[int],
        num_tasks: int,
        conv: str = "gin",
        function: str = "kan",
        hidden_channels: int = 64,
        num_layers: int = 3,
        readout: str = "sum",
        dropout: float = 0.0,
        norm: str = "batch",
        function_hidden_channels: int | None = None,
        function_layers: int = 2,
        aggr: str = "sum",
        num_descriptors: int = 0,
        **kan_options: Any,
    ) -> None:
        super().__init__()
        if conv not in CONV_REGISTRY:
            raise ValueError(f"unknown conv {conv!r}; valid: {', '.join(CONV_REGISTRY)}")
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; valid: {', '.join(READOUTS)}")
        if function not in FUNCTIONS:
            raise ValueError(f"unknown function {function!r}; valid: {', '.join(FUNCTIONS)}")
        unknown = sorted(set(kan_options) - set(KAN_OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(unknown)}; valid: {', '.join(KAN_OPTIONS)}"
            )
        self.conv_name = conv
        self.function = function
        self.hidden_channels = hidden_channels
        self.function_hidden_channels = function_hidden_channels or hidden_channels
        self.num_tasks = num_tasks
        self.readout = readout
        self.dropout = dropout
        fkw: dict[str, Any] = dict(kan_options) if function == "kan" else {}
        width = self.function_hidden_channels

        self.atom_encoder = FeatureEncoder(atom_feature_dims, hidden_channels)
        uses_edges = conv in EDGE_CONVS
        self.bond_encoder = (
            FeatureEncoder(bond_feature_dims, hidden_channels) if uses_edges else None
        )
        # A D-MPNN is one module with num_layers internal steps, as in chemprop.
        stacked = 1 if conv == "dmpnn" else num_layers
        self.norms = nn.ModuleList(_norm(norm, hidden_channels) for _ in range(stacked))
        self.convs = nn.ModuleList(
            self._make_conv(
                conv, function, hidden_channels, width, function_layers, aggr, fkw, num_layers
            )
            for _ in range(stacked)
        )
        self.out_norm = _norm(norm, hidden_channels)
        self.graph_norm = _norm(norm, hidden_channels)
        self.num_descriptors = int(num_descriptors)
        self.descriptor_norm = (
            QuantileNormal(self.num_descriptors) if self.num_descriptors > 0 else None
        )
        self.head = build_function(
            function,
            hidden_channels + self.num_descriptors,
            num_tasks,
            hidden_channels=width,
            num_layers=function_layers,
            **fkw,
        )

    @staticmethod
    def _make_conv(
        conv: str,
        function: str,
        h: int,
        width: int,
        layers: int,
        aggr: str,
        fkw: dict[str, Any],
        depth: int = 1,
    ) -> nn.Module:
        kwargs: dict[str, Any] = dict(function=function, hidden_channels=width, aggr=aggr, **fkw)
        if conv in EDGE_CONVS:
            kwargs["edge_dim"] = h
        if conv == "mpnn":
            # Messages keep the node width so that only the functions' hidden widths differ
            # between a KAN model and its baseline.
            kwargs.update(message_channels=h, message_layers=layers, update_layers=layers)
        else:
            kwargs["num_layers"] = layers
        if conv == "dmpnn":
            # Bond states keep the node width (chemprop: one hidden width d_h throughout).
            kwargs.update(message_channels=h, depth=depth)
        return CONV_REGISTRY[conv](h, h, **kwargs)

    def reset_parameters(self) -> None:
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def node_embeddings(self, data: Any) -> Tensor:
        """Node embeddings after the last layer, ``[num_nodes, hidden_channels]``."""
        x = self.atom_encoder(data.x)
        edge_attr = None
        if self.bond_encoder is not None:
            edge_attr = self.bond_encoder(data.edge_attr)
        for norm, conv in zip(self.norms, self.convs, strict=True):
            h = conv(norm(x), data.edge_index, edge_attr)
            x = x + nn.functional.dropout(h, self.dropout, self.training)
        return self.out_norm(x)

    def forward(self, data: Any) -> Tensor:
        """Predictions ``[num_graphs, num_tasks]`` (logits for classification) for a ``Batch``."""
        x = self.node_embeddings(data)
        batch = getattr(data, "batch", None)
        if batch is None:
            batch = torch.zeros(x.size(0), dtype=torch.long, device=x.device)
        num_graphs = getattr(data, "num_graphs", None)
        if num_graphs is None:
            num_graphs = int(batch.max()) + 1 if batch.numel() else 1
        g = READOUTS[self.readout](x, batch, size=num_graphs)
        g = self.graph_norm(g)
        if self.descriptor_norm is not None:
            g = torch.cat([g, self.descriptor_norm(self._descriptors(data))], dim=-1)
        g = nn.functional.dropout(g, self.dropout, self.training)
        return self.head(g)

    def _descriptors(self, data: Any) -> Tensor:
        d = getattr(data, "descriptors", None)
        if d is None:
            raise ValueError(
                f"the model was built with num_descriptors={self.num_descriptors} but the batch "
                "has no `descriptors` (kangnn.data.descriptors.add_descriptors)"
            )
        return d.view(-1, self.num_descriptors).float()

    @torch.no_grad()
    def fit_descriptors(self, descriptors: Tensor) -> None:
        """Fit the descriptor normalisation on the training molecules' ``[N, D]`` descriptors."""
        if self.descriptor_norm is None:
            raise ValueError("the model has no descriptor input (num_descriptors=0)")
        self.descriptor_norm.fit(descriptors)

    @torch.no_grad()
    def init_grids(self, data: Any, **update_grid_kwargs: Any) -> int:
        """Fit the grid of every KAN layer to the inputs it sees on ``data`` (a ``Batch``).

        A data-dependent initialisation: sum aggregation (GIN, GINE) hands the update function
        inputs with a spread of about 2, so on the default ``[-1, 1]`` grid most of them would
        fall where the splines fade out. This is :func:`kangnn.kan.fit_grids` on one forward
        pass, first (decomposed) message layers included; by default the coefficients stay as
        initialised (``refit=False``: a random spline is as random on any range), so parameters
        are the same objects. ``update_grid_kwargs`` go to :meth:`KANLinear.update_grid`.

        Returns
        -------
        int
            The number of KAN layers fitted (0 for an MLP model).
        """
        from kangnn.kan import fit_grids

        update_grid_kwargs.setdefault("refit", False)
        return fit_grids(self, lambda: self(data), **update_grid_kwargs)

    def regularization_loss(self) -> Tensor:
        """Sum of the KAN regularisers of every KAN function (zero for an MLP model)."""
        return regularization_loss(self)
