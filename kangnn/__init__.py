"""kangnn: Kolmogorov-Arnold Network layers for PyTorch Geometric message passing."""

from kangnn.kan import KAN, KANLinear
from kangnn.models.kan_mlp import KANMLP
from kangnn.models.kanify import kanify

__version__ = "0.1.0"

__all__ = ["KAN", "KANLinear", "KANMLP", "__version__", "kanify"]
