"""Input validation of the kangnn layers: one clear ``ValueError`` per bad input.

:func:`set_range_checks` switches the ``edge_index`` range check that :func:`check_inputs` reads
(a module-level flag, so both live here).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_geometric.typing import Adj, SparseTensor
from torch_geometric.utils import is_torch_sparse_tensor, to_edge_index

from kangnn.nn.sparse import PairTensor, _num_edges

__all__ = ["check_inputs", "set_range_checks"]

_check_ranges = True


def set_range_checks(enabled: bool) -> None:
    """Turn the ``edge_index`` range check of every layer on (default) or off.

    On CPU the check reads the index extremes and raises a :class:`ValueError` naming them; on a
    GPU it is an asynchronous device-side assertion (no host synchronisation); inside
    ``torch.compile`` it is skipped. Without it an out-of-range index is undefined behaviour:
    the decomposed layers may read a wrong row without an error.
    """
    global _check_ranges
    _check_ranges = bool(enabled)


def _pair(channels: int | tuple[int, int]) -> tuple[int, int]:
    return (channels, channels) if isinstance(channels, int) else tuple(channels)


def check_inputs(
    name: str,
    x: Tensor | PairTensor,
    edge_index: Adj,
    edge_attr: Tensor | None,
    in_channels: int | tuple[int, int],
    edge_dim: int | None,
    flow: str = "source_to_target",
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Check a layer's inputs and raise a :class:`ValueError` that names the problem.

    Parameters
    ----------
    name:
        The layer's name, for the messages.
    x:
        Node features ``[N, F]`` or a ``(source, target)`` pair for bipartite graphs.
    edge_index:
        ``[2, E]`` integer tensor (or ``EdgeIndex``), ``SparseTensor`` or ``torch.sparse`` matrix
        (the transposed adjacency ``[N_target, N_source]``, as in PyG).
    edge_attr:
        Edge features ``[E, edge_dim]`` or ``None``.
    in_channels:
        Expected feature widths (an int, or ``(source, target)``).
    edge_dim:
        Expected edge feature width, or ``None`` if the layer takes no edge features. Edge
        features are then required (unless there are no edges); for a sparse adjacency they may
        come from its values.

    Returns
    -------
    ``(x_source, x_target, edge_attr)``.
    """
    if isinstance(x, Tensor):
        x_src = x_dst = x
    elif isinstance(x, (tuple, list)) and len(x) == 2 and all(isinstance(t, Tensor) for t in x):
        x_src, x_dst = x
    else:
        raise ValueError(f"{name}: x must be a tensor or a (source, target) pair of tensors")
    in_src, in_dst = _pair(in_channels)
    for t, want, role in ((x_src, in_src, "source "), (x_dst, in_dst, "target ")):
        role = "" if x_src is x_dst else role
        if t.dim() != 2:
            raise ValueError(
                f"{name}: {role}x must be 2-D [num_nodes, features], got {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise ValueError(
                f"{name}: {role}x has dtype {t.dtype}; the layer takes float features, so embed "
                "categorical atom features first (e.g. one nn.Embedding per column)"
            )
        if t.size(1) != want:
            raise ValueError(
                f"{name}: {role}x has {t.size(1)} features but the layer was built with "
                f"in_channels={want}"
            )
    n_src, n_dst = x_src.size(0), x_dst.size(0)

    sparse_values = None
    if isinstance(edge_index, SparseTensor) or is_torch_sparse_tensor(edge_index):
        if tuple(edge_index.size())[:2] != (n_dst, n_src):
            raise ValueError(
                f"{name}: the sparse adjacency has size {tuple(edge_index.size())[:2]} but x gives "
                f"(num_target_nodes, num_source_nodes) = ({n_dst}, {n_src})"
            )
        if edge_dim is not None and edge_attr is None:
            if isinstance(edge_index, SparseTensor):
                sparse_values = edge_index.storage.value()
            else:
                sparse_values = to_edge_index(edge_index)[1]
    elif isinstance(edge_index, Tensor):
        if (
            edge_index.is_floating_point()
            or edge_index.is_complex()
            or edge_index.dtype == torch.bool
        ):
            raise ValueError(
                f"{name}: edge_index must be an integer tensor, got {edge_index.dtype}"
            )
        if edge_index.dim() != 2 or edge_index.size(0) != 2:
            raise ValueError(
                f"{name}: edge_index must have shape [2, num_edges], got {tuple(edge_index.shape)}"
            )
        if _check_ranges and edge_index.numel() > 0 and edge_index.device.type != "cpu":
            # On a GPU a host-side check would sync every layer call: assert on the device
            # instead (asynchronous; a failure surfaces as a device-side assertion).
            s, t = (0, 1) if flow == "source_to_target" else (1, 0)
            lo, hi = torch.aminmax(edge_index, dim=1)
            ok = (lo.min() >= 0) & (hi[s] < n_src) & (hi[t] < n_dst)
            torch._assert_async(ok, f"{name}: edge_index is out of range")
        elif _check_ranges and edge_index.numel() > 0 and not torch.compiler.is_compiling():
            # (Inside torch.compile the check would break the graph: compiled models skip it.)
            lo, hi = (v.tolist() for v in torch.aminmax(edge_index, dim=1))
            s, t = (0, 1) if flow == "source_to_target" else (1, 0)
            if min(lo) < 0 or hi[s] >= n_src or hi[t] >= n_dst:
                raise ValueError(
                    f"{name}: edge_index is out of range: source indices span [{lo[s]}, {hi[s]}] "
                    f"for {n_src} source nodes, target indices [{lo[t]}, {hi[t]}] for {n_dst} "
                    "target nodes"
                )
    else:
        raise ValueError(
            f"{name}: edge_index must be a [2, num_edges] integer tensor, a SparseTensor or a "
            f"torch.sparse tensor, got {type(edge_index).__name__}"
        )

    num_edges = _num_edges(edge_index)
    if edge_dim is None:
        if edge_attr is not None:
            raise ValueError(
                f"{name}: edge_attr was passed but the layer was built without edge_dim; "
                "build it with edge_dim=<edge feature width> to use edge features"
            )
        return x_src, x_dst, None
    if edge_attr is None:
        edge_attr = sparse_values
    if edge_attr is None:
        if num_edges > 0:
            raise ValueError(
                f"{name}: the layer was built with edge_dim={edge_dim} but edge_attr is missing"
            )
        return x_src, x_dst, x_src.new_zeros(0, edge_dim)
    if edge_attr.dim() == 1 and edge_dim == 1:
        edge_attr = edge_attr.unsqueeze(-1)
    if not edge_attr.is_floating_point():
        raise ValueError(
            f"{name}: edge_attr has dtype {edge_attr.dtype}; the layer takes float edge features, "
            "so embed categorical bond features first"
        )
    if edge_attr.dim() != 2 or edge_attr.size(1) != edge_dim:
        raise ValueError(
            f"{name}: edge_attr must have shape [num_edges, edge_dim={edge_dim}], "
            f"got {tuple(edge_attr.shape)}"
        )
    if edge_attr.size(0) != num_edges:
        raise ValueError(
            f"{name}: edge_attr has {edge_attr.size(0)} rows but there are {num_edges} edges"
        )
    return x_src, x_dst, edge_attr
