"""Molecule models: :class:`MoleculeGNN` and the parameter matching of its MLP baseline."""

from kangnn.models.descriptors import QuantileNormal
from kangnn.models.gnn import CONV_REGISTRY, READOUTS, FeatureEncoder, MoleculeGNN
from kangnn.models.matching import (
    ParameterMatchError,
    ParamMatch,
    build_model,
    match_mlp,
    model_kwargs,
)

__all__ = [
    "CONV_REGISTRY",
    "READOUTS",
    "FeatureEncoder",
    "MoleculeGNN",
    "ParamMatch",
    "ParameterMatchError",
    "QuantileNormal",
    "build_model",
    "match_mlp",
    "model_kwargs",
]
