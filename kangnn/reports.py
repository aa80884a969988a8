"""Figures and tables: validation curves, learned KAN functions, comparison summaries and the
results table that collects all comparisons (:func:`results_table`, ``kangnn report``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "format_pm",
    "load_results",
    "markdown_table",
    "plot_curves",
    "plot_kan_functions",
    "results_table",
]

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


# ----------------------------------------------------------------------------- results table

RESULTS_ORDER = ("esol", "freesolv", "lipo", "bace", "bbbp", "clintox", "hiv")
EXTERNAL_MODELS = ("chemprop", "chemprop-tuned")


def _variant(row: Mapping[str, Any]) -> str:
    """``conv``, with ``+<descriptor set>`` for a model whose head also sees descriptors."""
    d = row.get("descriptors")
    return f"{row.get('conv', '')}+{d}" if d else str(row.get("conv", ""))


def _model_label(row: Mapping[str, Any]) -> str:
    model = str(row["model"])
    d = row.get("descriptors")
    if model in EXTERNAL_MODELS:
        return f"{model}+{d}" if d else model
    return f"{model.upper()} {_variant(row)}".strip()


def _per_seed(summary_path: Path, summary: Mapping[str, Any], model: str) -> dict[int, dict]:
    """``{seed: {"val": v, "test": t}}`` of one model: from ``per_seed`` in the summary, else
    from the ``runs.csv`` beside it (summaries written before ``per_seed`` existed)."""
    metric = summary["metric"]
    if "per_seed" in summary:
        return {
            int(r["seed"]): {"val": r.get("val"), "test": r.get("test")}
            for r in summary["per_seed"].get(model, [])
        }
    runs = summary_path.with_name("runs.csv")
    out: dict[int, dict] = {}
    if runs.is_file():
        import csv

        with open(runs, newline="") as f:
            for r in csv.DictReader(f):
                if r.get("model") == model:
                    val, test = r.get(f"val_{metric}", ""), r.get(f"test_{metric}", "")
                    out[int(r["seed"])] = {
                        "val": float(val) if val not in ("", None) else None,
                        "test": float(test) if test not in ("", None) else None,
                    }
    return out


def _read_summaries(paths: Sequence[Path]) -> list[tuple[Path, dict]]:
    """Each comparison ``summary.json`` of ``paths`` with its parsed contents, read once; the
    summary of a ``kangnn tune`` study (``trials`` and ``best``, no ``rows``) is skipped.

    Raises
    ------
    ValueError
        A file that is neither.
    """
    out = []
    for path in paths:
        try:
            summary = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a kangnn summary.json ({err})") from None
        is_dict = isinstance(summary, dict)
        if is_dict and "rows" not in summary and {"trials", "best"} <= set(summary):
            continue
        if not is_dict or "rows" not in summary or "metric" not in summary:
            raise ValueError(f"{path}: not a kangnn summary.json (no rows or metric)")
        out.append((path, summary))
    return out


def load_results(results_dir: str | Path, datasets: Sequence[str] | None = None) -> list[dict]:
    """Collect the comparisons under ``results_dir``: one entry per dataset folder.

    Each ``<results_dir>/<dataset>/summary.json`` and ``<results_dir>/<dataset>/*/summary.json``
    (one comparison per conv, say; train chemprop with only one of them) contributes its rows;
    the ``summary.json`` of a ``kangnn tune`` folder beside them is skipped.

    Returns
    -------
    list of dict
        ``{"dataset", "metric", "mode", "task", "models": [{"label", "row", "seeds", "source"}]}``
        in the order of ``datasets`` (default: the MoleculeNet order, then other folders by name).

    Raises
    ------
    ValueError
        A file that is not a comparison summary, two metrics for one dataset, or one model (say
        ``KAN gine``) in two summaries of a dataset (naming both files).
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(2, "No such directory", str(root))
    if datasets:
        paths = []
        for name in datasets:
            top = root / name / "summary.json"
            paths += [top] if top.is_file() else []
            paths += sorted((root / name).glob("*/summary.json"))
    else:
        paths = sorted(root.glob("*/summary.json")) + sorted(root.glob("*/*/summary.json"))
    by_dataset: dict[str, list[tuple[Path, dict]]] = {}
    for path, summary in _read_summaries(paths):  # `kangnn tune` folders sit beside, skipped
        name = path.parent.name if path.parent.parent == root else path.parent.parent.name
        by_dataset.setdefault(name, []).append((path, summary))
    if datasets:
        names = list(datasets)
    else:
        names = [d for d in RESULTS_ORDER if d in by_dataset]
        names += sorted(d for d in by_dataset if d not in RESULTS_ORDER)
    out = []
    for name in names:
        summaries = by_dataset.get(name)
        if not summaries:
            raise FileNotFoundError(
                2, "No comparison summary.json for this dataset", str(root / name)
            )
        entry: dict[str, Any] = {"dataset": name, "models": []}
        seen: dict[str, Path] = {}
        for path, summary in summaries:
            rows, metric = summary["rows"], summary["metric"]
            if "metric" in entry and entry["metric"] != metric:
                raise ValueError(f"{path}: metric {metric} differs from {entry['metric']}")
            entry.update(metric=metric, mode=summary["mode"], task=summary.get("task"))
            for row in rows:
                label = _model_label(row)
                if label in seen:
                    raise ValueError(
                        f"{name}: model {label!r} is in both {seen[label]} and {path}; keep one"
                    )
                seen[label] = path
                entry["models"].append(
                    {
                        "label": label,
                        "row": row,
                        "seeds": _per_seed(path, summary, row["model"]),
                        "source": str(path.relative_to(root)),
                    }
                )
        out.append(entry)
    return out


def _better(a: float | None, b: float | None, mode: str) -> bool | None:
    if a is None or b is None:
        return None
    return a < b if mode == "min" else a > b


def _paired_p(a: Mapping[int, dict], b: Mapping[int, dict]) -> tuple[float | None, int]:
    from kangnn.train.compare import wilcoxon_test

    seeds = sorted(set(a) & set(b))
    test = wilcoxon_test([a[s]["test"] for s in seeds], [b[s]["test"] for s in seeds])
    return test["p"], test["n"]


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.3g}"


def _best(models: Sequence[dict], metric: str, mode: str) -> dict | None:
    """The model with the best mean validation metric (selection never looks at test)."""
    scored = [m for m in models if m["row"].get(f"val_{metric}_mean") is not None]
    if not scored:
        return None
    sign = 1.0 if mode == "min" else -1.0
    return min(scored, key=lambda m: sign * m["row"][f"val_{metric}_mean"])


def results_table(results_dir: str | Path, datasets: Sequence[str] | None = None) -> str:
    """The README's Results section as Markdown, from the comparisons' ``summary.json`` files.

    Three tables: every model of every dataset (test and validation mean ± std over seeds,
    seeds, parameters, time per epoch); each KAN against its parameter-matched MLP twin (the
    paired two-sided Wilcoxon p over seeds); and kangnn's best model against chemprop's, each
    side picked by its mean validation metric. A closing line counts the wins.

    Parameters
    ----------
    results_dir:
        Folder of ``<dataset>/summary.json`` (and ``<dataset>/<sub>/summary.json``) files.
    datasets:
        Which dataset folders, in order (default: all, MoleculeNet order first).
    """
    entries = load_results(results_dir, datasets)
    all_rows, twin_rows, ext_rows = [], [], []
    twin_wins = twin_sets = ext_wins = ext_sets = 0
    for e in entries:
        metric, mode = e["metric"], e["mode"]
        arrow = "↓" if mode == "min" else "↑"
        for m in e["models"]:
            r = m["row"]
            all_rows.append(
                [
                    e["dataset"],
                    f"{metric} {arrow}",
                    m["label"],
                    r.get("n_seeds", len(m["seeds"])),
                    format_pm(r.get(f"test_{metric}_mean"), r.get(f"test_{metric}_std")),
                    format_pm(r.get(f"val_{metric}_mean"), r.get(f"val_{metric}_std")),
                    f"{r['params']:,}" if r.get("params") is not None else "n/a",
                    format_pm(r.get("epoch_time_s_mean"), None, 2),
                ]
            )
        by_label = {m["label"]: m for m in e["models"]}
        kangnn = [m for m in e["models"] if m["row"]["model"] not in EXTERNAL_MODELS]
        won_twin = False
        for kan in (m for m in kangnn if m["row"]["model"] == "kan"):
            mlp = by_label.get(f"MLP {_variant(kan['row'])}".strip())
            if mlp is None:
                continue
            k, b = kan["row"].get(f"test_{metric}_mean"), mlp["row"].get(f"test_{metric}_mean")
            better = _better(k, b, mode)
            p, n = _paired_p(kan["seeds"], mlp["seeds"])
            won_twin = won_twin or bool(better)
            twin_rows.append(
                [
                    e["dataset"],
                    _variant(kan["row"]),
                    format_pm(k, kan["row"].get(f"test_{metric}_std")),
                    format_pm(b, mlp["row"].get(f"test_{metric}_std")),
                    "n/a" if better is None else ("KAN" if better else "MLP"),
                    _p(p),
                    n,
                ]
            )
        if any(m["row"]["model"] == "kan" for m in kangnn):
            twin_sets += 1
            twin_wins += won_twin
        external = [m for m in e["models"] if m["row"]["model"] in EXTERNAL_MODELS]
        ours, theirs = _best(kangnn, metric, mode), _best(external, metric, mode)
        if ours is not None and theirs is not None:
            a = ours["row"].get(f"test_{metric}_mean")
            b = theirs["row"].get(f"test_{metric}_mean")
            better = _better(a, b, mode)
            p, n = _paired_p(ours["seeds"], theirs["seeds"])
            ext_sets += 1
            ext_wins += bool(better)
            ext_rows.append(
                [
                    e["dataset"],
                    ours["label"],
                    format_pm(a, ours["row"].get(f"test_{metric}_std")),
                    theirs["label"],
                    format_pm(b, theirs["row"].get(f"test_{metric}_std")),
                    "n/a" if better is None else ("kangnn" if better else "chemprop"),
                    _p(p),
                    n,
                ]
            )
    parts = [
        "Test metric at the best-validation epoch, mean ± std (ddof=1) over seeds "
        "(↓ lower is better, ↑ higher is better):",
        "",
        markdown_table(
            ["dataset", "metric", "model", "seeds", "test", "val", "params", "s/epoch"], all_rows
        ),
    ]
    if twin_rows:
        parts += [
            "",
            "KAN vs its parameter-matched MLP twin (paired two-sided Wilcoxon signed-rank test "
            "on the test metric over seeds):",
            "",
            markdown_table(
                ["dataset", "conv", "KAN test", "MLP test", "better", "Wilcoxon p", "pairs"],
                twin_rows,
            ),
        ]
    if ext_rows:
        parts += [
            "",
            "kangnn's best model vs chemprop's (each side picked by its mean validation metric; "
            "paired Wilcoxon on the test metric over common seeds):",
            "",
            markdown_table(
                [
                    "dataset",
                    "kangnn model",
                    "test",
                    "chemprop model",
                    "test",
                    "better",
                    "Wilcoxon p",
                    "pairs",
                ],
                ext_rows,
            ),
        ]
    summary = []
    if twin_sets:
        summary.append(f"a KAN beats its MLP twin on {twin_wins} of {twin_sets} datasets")
    if ext_sets:
        summary.append(f"kangnn's best model beats chemprop's on {ext_wins} of {ext_sets}")
    if summary:
        parts += ["", "In short: " + "; ".join(summary) + " (mean test metric)."]
    return "\n".join(parts) + "\n"
