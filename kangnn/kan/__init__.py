"""KAN layers and their univariate bases."""

from kangnn.kan.basis import (
    BASES,
    Basis,
    BSplineBasis,
    ChebyshevBasis,
    FourierBasis,
    RBFBasis,
    make_basis,
)
from kangnn.kan.fused import set_fused
from kangnn.kan.grids import fit_grids
from kangnn.kan.linear import KAN, KANLinear, set_saved_expansion_limit
from kangnn.kan.prune import KANImportance, importance, prune, sparsity_loss
from kangnn.kan.symbolic import LIBRARY, SymbolicResult, auto_symbolic, fit_function

__all__ = [
    "BASES",
    "Basis",
    "BSplineBasis",
    "ChebyshevBasis",
    "FourierBasis",
    "KAN",
    "KANLinear",
    "fit_grids",
    "RBFBasis",
    "make_basis",
    "set_fused",
    "set_saved_expansion_limit",
    "KANImportance",
    "LIBRARY",
    "SymbolicResult",
    "auto_symbolic",
    "fit_function",
    "importance",
    "prune",
    "sparsity_loss",
]
