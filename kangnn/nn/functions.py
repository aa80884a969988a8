"""The learnable functions inside the message-passing layers: a KAN stack or an MLP.

Both kinds share one interface, :class:`DecomposableFunction`, so a layer uses them identically
and a KAN-vs-MLP comparison changes one thing only:

* ``forward(x)``: the whole function;
* ``partial(x_part, start, bias=False)``: the first layer's contribution of the input columns
  ``start : start + x_part.shape[-1]`` (a KAN layer and a linear layer are both additive over
  their inputs); ``bias=True`` adds the first layer's bias, which must be added exactly once;
* ``partials(x_part, starts)``: ``partial`` of one ``x_part`` at several offsets, stacked as
  ``[N, len(starts), out]``, in one product (the bias goes to the first offset);
* ``rest(y)``: everything after the first layer's output ``y``;

so that ``f(cat([a, b], -1)) == f.rest(f.partial(a, 0, bias=True) + f.partial(b, a.shape[-1]))``.
Any module with these methods can serve a decomposed layer (see :class:`DecomposableFunction`).

A KAN function can normalise the input of each of its layers after the first
(``layer_norm=True``, as FastKAN does): the splines then see standardised inputs whatever the
scale of the previous layer's output. The first layer is left alone so that it stays additive
over its input columns (what the decomposition needs); in :class:`~kangnn.models.MoleculeGNN` its
inputs are the normalised node and bond embeddings already.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.resolver import activation_resolver

from kangnn.kan import KAN
from kangnn.kan.linear import input_columns

#: The kinds of learnable function a layer can use (the config key ``model.function``).
FUNCTIONS = ("kan", "mlp")

#: The KAN options a :class:`~kangnn.models.MoleculeGNN` passes on to its KAN functions.
KAN_OPTIONS = ("grid_size", "spline_order", "basis", "grid_range", "layer_norm")
#: Keyword arguments that only a KAN understands (an MLP function rejects them).
KAN_ONLY_KWARGS = frozenset({*KAN_OPTIONS, "base_activation", "spline_scale"})


@runtime_checkable
class DecomposableFunction(Protocol):
    r"""A learnable function whose first layer is additive over its input columns.

    A decomposed message-passing layer evaluates the message function on
    :math:`[\mathbf{h}_i \,\|\, \mathbf{h}_j \,\|\, \mathbf{e}_{ij}]` without building that
    per-edge input: it runs the first layer's parts of the node features once per node
    (:meth:`partial`, :meth:`partials`), gathers and adds them per edge, and applies
    :meth:`rest`. For inputs ``a`` of ``p`` columns and ``b`` this requires::

        f(cat([a, b], -1)) == f.rest(f.partial(a, 0, bias=True) + f.partial(b, p))

    :class:`KANFunction` and :class:`MLPFunction` implement it; so can a user's own module (any
    first layer that is a sum over its inputs, e.g. a linear or a KAN layer).
    :class:`~kangnn.nn.KANMessagePassing`'s message helpers use nothing else of a
    ``message_fn``. ``isinstance`` checks that the methods exist, not that the identity holds.
    """

    def __call__(self, x: Tensor) -> Tensor:
        """The whole function, ``(*, in) -> (*, out)``."""
        ...

    def partial(self, x_part: Tensor, start: int, bias: bool = False) -> Tensor:
        """The first layer's contribution of some of the input columns.

        Parameters
        ----------
        x_part : Tensor
            ``(N, w)``: the input columns ``start : start + w`` of ``N`` inputs.
        start : int
            Offset of the first of those columns in the full input.
        bias : bool
            Add the first layer's bias (if it has one). Of the parts summed into one input,
            exactly one must have it.

        Returns
        -------
        Tensor
            ``(N, h)``, with ``h`` the width of the first layer's output.
        """
        ...

    def partials(self, x_part: Tensor, starts: Sequence[int]) -> Tensor:
        """:meth:`partial` of one ``x_part`` at several offsets, in one evaluation.

        Parameters
        ----------
        x_part : Tensor
            ``(N, w)``: columns that stand at every offset of ``starts`` in the full input.
        starts : sequence of int
            Offsets, at least one.

        Returns
        -------
        Tensor
            ``(N, len(starts), h)``: ``[:, k]`` is ``partial(x_part, starts[k])``, the bias added
            to the first offset only (``k = 0``).
        """
        ...

    def rest(self, y: Tensor) -> Tensor:
        """Everything after the first layer.

        Parameters
        ----------
        y : Tensor
            ``(N, h)``: the first layer's output (a sum of :meth:`partial` terms).

        Returns
        -------
        Tensor
            ``(N, out)``: the function's output.
        """
        ...


class KANFunction(KAN):
    r"""A :class:`~kangnn.kan.KAN` stack with the decomposition interface.

    .. math::
        f(\mathbf{x}) = \Phi_L \circ N_{L-1} \circ \Phi_{L-1} \circ \dots \circ N_1
        \circ \Phi_1(\mathbf{x})

    with :math:`\Phi_l` the KAN layers and :math:`N_l` a ``LayerNorm`` (``layer_norm=True``)
    or the identity.

    Parameters
    ----------
    widths:
        Layer widths, input first.
    layer_norm:
        Put a :class:`torch.nn.LayerNorm` (with its affine parameters) on the input of every
        layer after the first, so each spline grid sees standardised inputs. The first layer's
        input is not normalised: that would mix its input columns and break :meth:`partial`.
    **kan_kwargs:
        Passed to every :class:`~kangnn.kan.KANLinear` (``basis``, ``grid_size``, ...).

    Shapes
    ------
    input ``(*, widths[0])``, output ``(*, widths[-1])``.
    """

    def __init__(self, widths: Sequence[int], layer_norm: bool = False, **kan_kwargs) -> None:
        super().__init__(widths, **kan_kwargs)
        self.in_channels = self.widths[0]
        self.out_channels = self.widths[-1]
        self.layer_norm = bool(layer_norm)
        # Empty without layer_norm: the state dict (and old checkpoints) are unchanged then.
        self.norms = nn.ModuleList(
            nn.LayerNorm(w) for w in (self.widths[1:-1] if self.layer_norm else [])
        )

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for norm in self.norms:
            norm.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        return self.rest(self.layers[0](x))

    def partial(self, x_part: Tensor, start: int, bias: bool = False) -> Tensor:
        """First layer's contribution of input columns ``start : start + x_part.shape[-1]``.

        A KAN layer has no bias, so ``bias`` changes nothing.
        """
        return self.layers[0].partial(x_part, start)

    def partials(self, x_part: Tensor, starts: Sequence[int]) -> Tensor:
        """``[N, len(starts), out]``: :meth:`partial` at each offset, from one basis expansion."""
        return self.layers[0].partials(x_part, starts)

    def rest(self, y: Tensor) -> Tensor:
        """The layers after the first (each after its ``LayerNorm``, if any) applied to the first
        layer's output ``y``."""
        for i, layer in enumerate(self.layers[1:]):
            if self.layer_norm:
                y = self.norms[i](y)
            y = layer(y)
        return y

    @torch.no_grad()
    def update_grid(self, x: Tensor, **kwargs) -> None:
        """Update every layer's grid on the inputs that ``x`` gives it, first to last (after the
        normalisation, where there is one)."""
        for i, layer in enumerate(self.layers):
            if i > 0 and self.layer_norm:
                x = self.norms[i - 1](x)
            layer.update_grid(x, **kwargs)
            x = layer(x)


class MLPFunction(nn.Module):
    """``Linear -> act -> ... -> Linear`` with the decomposition interface.

    Parameters
    ----------
    widths:
        Layer widths, input first.
    act:
        Activation between the linear layers (default ``"silu"``, the KAN's base activation).
    bias:
        Whether the linear layers have a bias.
    """

    def __init__(self, widths: Sequence[int], act: str | nn.Module = "silu", bias: bool = True):
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"an MLP needs at least two widths (input and output), got {widths!r}")
        self.widths = list(widths)
        self.in_channels = self.widths[0]
        self.out_channels = self.widths[-1]
        self.act = activation_resolver(act) if isinstance(act, str) else act
        self.layers = nn.ModuleList(
            nn.Linear(a, b, bias=bias)
            for a, b in zip(self.widths[:-1], self.widths[1:], strict=True)
        )

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()

    def partial(self, x_part: Tensor, start: int, bias: bool = False) -> Tensor:
        """First layer's contribution of input columns ``start : start + x_part.shape[-1]``."""
        first = self.layers[0]
        (cols,) = input_columns([start], x_part.shape[-1], first.in_features)
        b = first.bias if bias else None
        return F.linear(x_part, first.weight[:, cols], b)

    def partials(self, x_part: Tensor, starts: Sequence[int]) -> Tensor:
        """``[N, len(starts), out]``: :meth:`partial` at each offset (the bias added to the first
        one only) as one matrix product."""
        first = self.layers[0]
        blocks = input_columns(starts, x_part.shape[-1], first.in_features)
        weight = torch.cat([first.weight[:, cols] for cols in blocks], dim=0)
        bias = first.bias
        if bias is not None:
            bias = torch.cat([bias, bias.new_zeros((len(starts) - 1) * bias.numel())])
        return F.linear(x_part, weight, bias).unflatten(-1, (len(starts), first.out_features))

    def rest(self, y: Tensor) -> Tensor:
        """The layers after the first (each preceded by the activation) applied to ``y``."""
        for layer in self.layers[1:]:
            y = layer(self.act(y))
        return y

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_channels:
            raise ValueError(f"MLP expects {self.in_channels} input features, got {x.shape[-1]}")
        return self.rest(self.layers[0](x))

    def regularization_loss(self, *args, **kwargs) -> Tensor:
        """Zero: an MLP has no KAN regulariser (kept so models can call it on either kind)."""
        return self.layers[0].weight.new_zeros(())

    def update_grid(self, x: Tensor, **kwargs) -> None:
        """No-op: an MLP has no grid (kept so models can call it on either kind)."""


def function_widths(
    in_channels: int,
    out_channels: int,
    hidden_channels: int | Sequence[int] | None = None,
    num_layers: int = 2,
) -> list[int]:
    """The layer widths ``[in, hidden..., out]`` of a function."""
    if hidden_channels is not None and not isinstance(hidden_channels, int):
        return [in_channels, *hidden_channels, out_channels]
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    hidden = out_channels if hidden_channels is None else hidden_channels
    return [in_channels] + [hidden] * (num_layers - 1) + [out_channels]


def build_function(
    function: str,
    in_channels: int,
    out_channels: int,
    hidden_channels: int | Sequence[int] | None = None,
    num_layers: int = 2,
    **kwargs,
) -> KANFunction | MLPFunction:
    """A KAN or MLP from ``in_channels`` to ``out_channels``.

    Parameters
    ----------
    function:
        ``"kan"`` (a :class:`KANFunction`) or ``"mlp"`` (an :class:`MLPFunction`).
    in_channels, out_channels:
        Input and output widths.
    hidden_channels:
        Width of the hidden layers (default ``out_channels``), or a list of hidden widths (then
        ``num_layers`` is ignored).
    num_layers:
        Number of layers (KAN layers or linear layers); 1 means no hidden layer.
    **kwargs:
        For ``"kan"``: ``layer_norm`` (see :class:`KANFunction`) and
        :class:`~kangnn.kan.KANLinear` options (``basis``, ``grid_size``, ``spline_order``,
        ``grid_range``, ``base_activation``, basis options). For ``"mlp"``: ``act`` and
        ``bias``.
    """
    if function not in FUNCTIONS:
        raise ValueError(f"unknown function {function!r}; valid: {', '.join(FUNCTIONS)}")
    widths = function_widths(in_channels, out_channels, hidden_channels, num_layers)
    if any(w < 1 for w in widths):
        raise ValueError(f"all widths must be >= 1, got {widths}")
    if function == "kan":
        return KANFunction(widths, **kwargs)
    wrong = sorted(set(kwargs) & KAN_ONLY_KWARGS)
    if wrong:
        raise ValueError(f"{', '.join(wrong)} only apply to function='kan', not 'mlp'")
    unknown = sorted(set(kwargs) - {"act", "bias"})
    if unknown:
        raise ValueError(f"unknown MLP option(s) {', '.join(unknown)}; valid: act, bias")
    return MLPFunction(widths, **kwargs)


def regularization_loss(module: nn.Module, **kwargs) -> Tensor:
    """Sum of the KAN regularisers of every :class:`KANFunction` inside ``module`` (0 if none)."""
    terms = [m.regularization_loss(**kwargs) for m in module.modules() if isinstance(m, KAN)]
    if not terms:
        p = next(module.parameters(), None)
        return torch.zeros((), device=None if p is None else p.device)
    return torch.stack(terms).sum()
