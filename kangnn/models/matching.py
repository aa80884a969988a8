"""Parameter matching: the MLP baseline of a KAN model, within a tolerance of its size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from kangnn.models.gnn import MoleculeGNN
from kangnn.utils import count_parameters, match_width

__all__ = ["ParamMatch", "ParameterMatchError", "build_model", "match_mlp", "model_kwargs"]


class ParameterMatchError(ValueError):
    """No MLP width brings the baseline within the tolerance of the KAN model's size."""


@dataclass(frozen=True)
class ParamMatch:
    """Parameter counts of a KAN model and its MLP baseline.

    Attributes
    ----------
    kan_params, mlp_params:
        Trainable parameters of the whole KAN model and of the whole MLP model.
    kan_hidden_channels, mlp_hidden_channels:
        Hidden width inside the message/update/head functions of each.
    rel_diff:
        ``(mlp_params - kan_params) / kan_params``.
    matched:
        Whether the MLP width was chosen by matching (False: set by hand).
    """

    kan_params: int
    mlp_params: int
    kan_hidden_channels: int
    mlp_hidden_channels: int
    rel_diff: float
    matched: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_kwargs(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`MoleculeGNN` keyword arguments from a ``model`` config section.

    The function hidden width is the KAN one (``function_hidden_channels``) for ``"kan"`` and
    ``mlp_hidden_channels`` for ``"mlp"`` (``None`` there means "to be matched").
    """
    function = model_cfg["function"]
    kan_width = model_cfg.get("function_hidden_channels") or model_cfg["hidden_channels"]
    width = kan_width if function == "kan" else model_cfg.get("mlp_hidden_channels")
    return dict(
        conv=model_cfg["conv"],
        function=function,
        hidden_channels=int(model_cfg["hidden_channels"]),
        num_layers=int(model_cfg["num_layers"]),
        readout=model_cfg["readout"],
        dropout=float(model_cfg["dropout"]),
        norm=model_cfg["norm"],
        function_hidden_channels=width,
        function_layers=int(model_cfg["function_layers"]),
        aggr=model_cfg["aggr"],
        grid_size=int(model_cfg["grid_size"]),
        spline_order=int(model_cfg["spline_order"]),
        basis=model_cfg["basis"],
        # KAN-only (the MLP model ignores them); .get: configs written before these keys
        grid_range=tuple(float(v) for v in model_cfg.get("grid_range", (-1.0, 1.0))),
        layer_norm=bool(model_cfg.get("kan_layer_norm", False)),
    )


def match_mlp(
    kwargs: Mapping[str, Any],
    atom_feature_dims: Sequence[int],
    bond_feature_dims: Sequence[int],
    num_tasks: int,
    tolerance: float = 0.05,
    mlp_hidden_channels: int | None = None,
) -> ParamMatch:
    """Pick the MLP baseline's function width so its parameter count matches the KAN model's.

    Everything but the hidden width of the message/update/head functions stays as in the KAN
    model (conv, layers, node width, encoders, norms, readout).

    Parameters
    ----------
    kwargs:
        :class:`MoleculeGNN` keyword arguments of the model (``function`` is ignored: the KAN
        model is built with ``"kan"`` and the baseline with ``"mlp"``).
    atom_feature_dims, bond_feature_dims, num_tasks:
        As for :class:`MoleculeGNN`.
    tolerance:
        Largest accepted ``|mlp - kan| / kan``.
    mlp_hidden_channels:
        A width set by hand: no search and no tolerance check.

    Raises
    ------
    ParameterMatchError
        When no width meets ``tolerance`` (e.g. ``function_layers=1``: no hidden width to set).
    """
    base = dict(kwargs)
    kan_width = base.get("function_hidden_channels") or base["hidden_channels"]
    kan = MoleculeGNN(
        atom_feature_dims,
        bond_feature_dims,
        num_tasks,
        **{**base, "function": "kan", "function_hidden_channels": kan_width},
    )
    target = count_parameters(kan)
    del kan

    def build(width: int) -> MoleculeGNN:
        return MoleculeGNN(
            atom_feature_dims,
            bond_feature_dims,
            num_tasks,
            **{**base, "function": "mlp", "function_hidden_channels": width},
        )

    matched = mlp_hidden_channels is None
    if matched and int(base.get("function_layers", 2)) < 2:
        raise ParameterMatchError(
            f"cannot match the MLP baseline to the KAN model ({target} parameters) within "
            f"{tolerance:.0%}: model.function_layers={base.get('function_layers')} leaves no "
            "hidden width to set (use 2 or more, or set model.mlp_hidden_channels)"
        )
    if matched:
        try:
            width = match_width(build, target, lo=1, hi=16384)
        except ValueError as err:
            raise ParameterMatchError(
                f"cannot match the MLP baseline to the KAN model ({target} parameters) within "
                f"{tolerance:.0%}: {err}"
            ) from None
    else:
        width = int(mlp_hidden_channels)
    mlp_params = count_parameters(build(width))
    rel = (mlp_params - target) / target
    if matched and abs(rel) > tolerance:
        raise ParameterMatchError(
            f"the MLP baseline cannot be matched to the KAN model within {tolerance:.0%}: "
            f"KAN {target} parameters, closest MLP {mlp_params} (width {width}, {rel:+.1%}); "
            "widen the model or set model.mlp_hidden_channels"
        )
    return ParamMatch(
        kan_params=target,
        mlp_params=mlp_params,
        kan_hidden_channels=int(kan_width),
        mlp_hidden_channels=int(width),
        rel_diff=float(rel),
        matched=matched,
    )


def build_model(
    model_cfg: Mapping[str, Any],
    atom_feature_dims: Sequence[int],
    bond_feature_dims: Sequence[int],
    num_tasks: int,
) -> tuple[MoleculeGNN, ParamMatch]:
    """Build the model a ``model`` config section describes, and its parameter-match record.

    For ``function="mlp"`` with ``mlp_hidden_channels: null`` the width is matched to the KAN
    model of the same config (within ``model.match_tolerance``).

    Returns
    -------
    (MoleculeGNN, ParamMatch)
    """
    kwargs = model_kwargs(model_cfg)
    match = match_mlp(
        kwargs,
        atom_feature_dims,
        bond_feature_dims,
        num_tasks,
        tolerance=float(model_cfg.get("match_tolerance", 0.05)),
        mlp_hidden_channels=model_cfg.get("mlp_hidden_channels"),
    )
    if kwargs["function"] == "mlp":
        kwargs["function_hidden_channels"] = match.mlp_hidden_channels
    model = MoleculeGNN(atom_feature_dims, bond_feature_dims, num_tasks, **kwargs)
    return model, match
