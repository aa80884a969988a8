""":class:`KANMLP`: :class:`torch_geometric.nn.MLP`'s interface with KAN layers."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn.resolver import activation_resolver, normalization_resolver

from kangnn.kan import KANLinear

__all__ = ["KANMLP"]


class _Bias(nn.Module):
    """A learnable per-output offset (a :class:`KANLinear` has none of its own)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias


def _channel_list(
    channel_list: Sequence[int] | int | None,
    in_channels: int | None,
    hidden_channels: int | None,
    out_channels: int | None,
    num_layers: int | None,
) -> list[int]:
    """The widths ``[in, hidden..., out]``, by PyG MLP's rules (explicit arguments win)."""
    if isinstance(channel_list, int):
        in_channels = channel_list
    if in_channels is not None:
        if num_layers is None:
            raise ValueError("KANMLP: num_layers must be given with in_channels")
        if num_layers < 1:
            raise ValueError(f"KANMLP: num_layers must be >= 1, got {num_layers}")
        if num_layers > 1 and hidden_channels is None:
            raise ValueError(f"KANMLP: hidden_channels must be given for num_layers={num_layers}")
        if out_channels is None:
            raise ValueError("KANMLP: out_channels must be given with in_channels")
        channel_list = [in_channels, *[hidden_channels] * (num_layers - 1), out_channels]
    if not isinstance(channel_list, list | tuple) or len(channel_list) < 2:
        raise ValueError(
            "KANMLP needs channel_list (at least input and output widths) or in_channels, "
            f"out_channels and num_layers; got channel_list={channel_list!r}"
        )
    if any(not isinstance(c, int) or c < 1 for c in channel_list):
        raise ValueError(f"KANMLP: every width must be an int >= 1, got {list(channel_list)}")
    return list(channel_list)


def _per_layer(value: Any, kind: type, name: str, num_layers: int) -> list:
    values = [value] * num_layers if isinstance(value, kind) else list(value)
    if len(values) != num_layers:
        raise ValueError(
            f"KANMLP: {len(values)} {name} values for {num_layers} layers "
            "(give one, or one per layer)"
        )
    return values


def _make_norm(norm: str | Callable | None, channels: int, norm_kwargs: dict) -> nn.Module:
    if norm is None:
        return nn.Identity()
    if isinstance(norm, str):
        return normalization_resolver(norm, channels, **norm_kwargs)
    if isinstance(norm, nn.Module):
        raise TypeError(
            f"KANMLP: norm must be a name, a class or a factory of the width, not the module "
            f"{type(norm).__name__}(...) (one module cannot serve every layer)"
        )
    return norm(channels, **norm_kwargs)


class KANMLP(nn.Module):
    r"""A stack of :class:`~kangnn.kan.KANLinear` layers with the constructor and forward of
    :class:`torch_geometric.nn.MLP`, so it drops in wherever PyG takes an ``MLP``.

    Built either from the widths, ``KANMLP([16, 32, 1])``, or like
    ``KANMLP(in_channels=16, hidden_channels=32, out_channels=1, num_layers=2)``. Each layer is
    ``KANLinear -> (bias) -> norm -> act -> dropout``, the last one plain (``KANLinear ->
    (bias) -> dropout``) unless ``plain_last=False``, as in PyG's MLP.

    Two defaults differ from PyG's MLP, because a KAN layer is already non-linear (its learnable
    univariate functions, plus the base activation of its residual branch):

    * ``act=None``: no fixed activation between layers (give ``act="relu"`` to add one);
    * ``bias=False``: a KAN layer's functions already absorb constant offsets (within their
      grid); ``bias=True`` adds a learnable bias after each layer.

    Args:
        channel_list (list of int or int, optional): Input, hidden and output widths
            (``len(channel_list) - 1`` layers); an int is ``in_channels``.
        in_channels, hidden_channels, out_channels, num_layers (int, optional): The widths
            given the other way; they override ``channel_list``.
        dropout (float or list of float): Dropout after each layer (a float: not after the
            last one when ``plain_last``). (default: ``0.``)
        act (str or Callable, optional): Activation between layers, resolved by PyG's
            ``activation_resolver``. (default: ``None``)
        act_first (bool): Apply the activation before the normalisation. (default: ``False``)
        act_kwargs (dict, optional): Arguments of the activation.
        norm (str or Callable, optional): Normalisation after each hidden layer: a PyG name
            (``"batch_norm"``, ``"layer_norm"``, ...), or a class or function called with the
            width and ``norm_kwargs``; ``None`` for none. (default: ``"batch_norm"``)
        norm_kwargs (dict, optional): Arguments of the normalisation.
        plain_last (bool): No normalisation, activation or dropout after the last layer.
            (default: ``True``)
        bias (bool or list of bool): A learnable bias after each layer. (default: ``False``)
        **kan_kwargs: Options of every :class:`~kangnn.kan.KANLinear` (``basis``,
            ``grid_size``, ``spline_order``, ``grid_range``, ``base_activation``,
            ``spline_scale``).

    Shapes:
        - **input:** node features :math:`(*, F_{in})`, batch vector :math:`(*)` (optional, for
          a normalisation that takes it)
        - **output:** :math:`(*, F_{out})`; with ``return_emb=True`` also the embedding before
          the last layer, :math:`(*, F_{hidden})`
    """

    def __init__(
        self,
        channel_list: Sequence[int] | int | None = None,
        *,
        in_channels: int | None = None,
        hidden_channels: int | None = None,
        out_channels: int | None = None,
        num_layers: int | None = None,
        dropout: float | Sequence[float] = 0.0,
        act: str | Callable | None = None,
        act_first: bool = False,
        act_kwargs: dict[str, Any] | None = None,
        norm: str | Callable | None = "batch_norm",
        norm_kwargs: dict[str, Any] | None = None,
        plain_last: bool = True,
        bias: bool | Sequence[bool] = False,
        **kan_kwargs: Any,
    ) -> None:
        super().__init__()
        self.channel_list = _channel_list(
            channel_list, in_channels, hidden_channels, out_channels, num_layers
        )
        n = len(self.channel_list) - 1
        self.act = activation_resolver(act, **(act_kwargs or {}))
        self.act_first = act_first
        self.plain_last = plain_last
        if isinstance(dropout, int | float):
            dropout = [float(dropout)] * n
            if plain_last:
                dropout[-1] = 0.0
        self.dropout = [float(p) for p in _per_layer(dropout, float, "dropout", n)]
        biases = _per_layer(bias, bool, "bias", n)
        pairs = zip(self.channel_list[:-1], self.channel_list[1:], strict=True)
        self.lins = nn.ModuleList(KANLinear(a, b, **kan_kwargs) for a, b in pairs)
        self.biases = nn.ModuleList(
            _Bias(c) if b else nn.Identity()
            for c, b in zip(self.channel_list[1:], biases, strict=True)
        )
        normed = self.channel_list[1:-1] if plain_last else self.channel_list[1:]
        self.norms = nn.ModuleList(_make_norm(norm, c, norm_kwargs or {}) for c in normed)
        # Graph-aware norms (GraphNorm, ...) take the batch vector, as in PyG's MLP.
        self.supports_norm_batch = len(self.norms) > 0 and (
            "batch" in inspect.signature(self.norms[0].forward).parameters
        )
        self.reset_parameters()

    @property
    def in_channels(self) -> int:
        """Input width."""
        return self.channel_list[0]

    @property
    def out_channels(self) -> int:
        """Output width."""
        return self.channel_list[-1]

    @property
    def num_layers(self) -> int:
        """Number of KAN layers."""
        return len(self.channel_list) - 1

    def reset_parameters(self) -> None:
        """Reset every layer, bias and normalisation."""
        for module in (*self.lins, *self.biases, *self.norms):
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def _run(
        self,
        x: Tensor,
        batch: Tensor | None,
        batch_size: int | None,
        grid_kwargs: dict[str, Any] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """The output and the embedding before the last layer; with ``grid_kwargs`` each layer's
        grid is first fitted to the input that reaches it."""
        emb = None
        for i, (lin, bias) in enumerate(zip(self.lins, self.biases, strict=True)):
            if grid_kwargs is not None:
                lin.update_grid(x, **grid_kwargs)
            x = bias(lin(x))
            if i < len(self.norms):
                if self.act is not None and self.act_first:
                    x = self.act(x)
                norm = self.norms[i]
                x = norm(x, batch, batch_size) if self.supports_norm_batch else norm(x)
                if self.act is not None and not self.act_first:
                    x = self.act(x)
            x = F.dropout(x, p=self.dropout[i], training=self.training)
            if i < len(self.norms):  # PyG's rule: the last non-plain layer's output
                emb = x
        return x, emb

    def forward(
        self,
        x: Tensor,
        batch: Tensor | None = None,
        batch_size: int | None = None,
        return_emb: bool | None = None,
    ) -> Tensor | tuple[Tensor, Tensor | None]:
        """Apply the stack, as :meth:`torch_geometric.nn.MLP.forward`.

        ``batch`` and ``batch_size`` are passed to a normalisation that takes them;
        ``return_emb=True`` also returns the embedding before the last layer (``None`` for
        one layer).
        """
        out, emb = self._run(x, batch, batch_size)
        return (out, emb) if isinstance(return_emb, bool) else out

    @torch.no_grad()
    def update_grid(
        self, x: Tensor, batch: Tensor | None = None, batch_size: int | None = None, **kwargs
    ) -> None:
        """Fit each layer's grid to the input that ``x`` gives it, first to last.

        ``kwargs`` go to :meth:`kangnn.kan.KANLinear.update_grid`. The spline parameters are
        replaced, so build the optimizer again afterwards.
        """
        self._run(x, batch, batch_size, grid_kwargs=kwargs)

    def regularization_loss(
        self, regularize_activation: float = 1.0, regularize_entropy: float = 1.0
    ) -> Tensor:
        """Sum of the layers' :meth:`kangnn.kan.KANLinear.regularization_loss`."""
        return torch.stack(
            [
                lin.regularization_loss(regularize_activation, regularize_entropy)
                for lin in self.lins
            ]
        ).sum()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.channel_list)[1:-1]})"
