"""kangnn: Kolmogorov-Arnold Network layers for PyTorch Geometric message passing."""

from kangnn.kan import KAN, KANLinear

__version__ = "0.1.0"

__all__ = ["KAN", "KANLinear", "__version__"]
