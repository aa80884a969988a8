""":func:`kanify`: the KAN twin of a PyTorch Geometric model, its MLPs (and linear layers) swapped
for KAN layers."""

from __future__ import annotations

import copy
import fnmatch
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.nn.parameter import is_lazy
from torch_geometric.nn import MLP
from torch_geometric.nn.dense.linear import Linear as PyGLinear

from kangnn.kan import KAN, KANLinear
from kangnn.models.kan_mlp import KANMLP
from kangnn.models.matching import ParameterMatchError
from kangnn.nn.functions import KANFunction, MLPFunction
from kangnn.utils import count_parameters, match_width

__all__ = ["INCLUDE", "KanifyReport", "Replacement", "kanify"]

#: What :func:`kanify` can replace: ``"mlp"`` (PyG ``MLP`` and kangnn's ``MLPFunction``) and
#: ``"linear"`` (``torch.nn.Linear`` and PyG ``Linear``).
INCLUDE = ("mlp", "linear")
_LINEARS = (nn.Linear, nn.LazyLinear, PyGLinear)
# Never entered: they hold KAN layers already.
_KAN_MODULES = (KAN, KANLinear, KANMLP)


@dataclass(frozen=True)
class Replacement:
    """One module :func:`kanify` replaced.

    Attributes
    ----------
    name:
        Qualified name in the model (``""``: the model itself); a module reachable under
        several names is replaced once, under its first name.
    kind:
        ``"mlp"`` (PyG ``MLP``), ``"function"`` (kangnn ``MLPFunction``) or ``"linear"``.
    original:
        Class name of the replaced module.
    widths, kan_widths:
        Layer widths ``[in, hidden..., out]`` before and after.
    params, kan_params:
        Parameters of the replaced module and of its KAN replacement.
    """

    name: str
    kind: str
    original: str
    widths: tuple[int, ...]
    kan_widths: tuple[int, ...]
    params: int
    kan_params: int


@dataclass(frozen=True)
class KanifyReport:
    """What :func:`kanify` did, stored as ``kanified_`` on the model it returns.

    Attributes
    ----------
    replacements:
        The replaced modules, in module order.
    params, kan_params:
        Trainable parameters of the whole model before and after.
    matched:
        Whether the hidden widths were chosen to match ``params`` (``match_params=True``).
    """

    replacements: tuple[Replacement, ...]
    params: int
    kan_params: int
    matched: bool

    @property
    def rel_diff(self) -> float:
        """``(kan_params - params) / params``."""
        return (self.kan_params - self.params) / max(self.params, 1)

    def __str__(self) -> str:
        lines = [
            f"kanify: {len(self.replacements)} module(s) replaced; parameters {self.params:,} "
            f"-> {self.kan_params:,} ({self.rel_diff:+.1%})"
        ]
        for r in self.replacements:
            lines.append(
                f"  {r.name or '<model>'}: {r.original} {list(r.widths)} ({r.params:,}) -> "
                f"KAN {list(r.kan_widths)} ({r.kan_params:,})"
            )
        return "\n".join(lines)


@dataclass
class _Target:
    """A module to replace and how to build its KAN twin from layer widths."""

    name: str
    module: nn.Module
    kind: str
    widths: list[int]
    build: Callable[[list[int]], nn.Module]

    @property
    def hidden(self) -> list[int]:
        return self.widths[1:-1]


def _kind(module: nn.Module, include: Sequence[str]) -> str | None:
    if "mlp" in include and isinstance(module, MLP):
        return "mlp"
    if "mlp" in include and isinstance(module, MLPFunction):
        return "function"
    # Exact classes: a subclass (e.g. MultiheadAttention's out_proj) may be read by its weight.
    if "linear" in include and type(module) in _LINEARS:
        return "linear"
    return None


def _norm_factory(mlp: MLP, name: str) -> Callable[[int], nn.Module] | None:
    """The norms of a PyG MLP, for a KANMLP: a copy where the width stays, else a new one of the
    same class (default options) at the new width."""
    if all(isinstance(n, nn.Identity) for n in mlp.norms):
        return None
    widths = mlp.channel_list[1:-1] if mlp.plain_last else mlp.channel_list[1:]
    pairs = iter(zip(widths, mlp.norms, strict=True))

    def norm(width: int) -> nn.Module:
        old_width, old = next(pairs)
        if width == old_width:
            return copy.deepcopy(old)
        try:
            return type(old)(width)
        except Exception as err:
            raise ValueError(
                f"kanify: cannot rebuild the norm {type(old).__name__} of {name!r} at width "
                f"{width} ({err}); use match_params=False or exclude it"
            ) from None

    return norm


def _target(name: str, module: nn.Module, kind: str, kan_options: dict[str, Any]) -> _Target:
    if any(is_lazy(p) for p in module.parameters()):
        raise ValueError(
            f"kanify: {name or '<model>'!r} ({type(module).__name__}) has uninitialised lazy "
            "parameters (in_channels=-1); run one forward pass before kanify"
        )
    if kind == "mlp":

        def build(widths: list[int]) -> nn.Module:
            return KANMLP(
                widths,
                dropout=list(module.dropout),
                act=None,
                norm=_norm_factory(module, name),
                plain_last=module.plain_last,
                **kan_options,
            )

        return _Target(name, module, kind, list(module.channel_list), build)
    if kind == "function":
        return _Target(
            name, module, kind, list(module.widths), lambda w: KANFunction(w, **kan_options)
        )
    widths = [
        getattr(module, "in_features", getattr(module, "in_channels", None)),
        getattr(module, "out_features", getattr(module, "out_channels", None)),
    ]
    return _Target(name, module, kind, widths, lambda w: KANLinear(*w, **kan_options))


def _find(
    model: nn.Module, include: Sequence[str], exclude: Sequence[str], kan_options: dict[str, Any]
) -> list[_Target]:
    """The modules to replace, in module order, each once; no descent into a replaced, excluded
    or KAN module."""
    found: list[_Target] = []
    seen: set[int] = set()

    def visit(name: str, module: nn.Module) -> None:
        if id(module) in seen or any(fnmatch.fnmatchcase(name, p) for p in exclude):
            return
        seen.add(id(module))
        kind = _kind(module, include)
        if kind is not None:
            found.append(_target(name, module, kind, kan_options))
            return
        if isinstance(module, _KAN_MODULES):
            return
        for child_name, child in module.named_children():
            visit(f"{name}.{child_name}" if name else child_name, child)

    visit("", model)
    return found


def _widths_at(target: _Target, width: int | None, widest: int) -> list[int]:
    """The target's widths with every hidden width scaled by ``width / widest``."""
    if width is None:
        return list(target.widths)
    hidden = [max(1, round(h * width / widest)) for h in target.hidden]
    return [target.widths[0], *hidden, target.widths[-1]]


def _twins(targets: Iterable[_Target], width: int | None, widest: int) -> nn.ModuleList:
    """The KAN twins of ``targets`` at ``width`` (on the CPU, to count their parameters)."""
    return nn.ModuleList(t.build(_widths_at(t, width, widest)) for t in targets)


def _match_error(
    targets: list[_Target], params: int, closest: int, tolerance: float, widest: int
) -> ParameterMatchError:
    """The error naming the modules whose smallest KAN twin is already larger than they are."""
    culprits = []
    for t, kan in zip(targets, _twins(targets, 1, widest), strict=True):
        extra = count_parameters(kan) - count_parameters(t.module)
        name = t.name or "<model>"
        own = f"{count_parameters(t.module):,} parameters"
        if not t.hidden:
            why = (
                f"{name!r} ({type(t.module).__name__} {t.widths[0]}->{t.widths[-1]}, {own}) has "
                f"no hidden width to choose: as a KAN layer it has {count_parameters(kan):,}"
            )
        else:
            why = (
                f"{name!r} ({type(t.module).__name__} {t.widths}, {own}): its smallest KAN "
                f"{_widths_at(t, 1, widest)} has {count_parameters(kan):,}"
            )
        culprits.append((extra, why))
    culprits.sort(key=lambda c: -c[0])
    named = [why for extra, why in culprits[:3] if extra > 0]
    reason = "; ".join(named) or "the hidden widths change the count in steps too coarse for it"
    return ParameterMatchError(
        f"kanify: cannot bring the KAN model within {tolerance:.0%} of the original's "
        f"{params:,} parameters (closest {closest:,}, {(closest - params) / params:+.1%}): "
        f"{reason}; leave such modules out (include=..., exclude=...) or use match_params=False"
    )


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name), attr, new)


def kanify(
    model: nn.Module,
    *,
    match_params: bool = False,
    include: Sequence[str] = INCLUDE,
    inplace: bool = False,
    tolerance: float = 0.05,
    exclude: Sequence[str] = (),
    **kan_options: Any,
) -> nn.Module:
    """The KAN twin of ``model``: every PyG ``MLP`` (and linear layer) replaced by KAN layers.

    * a :class:`torch_geometric.nn.MLP` becomes a :class:`~kangnn.KANMLP` with the same widths,
      dropout, ``plain_last`` and norms (copied; rebuilt with default options where a width
      changes), without the fixed activation between layers (a KAN layer has its own
      non-linearity) and without biases;
    * a kangnn :class:`~kangnn.nn.MLPFunction` (a kangnn conv built with ``function="mlp"``)
      becomes a :class:`~kangnn.nn.KANFunction` of the same widths, which keeps the conv's
      decomposed messages; the conv's ``function`` attribute becomes ``"kan"``;
    * a ``torch.nn.Linear`` or PyG ``Linear`` (exactly these classes) becomes a
      :class:`~kangnn.KANLinear` with the same widths.

    Everything else (convs, norms, embeddings, GRUs, attention parameters) is kept as it is; the
    KAN layers are freshly initialised on the device and dtype of the module they replace. A
    module that reads a replaced layer's ``weight`` directly breaks there (e.g. AttentiveFP's
    ``GATEConv.reset_parameters``); leave it out with ``exclude``.

    Parameters
    ----------
    model:
        Any ``torch.nn.Module``.
    match_params:
        Scale every replaced module's hidden widths by one common factor (the widest hidden
        layer's new width, bisected) so the whole KAN model has within ``tolerance`` of the
        original's parameter count. A module without a hidden layer (a linear layer, a one-layer
        MLP) keeps its size as a KAN layer, about ``K + 1`` times that of a linear layer.
    include:
        What to replace: ``"mlp"`` (PyG ``MLP`` and kangnn ``MLPFunction``) and/or ``"linear"``.
    inplace:
        Change ``model`` itself instead of a deep copy.
    tolerance:
        Largest accepted ``|kan - original| / original`` with ``match_params``.
    exclude:
        ``fnmatch`` patterns of qualified module names (``"convs.0.nn"``, ``"*.lin"``) to keep,
        with everything inside them.
    **kan_options:
        Options of every KAN layer (``basis``, ``grid_size``, ``spline_order``, ``grid_range``,
        ``base_activation``, ``spline_scale``).

    Returns
    -------
    torch.nn.Module
        The KAN model (``model`` itself with ``inplace``, unless ``model`` is itself replaced),
        with a :class:`KanifyReport` as ``kanified_``.

    Raises
    ------
    ParameterMatchError
        With ``match_params``, when no hidden widths bring the count within ``tolerance``; the
        message names the modules whose smallest KAN twin is already too large (e.g. a single
        linear layer).
    ValueError
        An unknown ``include`` entry, a bad KAN option, or a lazy module not yet initialised.
    """
    unknown = sorted(set(include) - set(INCLUDE))
    if unknown or isinstance(include, str):
        raise ValueError(
            f"kanify: include must be a sequence of {', '.join(INCLUDE)}; got {include!r}"
        )
    if not tolerance > 0:
        raise ValueError(f"kanify: tolerance must be > 0, got {tolerance}")
    try:
        KANLinear(1, 1, **kan_options)
    except (TypeError, ValueError) as err:
        raise ValueError(f"kanify: bad KAN option(s) {kan_options}: {err}") from None

    model = model if inplace else copy.deepcopy(model)
    targets = _find(model, include, exclude, kan_options)
    params = count_parameters(model)
    if not targets:
        warnings.warn(
            f"kanify: nothing to replace in {type(model).__name__} (include={tuple(include)})",
            stacklevel=2,
        )

    widest = max((h for t in targets for h in t.hidden), default=1)
    width = None
    if match_params and targets:
        replaced = {id(p) for t in targets for p in t.module.parameters() if p.requires_grad}
        rest = params - sum(p.numel() for p in model.parameters() if id(p) in replaced)

        def total(w: int | None) -> int:
            return rest + count_parameters(_twins(targets, w, widest))

        if any(t.hidden for t in targets):
            # A KAN layer has about K + 1 times a linear layer's parameters, so the match lies
            # below the original widths; doubling finds an upper end without building giants.
            hi = widest
            while total(hi) < params and hi < 1 << 16:
                hi *= 2
            width = match_width(lambda w: _twins(targets, w, widest), params - rest, hi=hi)
        closest = total(width)
        if abs(closest - params) > tolerance * params:
            raise _match_error(targets, params, closest, tolerance, widest)

    replacements = []
    for t in targets:
        widths = _widths_at(t, width, widest)
        new = t.build(widths).train(t.module.training)
        ref = next(t.module.parameters(), None)
        if ref is not None:
            new = new.to(device=ref.device, dtype=ref.dtype)
        replacements.append(
            Replacement(
                name=t.name,
                kind=t.kind,
                original=type(t.module).__name__,
                widths=tuple(t.widths),
                kan_widths=tuple(widths),
                params=count_parameters(t.module),
                kan_params=count_parameters(new),
            )
        )
        if not t.name:
            model = new
            continue
        _set(model, t.name, new)
        # The same module registered under another name too: it gets the same twin.
        for module in list(model.modules()):
            for child_name, child in list(module.named_children()):
                if child is t.module:
                    setattr(module, child_name, new)
    # A kangnn conv (or model) whose MLP functions all became KANs is now a KAN one.
    owners = {t.name.rpartition(".")[0] for t in targets if t.kind == "function"}
    for owner in owners:
        module = model.get_submodule(owner)
        if getattr(module, "function", None) == "mlp" and not any(
            isinstance(m, MLPFunction) for m in module.modules()
        ):
            module.function = "kan"
    model.kanified_ = KanifyReport(
        replacements=tuple(replacements),
        params=params,
        kan_params=count_parameters(model),
        matched=match_params,
    )
    return model
