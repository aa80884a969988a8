"""Fitting the grids of every KAN layer in a model to the inputs each layer sees."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from kangnn.kan.basis import Basis
from kangnn.kan.linear import KANLinear

__all__ = ["fit_grids"]


def _record(module: nn.Module, forward: Callable[[], Any]) -> dict[KANLinear, dict]:
    """Run ``forward`` once; for each KAN layer (in the order they first run) the samples of
    each column block it evaluated: ``{layer: {(start, stop): [x, ...]}}``."""
    seen: dict[KANLinear, dict] = {}

    def record(layer: KANLinear, x: Tensor, cols: slice) -> None:
        span = (cols.start or 0, layer.in_features if cols.stop is None else cols.stop)
        seen.setdefault(layer, {}).setdefault(span, []).append(x.detach())

    layers = [m for m in module.modules() if isinstance(m, KANLinear)]
    for layer in layers:
        layer._recorder = record
    try:
        forward()
    finally:
        for layer in layers:
            layer._recorder = None
    return seen


@torch.no_grad()
def fit_grids(module: nn.Module, forward: Callable[[], Any], **update_grid_kwargs: Any) -> int:
    """Fit the grid of every :class:`KANLinear` in ``module`` to the inputs it sees in ``forward``.

    ``forward`` is a zero-argument callable that runs ``module`` on a sample (for example
    ``lambda: model(batch)``). Layers are fitted one at a time in the order they run, each on
    the inputs that the already-fitted layers before it produce; a layer evaluated by column
    blocks (the first layer of a decomposed message, through ``partial``/``partials``) fits each
    block's grids on that block's own inputs (node features, edge features). Everything is
    updated in place by :meth:`KANLinear.update_grid` (same ``Parameter`` objects, so optimizer
    state survives). The module runs in train mode (batch norm normalises with the sample's
    statistics, as in training); its running statistics and mode are restored afterwards.

    Parameters
    ----------
    module:
        Any module holding KAN layers (a :class:`~kangnn.models.MoleculeGNN`, a PyG model after
        ``kanify``, a :class:`KAN`).
    forward:
        Runs ``module`` on the fitting sample.
    **update_grid_kwargs:
        Passed to :meth:`KANLinear.update_grid` (``grid_eps``, ``percentile``, ``refit``).

    Returns
    -------
    int
        The number of KAN layers fitted (0 when there are none).
    """
    grid_buffers = {id(b) for m in module.modules() if isinstance(m, Basis) for b in m.buffers()}
    saved = [(b, b.clone()) for b in module.buffers() if id(b) not in grid_buffers]
    was_training = module.training
    fitted = 0
    try:
        module.train()
        order = list(_record(module, forward))
        for layer in order:
            # The inputs of this layer given every grid before it in its new place.
            blocks = _record(module, forward).get(layer, {})
            for (start, stop), xs in blocks.items():
                x = torch.cat([t.reshape(-1, stop - start) for t in xs])
                layer.update_grid(x, slice(start, stop), **update_grid_kwargs)
            fitted += bool(blocks)
    finally:
        module.train(was_training)
        for buf, value in saved:  # batch-norm statistics as they were
            buf.copy_(value)
    return fitted
