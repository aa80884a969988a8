r"""Importance scores of a KAN's edges, hidden units and inputs, and pruning by them.

The scores are pykan's attribution scores (``KAN.attribute``). On data ``x`` let
:math:`x^{(l)}` be the input of layer ``l`` and :math:`\phi^{(l)}_{q,p}(x^{(l)}_p)` the value of its
edge ``p -> q``. With ``method="std"`` (default) the *scale* of an edge is the standard deviation
over the data of its output, and the scale of a node the standard deviation of the node's value
:math:`y^{(l)}_q = \sum_p \phi^{(l)}_{q,p}`. Scores run backwards from the outputs, which score 1:

.. math::
    E^{(l)}_{q,p} = \mathrm{sc}(\phi^{(l)}_{q,p}) \, \frac{s^{(l+1)}_q}{\mathrm{sc}(y^{(l)}_q)},
    \qquad s^{(l)}_p = \sum_q E^{(l)}_{q,p},

(:math:`\mathrm{sc}` the scale), so an edge's score is its share of the spread of the node it
feeds, times that node's score, and a node's score (an input's at ``l = 0``) is the sum of the
scores of its outgoing edges. ``method="mean_abs"`` uses the mean absolute value instead of the
standard deviation (pykan's older choice; it counts a constant edge as important). Under
``"std"`` an edge that is constant on the data scores 0: it only shifts its node, and
:func:`prune` folds that shift into a kept edge.

The scores cannot see cancellation: an input spread over several hidden units whose
contributions cancel downstream still scores high. Train with :func:`sparsity_loss` (pykan's
regulariser) for unused inputs and units to become prunable.

A KAN with a ``LayerNorm`` on the input of every layer after the first
(:class:`~kangnn.nn.KANFunction` with ``layer_norm=True``) is handled too: each layer's edges
are evaluated on its normalised input, a hidden unit's scale is that of its value before the
norm, and a score passes through the norm unchanged. Its hidden units are never pruned, since the
norm's mean and variance are taken over all of them; only its inputs are.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kangnn.kan.basis import BASES
from kangnn.kan.linear import _ACTIVATIONS, KAN, KANLinear

__all__ = ["KANImportance", "importance", "layer_inputs", "layer_norms", "prune", "sparsity_loss"]

METHODS = ("std", "mean_abs")


@dataclass
class KANImportance:
    """Importance scores of a :class:`~kangnn.kan.KAN` on some data (see the module docstring).

    Attributes
    ----------
    edge_scale:
        Per layer, ``[out, in]``: the scale (std or mean ``|.|``) of each edge's output.
    node_scale:
        Per layer, ``[out]``: the scale of each output node of the layer.
    edge_scores:
        Per layer, ``[out, in]``: the attribution score of each edge.
    node_scores:
        ``len(layers) + 1`` tensors: the scores of the inputs, of each hidden layer's units and of
        the outputs (all 1).
    method:
        ``"std"`` or ``"mean_abs"``.
    """

    edge_scale: list[Tensor]
    node_scale: list[Tensor]
    edge_scores: list[Tensor]
    node_scores: list[Tensor]
    method: str

    @property
    def inputs(self) -> Tensor:
        """Scores of the inputs, ``[in_features]``."""
        return self.node_scores[0]

    @property
    def hidden(self) -> list[Tensor]:
        """Scores of the units of each hidden layer."""
        return self.node_scores[1:-1]


def _layers(kan: KAN | KANLinear) -> list[KANLinear]:
    if isinstance(kan, KANLinear):
        return [kan]
    layers = list(getattr(kan, "layers", []))
    if not layers or not all(isinstance(m, KANLinear) for m in layers):
        raise TypeError(f"expected a KAN or KANLinear, got {type(kan).__name__}")
    return layers


def layer_norms(kan: KAN | KANLinear) -> list[nn.Module | None]:
    """Per layer, the ``LayerNorm`` applied to its input (``None``: none, always for the first)."""
    layers = _layers(kan)
    norms = list(getattr(kan, "norms", [])) if getattr(kan, "layer_norm", False) else []
    if not norms:
        return [None] * len(layers)
    if len(norms) != len(layers) - 1:
        raise TypeError(f"expected {len(layers) - 1} norms between the layers, got {len(norms)}")
    return [None, *norms]


def _check_input(layers: list[KANLinear], x: Tensor) -> Tensor:
    first = layers[0]
    if x.dim() < 2 or x.shape[-1] != first.in_features:
        raise ValueError(
            f"expected data of shape [N, {first.in_features}] for the KAN, got {tuple(x.shape)}"
        )
    x = x.reshape(-1, first.in_features)
    if x.shape[0] < 2:
        raise ValueError(f"importance needs at least 2 samples, got {x.shape[0]}")
    if not torch.isfinite(x).all():
        raise ValueError("the data for the KAN contain NaN or inf")
    return x.detach().to(first.base_weight)


@torch.no_grad()
def _trace(kan: KAN | KANLinear, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Each layer's input (after its norm, if any) and each layer's output on ``x``."""
    layers = _layers(kan)
    h = _check_input(layers, x)
    inputs, outputs = [], []
    for layer, norm in zip(layers, layer_norms(kan), strict=True):
        if norm is not None:
            h = norm(h)
        inputs.append(h)
        h = layer(h)
        outputs.append(h)
    return inputs, outputs


def layer_inputs(kan: KAN | KANLinear, x: Tensor) -> list[Tensor]:
    """The input of every layer on ``x`` (after its ``LayerNorm``, where there is one) and,
    last, the output: ``len(layers) + 1`` tensors."""
    inputs, outputs = _trace(kan, x)
    return [*inputs, outputs[-1]]


@torch.no_grad()
def edge_values(layer: KANLinear, x: Tensor, p: int) -> Tensor:
    r"""``[N, out]``: :math:`\phi_{q,p}(x_p)` for every output ``q`` at the rows of ``x``.

    The layer's own evaluation (:meth:`KANLinear.partial` of one input column), not a copy of it.
    """
    return layer.partial(x[:, p : p + 1], p)


def _scale(v: Tensor, method: str) -> Tensor:
    v = v.double()
    return v.std(0, unbiased=False) if method == "std" else v.abs().mean(0)


@torch.no_grad()
def importance(
    kan: KAN | KANLinear, x: Tensor, method: str = "std", out_scores: Tensor | None = None
) -> KANImportance:
    """pykan's attribution scores of every edge, hidden unit and input of ``kan`` on data ``x``.

    Parameters
    ----------
    kan:
        A :class:`~kangnn.kan.KAN` (or a single :class:`~kangnn.kan.KANLinear`).
    x:
        Data ``[N, in_features]`` (``N >= 2``), e.g. the training inputs.
    method:
        ``"std"`` (default) or ``"mean_abs"``: the scale of a function's output over the data.
    out_scores:
        Scores of the outputs (default all 1).

    Returns
    -------
    KANImportance
        ``.inputs`` are the input scores; ``.edge_scores[l][q, p]`` those of edge ``p -> q``.

    Examples
    --------
    >>> kan = KAN([3, 4, 1])
    >>> x = torch.rand(1000, 3) * 2 - 1
    >>> importance(kan, x).inputs  # [3]
    """
    if method not in METHODS:
        raise ValueError(f"unknown importance method {method!r}; valid: {', '.join(METHODS)}")
    layers = _layers(kan)
    inputs, outputs = _trace(kan, x)
    edge_scale, node_scale = [], []
    for layer, h, y in zip(layers, inputs, outputs, strict=True):
        scale = torch.stack([_scale(edge_values(layer, h, p), method) for p in range(h.shape[1])])
        edge_scale.append(scale.t().contiguous())  # [out, in]
        node_scale.append(_scale(y, method))
    n_out = layers[-1].out_features
    if out_scores is None:
        score = torch.ones(n_out, dtype=torch.float64)
    else:
        score = torch.as_tensor(out_scores, dtype=torch.float64).reshape(-1)
        if score.numel() != n_out:
            raise ValueError(f"out_scores needs {n_out} values, got {score.numel()}")
    node_scores = [score]
    edge_scores: list[Tensor] = []
    for es, ns in zip(reversed(edge_scale), reversed(node_scale), strict=True):
        # A relative floor keeps a constant node (scale 0) from dividing by zero without
        # changing the shares of nodes that vary.
        floor = 1e-4 * float(ns.max()) + torch.finfo(torch.float64).tiny
        e = es * (node_scores[0] / (ns + floor))[:, None]
        edge_scores.insert(0, e)
        node_scores.insert(0, e.sum(0))
    return KANImportance(
        edge_scale=[t.float() for t in edge_scale],
        node_scale=[t.float() for t in node_scale],
        edge_scores=[t.float() for t in edge_scores],
        node_scores=[t.float() for t in node_scores],
        method=method,
    )


def sparsity_loss(kan: KAN | KANLinear, x: Tensor, l1: float = 1.0, entropy: float = 2.0) -> Tensor:
    r"""pykan's sparsity regulariser on the edge functions' outputs on a batch ``x``.

    For each layer, with :math:`s_{q,p}` the mean of :math:`|\phi_{q,p}(x_p)|` over the batch:
    ``l1 * sum(s) + entropy * (H_rows + H_cols)``, where ``H_rows`` is the mean over outputs of
    the entropy of ``s[q, :] / (sum_p s[q, p] + 1)`` and ``H_cols`` the same over inputs. Add
    ``lambda * sparsity_loss(kan, x)`` to the training loss (pykan uses ``lambda`` about
    ``1e-2``): unused edges shrink to zero, so :func:`importance` scores their inputs near 0
    and :func:`prune` drops them. Without it a KAN may spread an input over several hidden
    units whose contributions cancel, which attribution scores cannot tell from real use.

    Unlike :meth:`KAN.regularization_loss` (computed from the weights alone) it evaluates every
    edge on the batch, ``[N, out, in]`` values per layer: meant for small KANs. Each layer's
    input is detached: the penalty of a layer moves that layer's weights only.
    """
    layers = _layers(kan)
    h = x.reshape(-1, layers[0].in_features)
    total = h.new_zeros(())
    for layer in layers:
        # Each layer's input is taken as given: the penalty moves the layer's own weights.
        hd = h.detach()
        spline = torch.einsum("npk,qpk->nqp", layer.basis.expand(hd), layer.spline_weight)
        base = _ACTIVATIONS[layer.base_activation](hd)[:, None, :] * layer.base_weight
        s = (spline + base).abs().mean(0)  # [out, in]
        ent = 0.0
        for dim in (1, 0):
            p = s / (s.sum(dim, keepdim=True) + 1.0)
            ent = ent - (p * torch.log2(p + 1e-4)).sum(dim).mean()
        total = total + l1 * s.sum() + entropy * ent
        h = layer(h)
    return total


def _basis_name(layer: KANLinear) -> str:
    for name, cls in BASES.items():
        if type(layer.basis) is cls:
            return name
    raise TypeError(f"cannot prune a layer with a custom basis {type(layer.basis).__name__}")


def _sliced_layer(layer: KANLinear, rows: list[int], cols: list[int]) -> KANLinear:
    """A new layer of the same kind computing edges ``cols -> rows`` of ``layer`` exactly."""
    kwargs = {}
    if hasattr(layer.basis, "order"):
        kwargs["spline_order"] = layer.basis.order
    new = KANLinear(
        len(cols),
        len(rows),
        basis=_basis_name(layer),
        grid_size=layer.basis.grid_size,
        base_activation=layer.base_activation,
        spline_scale=layer.spline_scale,
        **kwargs,
    ).to(layer.base_weight)
    r = torch.tensor(rows, dtype=torch.long, device=layer.base_weight.device)
    c = torch.tensor(cols, dtype=torch.long, device=layer.base_weight.device)
    with torch.no_grad():
        new.base_weight.copy_(layer.base_weight[r][:, c])
        new.spline_weight.copy_(layer.spline_weight[r][:, c])
        new.basis.lo.copy_(layer.basis.lo[c])
        new.basis.h.copy_(layer.basis.h[c])
    return new


@torch.no_grad()
def _fold_constant(layer: KANLinear, x: Tensor, const: Tensor) -> None:
    """Add ``const[q]`` to output ``q`` of ``layer`` on the data ``x`` through one input's spline.

    A KAN layer has no bias. The shift goes into the input whose data lie most inside its grid,
    by the least-squares spline ``u`` with ``B(t) u ~ 1`` over the data and the grid range (for
    B-splines ``u = 1`` exactly, by the partition of unity inside the grid range; outside it,
    where the splines fade out, the shift fades too and ``max_deviation`` shows it).
    """
    if not bool(const.abs().max() > 0):
        return
    lo, hi = layer.basis.lo, layer.basis.hi
    inside = ((x >= lo) & (x <= hi)).double().mean(0)
    p = int(inside.argmax())
    # The data and a sweep of the whole grid range: every basis function is pinned down, so
    # for B-splines u is exactly 1 and the shift holds off the data too (inside the grid).
    sweep = lo[p] + (hi[p] - lo[p]) * torch.linspace(0, 1, 256).to(x)
    pts = torch.cat([x[:, p], sweep])[:, None]
    A = layer.basis.expand(pts, slice(p, p + 1))[:, 0].double()  # [N + 256, K]
    ata = A.t() @ A
    ata += (1e-12 * ata.diagonal().mean().clamp_min(1e-12)) * torch.eye(ata.shape[0]).to(ata)
    u = torch.linalg.solve(ata, A.t() @ torch.ones_like(A[:, 0]))  # [K]
    layer.spline_weight[:, p] += (const.double()[:, None] * u[None, :]).to(layer.spline_weight)


@torch.no_grad()
def prune(
    kan: KAN,
    x: Tensor,
    threshold: float = 1e-2,
    method: str = "std",
    scores: KANImportance | None = None,
) -> KAN:
    """A smaller :class:`~kangnn.kan.KAN` without the inputs and hidden units scoring below
    ``threshold`` (pykan's node pruning).

    The kept edges are copied exactly (weights and grids). What a dropped node contributed to
    each node it fed, its mean over ``x`` (all it carries when its score is 0), is added to that
    node through one kept edge (:func:`_fold_constant`), so the pruned KAN computes the same
    function on ``x`` up to the reported ``max_deviation``. Outputs are never dropped, and at
    least one node is kept in every layer.

    Parameters
    ----------
    kan:
        The KAN to prune.
    x:
        Data ``[N, in_features]`` for the scores and the shifts (the training inputs).
    threshold:
        Nodes (inputs and hidden units) with a score below it are dropped; see
        :func:`importance` for the scores (an output scores 1, an input the sum of the shares
        it has in the nodes it feeds).
    method:
        Scale of the scores, ``"std"`` or ``"mean_abs"``.
    scores:
        Ready :func:`importance` scores of ``kan`` on ``x`` (computed when omitted).

    Returns
    -------
    KAN
        The pruned KAN, taking only the kept inputs, with these attributes:
        ``active_inputs`` (kept input indices, ascending), ``active_units`` (the kept node
        indices of every level, inputs first, outputs last), ``max_deviation`` (max absolute
        difference of its outputs from ``kan``'s on ``x``) and ``importance`` (the scores).

    Examples
    --------
    >>> small = prune(kan, x, threshold=1e-2)
    >>> small.active_inputs  # e.g. [0, 1]: input 2 was dropped
    >>> y = small(x[:, small.active_inputs])
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    layers = _layers(kan)
    acts = layer_inputs(kan, x)
    scores = scores if scores is not None else importance(kan, x, method)
    normed = any(n is not None for n in layer_norms(kan))
    keep: list[list[int]] = []
    for level, s in enumerate(scores.node_scores):
        if level == len(scores.node_scores) - 1 or (normed and level > 0):
            keep.append(list(range(s.numel())))  # outputs, and units that feed a LayerNorm
            continue
        kept = [i for i in range(s.numel()) if float(s[i]) >= threshold]
        keep.append(kept or [int(s.argmax())])
    new_layers = []
    for level, layer in enumerate(layers):
        cols, rows = keep[level], keep[level + 1]
        new = _sliced_layer(layer, rows, cols)
        dropped = [p for p in range(layer.in_features) if p not in set(cols)]
        if dropped:
            h = acts[level]
            const = sum(edge_values(layer, h, p).double().mean(0) for p in dropped)
            _fold_constant(new, h[:, cols], const[rows])
        new_layers.append(new)
    widths = [len(k) for k in keep]
    if isinstance(kan, KAN):
        # A copy keeps the class and its norms (whose widths pruning never changes).
        pruned = copy.deepcopy(kan)
        pruned.widths = widths
        pruned.in_features = pruned.in_channels = widths[0]
    else:
        pruned = KAN(widths)
    pruned.layers = torch.nn.ModuleList(new_layers)
    pruned.to(layers[0].base_weight)
    dev = (pruned(acts[0][:, keep[0]]) - acts[-1]).abs().max()
    pruned.active_inputs = list(keep[0])
    pruned.active_units = keep
    pruned.max_deviation = float(dev)
    pruned.importance = scores
    return pruned
