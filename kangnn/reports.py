"""Figures and tables: validation curves, learned KAN functions, and the comparison summary."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["format_pm", "markdown_table", "plot_curves", "plot_kan_functions"]

MODEL_COLORS = {"kan": "tab:blue", "mlp": "tab:orange"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def format_pm(mean: float | None, std: float | None, digits: int = 3) -> str:
    """``mean ± std`` with ``digits`` decimals; ``n/a`` for a missing mean."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_curves(
    curves: Mapping[str, Sequence[Sequence[tuple[int, float]]]],
    metric: str,
    path: str | Path,
    title: str = "",
) -> Path:
    """Validation metric against epoch, per model: each seed thin, the mean over seeds thick.

    Parameters
    ----------
    curves:
        ``{model: [[(epoch, value), ...] per seed]}``, epochs 1-based.
    metric:
        Axis label (e.g. ``"val RMSE"``).
    path:
        PNG to write (atomically).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for model, seeds in curves.items():
        color = MODEL_COLORS.get(model)
        by_epoch: dict[int, list[float]] = {}
        for points in seeds:
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, color=color, alpha=0.25, linewidth=0.8)
            for e, v in points:
                if not math.isnan(v):
                    by_epoch.setdefault(e, []).append(v)
        if by_epoch:
            epochs = sorted(by_epoch)
            mean = [float(np.mean(by_epoch[e])) for e in epochs]
            ax.plot(
                epochs,
                mean,
                color=color,
                linewidth=2.0,
                marker="o" if len(epochs) < 15 else None,
                markersize=3,
                label=f"{model.upper()} (mean of {len(seeds)} seeds)",
            )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    out = _save(fig, Path(path))
    plt.close(fig)
    return out


def _kan_layers(model: torch.nn.Module) -> list[tuple[str, Any]]:
    from kangnn.kan import KANLinear

    return [(name, m) for name, m in model.named_modules() if isinstance(m, KANLinear)]


def plot_kan_functions(
    model: torch.nn.Module,
    path: str | Path,
    edges_per_layer: int = 4,
    points: int = 200,
    title: str = "",
) -> Path:
    r"""Plot the learned univariate functions :math:`\phi_{q,p}` of every KAN layer in ``model``.

    One row per :class:`~kangnn.kan.KANLinear`, one panel per edge: the ``edges_per_layer``
    edges with the largest mean absolute value over their grid (the ones that matter most).
    Each panel spans its input's grid with half its width added on each side; the grid itself
    is shaded.

    Raises
    ------
    ValueError
        If ``model`` has no KAN layer (an MLP model).
    """
    layers = _kan_layers(model)
    if not layers:
        raise ValueError("the model has no KAN layers to plot (it is an MLP model)")
    plt = _pyplot()
    cols = max(1, edges_per_layer)
    fig, axes = plt.subplots(
        len(layers), cols, figsize=(2.3 * cols, 1.7 * len(layers)), squeeze=False
    )
    for row, (name, layer) in enumerate(layers):
        # Each input has its own grid (see MoleculeGNN.init_grids): evaluate on one line that
        # covers them all, then show each edge over its own input's grid, padded by half.
        lo_p = layer.basis.lo.detach().float().cpu()
        hi_p = layer.basis.hi.detach().float().cpu()
        pad_p = 0.5 * (hi_p - lo_p)
        x = torch.linspace(float((lo_p - pad_p).min()), float((hi_p + pad_p).max()), points * 4)
        with torch.no_grad():
            phi = layer.edge_functions(x).float().cpu()  # [points, out, in]
        inside = ((x[:, None] >= lo_p) & (x[:, None] <= hi_p)).float()  # [points, in]
        strength = (phi.abs() * inside[:, None, :]).sum(0) / inside.sum(0).clamp_min(1)
        top = torch.topk(strength.flatten(), min(cols, strength.numel())).indices
        for c in range(cols):
            ax = axes[row][c]
            if c >= top.numel():
                ax.axis("off")
                continue
            q, p = divmod(int(top[c]), strength.size(1))
            lo, hi, pad = float(lo_p[p]), float(hi_p[p]), float(pad_p[p])
            view = (x >= lo - pad) & (x <= hi + pad)
            ax.axvspan(lo, hi, color="0.93", zorder=0)
            ax.plot(x[view].numpy(), phi[view, q, p].numpy(), color="tab:blue", linewidth=1.2)
            ax.set_title(f"in {p} → out {q}", fontsize=7)
            ax.tick_params(labelsize=6)
            if c == 0:
                ax.set_ylabel(name.replace("model.", ""), fontsize=7)
    fig.suptitle(title or "Learned KAN functions φ(x) (shaded: grid range)", fontsize=9)
    fig.tight_layout()
    out = _save(fig, Path(path))
    plt.close(fig)
    return out
