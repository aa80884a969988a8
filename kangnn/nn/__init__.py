"""KAN message and update functions inside PyG ``MessagePassing`` layers."""

from kangnn.nn.aggr import (
    HAS_TORCH_SCATTER,
    get_scatter_backend,
    scatter,
    scatter_backend,
    set_scatter_backend,
)
from kangnn.nn.base import KANMessagePassing
from kangnn.nn.checks import check_inputs, set_range_checks
from kangnn.nn.dmpnn import KANDMPNNConv, reverse_edge_index
from kangnn.nn.functions import (
    FUNCTIONS,
    DecomposableFunction,
    KANFunction,
    MLPFunction,
    build_function,
    regularization_loss,
)
from kangnn.nn.gated import KANGatedConv
from kangnn.nn.gin import KANGINConv, KANGINEConv
from kangnn.nn.mpnn import KANMPNNConv

__all__ = [
    "FUNCTIONS",
    "DecomposableFunction",
    "HAS_TORCH_SCATTER",
    "KANDMPNNConv",
    "KANFunction",
    "KANGINConv",
    "KANGINEConv",
    "KANGatedConv",
    "KANMPNNConv",
    "KANMessagePassing",
    "MLPFunction",
    "build_function",
    "check_inputs",
    "get_scatter_backend",
    "regularization_loss",
    "reverse_edge_index",
    "scatter",
    "scatter_backend",
    "set_range_checks",
    "set_scatter_backend",
]
