"""``kangnn explain``: what a trained KAN model uses, and the formula of its head.

For a finished KAN run, :func:`explain_run`

1. collects, with forward hooks, the inputs of the head (the normalised graph embeddings) and
   of every conv's update function (GIN/GINE ``nn``, MPNN ``update_fn``, D-MPNN ``output_fn``;
   the gated conv has none, so its message function on ``[h_i || h_j || e_ij]``) on the
   training molecules, and on the validation molecules for the head;
2. scores every input of those functions with :func:`kangnn.kan.importance` on the training
   inputs (pykan's attribution scores: an input's share of the spread of the units it feeds,
   passed back from the outputs);
3. prunes the head with :func:`kangnn.kan.prune` at ``threshold`` (scores and folded constants
   from the training inputs) and evaluates the model with the pruned head on the validation
   part, next to the original;
4. fits the pruned head with :func:`kangnn.kan.auto_symbolic` on the training inputs: its
   formula in the graph-embedding dimensions ``g_<k>`` (and, with ``dataset.descriptors``, the
   descriptors' normal scores under their RDKit names, e.g. ``MolLogP``), and per layer the
   edges that are constant, near-linear, fitted by which library function or kept as splines
   (the model with the formula as its head is evaluated on validation too). The library is the
   default one without ``1/x``, ``sqrt`` and ``log`` (:data:`EXPLAIN_LIBRARY`): validation
   embeddings can lie beyond the training range, where those may be undefined. A head with more
   than :data:`LARGE_HEAD_EDGES` edges is fitted with one refined candidate per edge on 256 rows;
5. plots the most important edge functions of the head and of each conv function with their
   library fit overlaid.

It writes ``report.md``, ``formulas.json`` and the PNGs into ``RUN_DIR/explain`` (or ``out``),
atomically: everything goes to a temporary folder that replaces the old one at the end.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kangnn.data.descriptors import descriptor_names
from kangnn.kan import KAN, LIBRARY, KANLinear, auto_symbolic, fit_function, importance, prune
from kangnn.kan.prune import edge_values, layer_inputs
from kangnn.kan.symbolic import EdgeFit, SymbolicResult, _r2

__all__ = ["ExplainResult", "explain_run"]

REPORT_FILE = "report.md"
FORMULAS_FILE = "formulas.json"
#: The library for the head's formula: the default one without the functions of a restricted
#: domain (1/x, sqrt, log), which validation molecules beyond the training range can leave.
EXPLAIN_LIBRARY = tuple(n for n in LIBRARY if n not in ("1/x", "sqrt", "log"))
#: Above this many edges the head's formula is fitted with lighter settings.
LARGE_HEAD_EDGES = 2000
#: The attribute holding a conv's update function, in the order they are looked for.
UPDATE_FUNCTIONS = ("update_fn", "output_fn", "nn", "message_fn")


@dataclass
class _Function:
    """One KAN function of the model whose inputs are collected."""

    label: str
    kan: KAN
    names: list[str]
    groups: dict[str, list[int]]


@dataclass
class ExplainResult:
    """What :func:`explain_run` wrote (``out_dir``) and its headline numbers."""

    out_dir: Path
    metric: str
    val: float
    val_pruned: float
    val_formula: float
    head_widths: list[int]
    pruned_widths: list[int]
    formula: str
    closed_form: bool


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _input_names(conv: nn.Module, attr: str, width: int) -> tuple[list[str], dict[str, list[int]]]:
    """Names of a conv function's inputs and their groups (node, message, edge parts)."""
    h = conv.in_channels if isinstance(getattr(conv, "in_channels", None), int) else None
    if attr == "message_fn" and h is not None and 2 * h <= width:
        parts = [("h_i", h), ("h_j", h), ("e_ij", width - 2 * h)]
    elif attr in ("update_fn", "output_fn") and h is not None and h < width:
        parts = [("h", h), ("m", width - h)]
    else:  # GIN/GINE: (1 + eps) h_i + sum_j m_ij, one part
        parts = [("z", width)]
    names, groups, start = [], {}, 0
    for name, n in parts:
        if n <= 0:
            continue
        names += [f"{name}[{k}]" for k in range(n)]
        groups[name] = list(range(start, start + n))
        start += n
    return names, groups


def _conv_functions(model: nn.Module) -> list[tuple[int, str, KAN, nn.Module]]:
    """``(layer, attribute, KAN function, conv)`` of every conv with a KAN update function."""
    found = []
    for idx, conv in enumerate(getattr(model, "convs", [])):
        for attr in UPDATE_FUNCTIONS:
            fn = getattr(conv, attr, None)
            if isinstance(fn, KAN):
                found.append((idx, attr, fn, conv))
                break
    return found


@torch.no_grad()
def _collect(
    module: nn.Module, loader: Any, convs: list[tuple[int, str, KAN, nn.Module]], max_rows: int
) -> tuple[Tensor, list[Tensor]]:
    """The head's inputs and each conv function's inputs over ``loader`` (eval mode)."""
    model = module.model
    head_in: list[Tensor] = []
    conv_in: list[list[Tensor]] = [[] for _ in convs]
    hooks = [model.head.register_forward_pre_hook(lambda m, a: head_in.append(a[0].detach()))]
    for k, (_, attr, fn, conv) in enumerate(convs):
        if attr == "message_fn":
            # Evaluated through partial() when decomposed: rebuild its per-edge input.
            def grab(m, args, k=k):
                x, edge_index = args[0], args[1]
                edge_attr = args[2] if len(args) > 2 else None
                conv_in[k].append(m.edge_inputs(x, x, edge_index, edge_attr).detach())

            hooks.append(conv.register_forward_pre_hook(grab))
        else:
            hooks.append(
                fn.register_forward_pre_hook(lambda m, a, k=k: conv_in[k].append(a[0].detach()))
            )
    module.eval()
    try:
        for batch in loader:
            module(batch)
    finally:
        for hook in hooks:
            hook.remove()
    gen = torch.Generator().manual_seed(0)

    def cat(parts: list[Tensor]) -> Tensor:
        x = torch.cat(parts) if parts else torch.empty(0)
        if x.shape[0] > max_rows:  # a fixed random subset of the rows
            x = x[torch.randperm(x.shape[0], generator=gen)[:max_rows]]
        return x

    return cat(head_in), [cat(p) for p in conv_in]


class _SelectedHead(nn.Module):
    """A pruned head that reads only the kept inputs of the graph embedding."""

    def __init__(self, kan: KAN, active: Sequence[int]) -> None:
        super().__init__()
        self.kan = kan
        self.register_buffer("active", torch.tensor(list(active), dtype=torch.long))

    def forward(self, g: Tensor) -> Tensor:
        return self.kan(g.index_select(-1, self.active))


class _FormulaHead(nn.Module):
    """The head's symbolic formula as a head (evaluated in float64 by numpy)."""

    def __init__(self, result: SymbolicResult, active: Sequence[int]) -> None:
        super().__init__()
        self.result = result
        self.active = list(active)

    def forward(self, g: Tensor) -> Tensor:
        out = self.result.evaluate(g[:, self.active])
        return torch.as_tensor(out, dtype=g.dtype, device=g.device)


def _evaluate_with_head(module: nn.Module, head: nn.Module, loader: Any, metric: str) -> float:
    from kangnn.train.run import evaluate

    original = module.model.head
    module.model.head = head
    try:
        values, _ = evaluate(module, loader)
    finally:
        module.model.head = original
    v = values.get(metric)
    return math.nan if v is None else float(v)


def _top(scores: Tensor, k: int) -> list[int]:
    return [int(i) for i in torch.argsort(scores, descending=True)[:k]]


def _fmt(v: float, digits: int = 4) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _plot_edges(
    panels: list[dict[str, Any]], path: Path, title: str, plt_mod: Any | None = None
) -> None:
    """One panel per edge: the learned function over its input's data range (solid), its
    library fit (dashed) and the data's 5-95% range (shaded)."""
    plt = plt_mod or _pyplot()
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    height = 2.4 * rows + 0.6
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, height), squeeze=False)
    for ax, p in zip(axes.flat, panels, strict=False):
        ax.plot(p["x"], p["y"], color="tab:blue", linewidth=1.6, label="learned")
        fit = p["fit"]
        if fit is not None and fit.name != "0":
            with np.errstate(all="ignore"):
                yf = fit.fitted_values(p["x"], per_edge=True)
            ax.plot(p["x"], yf, "--", color="tab:orange", linewidth=1.3, label=fit.name)
        ax.axvspan(p["q05"], p["q95"], color="0.9", zorder=0)
        r2 = "" if fit is None else f", R²={fit.r2:.3f} ({fit.kind})"
        ax.set_title(f"{p['label']}\n{'' if fit is None else fit.name}{r2}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="upper left")  # a fixed place: "best" is slow
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(hspace=0.75, wspace=0.3, top=1 - 0.95 / height, bottom=0.35 / height)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _edge_panel(
    layer: KANLinear, h: Tensor, i: int, j: int, label: str, fit: EdgeFit | None, points: int = 200
) -> dict[str, Any]:
    xi = h[:, i].double()
    q = torch.quantile(xi, torch.tensor([0.01, 0.05, 0.95, 0.99], dtype=xi.dtype))
    lo, hi = float(q[0]), float(q[3])
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    grid = torch.linspace(lo, hi, points, dtype=layer.base_weight.dtype)
    with torch.no_grad():
        y = layer.partial(grid[:, None], i)[:, j]
    return {
        "x": grid.double().numpy(),
        "y": y.double().numpy(),
        "q05": float(q[1]),
        "q95": float(q[2]),
        "label": label,
        "fit": fit,
    }


def _head_panels(
    pruned: KAN, res: SymbolicResult, x: Tensor, names: list[str], top: int
) -> list[dict[str, Any]]:
    """The ``top`` head edges with the highest scores over all layers, with their fits."""
    acts = layer_inputs(pruned, x)
    edges = [e for layer in res.edges for e in layer if e.kind != "zero"]
    edges.sort(key=lambda e: -e.score)
    panels = []
    for e in edges[:top]:
        src = names[e.i] if e.layer == 0 else f"u{e.layer}[{e.i}]"
        last = e.layer == len(pruned.layers) - 1
        dst = f"y[{e.j}]" if last else f"u{e.layer + 1}[{e.j}]"
        panels.append(
            _edge_panel(pruned.layers[e.layer], acts[e.layer], e.i, e.j, f"{src} → {dst}", e)
        )
    return panels


def _conv_panels(
    fn: KAN, x: Tensor, names: list[str], scores: list[Tensor], top: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``top`` first-layer edges of a conv function by score, each fitted on its data."""
    layer = fn.layers[0]
    flat = scores[0].flatten()  # [out * in], output-major
    order = torch.argsort(flat, descending=True)[:top].tolist()
    panels, fits = [], []
    rows = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:512]
    xs = x[rows]
    for k in order:
        j, i = divmod(k, layer.in_features)
        y = edge_values(layer, xs, i)[:, j]
        fit = fit_function(xs[:, i], y)
        fit.layer, fit.i, fit.j, fit.score = 0, i, j, float(flat[k])
        panels.append(_edge_panel(layer, x, i, j, f"{names[i]} → u1[{j}]", fit))
        fits.append({**fit.as_dict(), "input_name": names[i]})
    return panels, fits


def _group_shares(scores: Tensor, groups: dict[str, list[int]]) -> dict[str, float]:
    total = float(scores.sum()) or 1.0
    return {g: float(scores[idx].sum()) / total for g, idx in groups.items()}


def _short(expr: str, limit: int = 1500) -> str:
    if len(expr) <= limit:
        return expr
    return expr[:limit] + f" … ({len(expr) - limit} more characters: see {FORMULAS_FILE})"


def _json_safe(obj: Any) -> Any:
    """NaN and inf as ``null``: strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _is_report_dir(path: Path) -> bool:
    """Whether ``path`` may be replaced: an empty folder or an earlier report."""
    return path.is_dir() and (not any(path.iterdir()) or (path / REPORT_FILE).is_file())


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` to ``out``, replacing an older ``out`` (never half-written)."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def explain_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    threshold: float = 1e-2,
    top: int = 8,
    max_molecules: int = 2000,
    data_root: str | None = None,
    log: Callable[[str], None] | None = None,
) -> ExplainResult:
    """Explain a trained KAN run (see the module docstring); returns where the report went.

    Parameters
    ----------
    run_dir:
        A finished ``kangnn train`` run of a KAN model.
    out_dir:
        Where the report goes (default ``RUN_DIR/explain``). An existing folder is replaced
        only if it is empty or holds an earlier report (a ``report.md``).
    threshold:
        Importance score below which the head's inputs and hidden units are pruned.
    top:
        Edge functions plotted per function (head and each conv).
    max_molecules:
        At most this many training molecules are used (the first ones of the split).
    data_root:
        The data root, if it moved since training (default: the run's ``dataset.root``).
    log:
        Where progress lines go.

    Raises
    ------
    RunDirError, CheckpointError
        A missing or incomplete run directory, an MLP run (nothing to explain), or an
        ``out_dir`` that exists and is not a report.
    kangnn.data.DataError
        The run's data cannot be loaded (moved: give ``data_root``).
    ValueError
        A bad ``threshold`` or ``top``.
    """
    from torch_geometric.loader import DataLoader

    from kangnn.config import primary_metric
    from kangnn.data import load_split
    from kangnn.train.data import MoleculeDataModule, prepare_data
    from kangnn.train.run import load_run
    from kangnn.train.rundir import SPLITS_FILE, RunDirError, load_run_config

    log = log or (lambda s: None)
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    run = Path(run_dir)
    mlp = f"{run} is an MLP run: explain needs a KAN model (model.function=kan)"
    if load_run_config(run).model.function != "kan":  # before the checkpoint is read
        raise RunDirError(mlp)
    cfg, module, metrics = load_run(run)
    if not isinstance(module.model.head, KAN):
        raise RunDirError(mlp)
    if data_root is not None:
        cfg.dataset.root = data_root
    out = Path(out_dir) if out_dir is not None else run / "explain"
    if out.exists() and not _is_report_dir(out):
        raise RunDirError(
            f"{out} exists and is not an explain report (no {REPORT_FILE}): not replacing it"
        )
    t0 = time.perf_counter()

    data = prepare_data(cfg, load_split(run / SPLITS_FILE))
    metric, _ = primary_metric(data.task)
    data.split = {**data.split, "train": data.split["train"][:max_molecules]}
    dm = MoleculeDataModule(data, batch_size=cfg.train.batch_size)
    convs = _conv_functions(module.model)
    train_loader = DataLoader(data.part("train"), batch_size=cfg.train.batch_size)
    g_train, conv_x = _collect(module, train_loader, convs, max_rows=20000)
    log(f"explain: inputs of the head and {len(convs)} conv functions collected")

    head: KAN = module.model.head
    n_desc = module.model.num_descriptors
    names = [f"g_{k}" for k in range(head.layers[0].in_features - n_desc)]
    if n_desc:  # the head's last inputs are the descriptors' normal scores
        names += descriptor_names(cfg.dataset.descriptors)
    head_imp = importance(head, g_train)
    pruned = prune(head, g_train, threshold=threshold, scores=head_imp)
    active = pruned.active_inputs
    val_loader = dm.val_dataloader()
    val = _evaluate_with_head(module, head, val_loader, metric)
    val_pruned = _evaluate_with_head(module, _SelectedHead(pruned, active), val_loader, metric)
    log(
        f"explain: head {head.widths} pruned to {pruned.widths}; val {metric} {val:.4f} -> "
        f"{val_pruned:.4f}"
    )

    x_active = g_train[:, active]
    w = pruned.widths
    n_edges = sum(w[k] * w[k + 1] for k in range(len(w) - 1))
    # A wide head has tens of thousands of edges: a lighter fit (one refined candidate per
    # edge, 256 points) keeps it to about a minute.
    big = n_edges > LARGE_HEAD_EDGES
    res = auto_symbolic(
        pruned,
        x_active,
        library=EXPLAIN_LIBRARY,
        symbols=[names[i] for i in active],
        refine=1 if big else 3,
        max_points=256 if big else 512,
    )
    val_formula = _evaluate_with_head(module, _FormulaHead(res, active), val_loader, metric)
    g_val, _ = _collect(module, val_loader, [], max_rows=20000)
    with torch.no_grad():
        head_val = pruned(g_val[:, active]).double().numpy()
    formula_val = res.evaluate(g_val[:, active])
    finite = np.isfinite(formula_val).all(1)
    formula_val_r2 = _r2(formula_val[finite], head_val[finite]) if finite.any() else math.nan
    formula = res.formula_str(4)
    log(f"explain: head formula fitted ({'closed form' if res.is_closed_form else 'with splines'})")

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        plt = _pyplot()
        figures = []
        panels = _head_panels(pruned, res, x_active, [names[i] for i in active], top)
        if panels:
            _plot_edges(
                panels,
                tmp / "head_functions.png",
                "head: most important edge functions (dashed: library fit)",
                plt,
            )
            figures.append(("head_functions.png", "the head's most important edges"))
        conv_reports = []
        for (idx, attr, fn, conv), x in zip(convs, conv_x, strict=True):
            in_names, groups = _input_names(conv, attr, fn.layers[0].in_features)
            imp = importance(fn, x)
            cpanels, cfits = _conv_panels(fn, x, in_names, imp.edge_scores, top)
            png = f"conv{idx}_{attr}.png"
            _plot_edges(
                cpanels,
                tmp / png,
                f"conv {idx} {attr}: most important first-layer edges (dashed: library fit)",
                plt,
            )
            figures.append((png, f"conv {idx} ({type(conv).__name__}.{attr})"))
            conv_reports.append(
                {
                    "layer": idx,
                    "conv": type(conv).__name__,
                    "function": attr,
                    "widths": list(fn.widths),
                    "input_names": in_names,
                    "input_scores": [float(v) for v in imp.inputs],
                    "inputs_below_threshold": int((imp.inputs < threshold).sum()),
                    "group_shares": _group_shares(imp.inputs, groups),
                    "top_edges": cfits,
                    "rows": int(x.shape[0]),
                }
            )

        summary = res.summary()
        doc = {
            "run_dir": str(run),
            "metric": metric,
            "val": {"original": val, "head_pruned": val_pruned, "head_formula": val_formula},
            "formula_fit": {
                "r2_train": res.fit_r2,
                "r2_val": formula_val_r2,
                "val_nonfinite": int((~finite).sum()),
                "light_fit": big,
            },
            "threshold": threshold,
            "head": {
                "widths": list(head.widths),
                "pruned_widths": list(pruned.widths),
                "active_inputs": list(active),
                "max_deviation_train": pruned.max_deviation,
                "input_scores": [float(v) for v in head_imp.inputs],
                "formula": formula,
                **res.to_dict(),
            },
            "convs": conv_reports,
            "train_molecules": len(data.split["train"]),
            "val_molecules": len(data.split["val"]),
        }
        (tmp / FORMULAS_FILE).write_text(json.dumps(_json_safe(doc), indent=2) + "\n")
        report = _report(
            cfg,
            run,
            metric,
            metrics,
            doc,
            head_imp.inputs,
            names,
            res,
            summary,
            conv_reports,
            figures,
            top,
        )
        (tmp / REPORT_FILE).write_text(report)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"explain: written in {time.perf_counter() - t0:.1f} s")
    return ExplainResult(
        out_dir=out,
        metric=metric,
        val=val,
        val_pruned=val_pruned,
        val_formula=val_formula,
        head_widths=list(head.widths),
        pruned_widths=list(pruned.widths),
        formula=formula,
        closed_form=res.is_closed_form,
    )


def _report(
    cfg: Any,
    run: Path,
    metric: str,
    metrics: dict[str, Any],
    doc: dict[str, Any],
    head_scores: Tensor,
    names: list[str],
    res: SymbolicResult,
    summary: list[dict[str, Any]],
    convs: list[dict[str, Any]],
    figures: list[tuple[str, str]],
    top: int,
) -> str:
    h = doc["head"]
    v = doc["val"]
    name = cfg.name or cfg.dataset.name or "run"
    lines = [
        f"# What {name} ({cfg.model.conv}, KAN) uses",
        "",
        f"Run `{run}`; {doc['train_molecules']} training molecules for the scores, the pruning "
        f"and the formula, {doc['val_molecules']} validation molecules for the metrics. Scores "
        "are pykan's attribution scores (an input's share of the spread of the units it feeds, "
        "passed back from the outputs; `kangnn.kan.importance`).",
        "",
        "## Validation " + metric,
        "",
        _table(
            ["model", f"val {metric}", "head widths"],
            [
                ["original", _fmt(v["original"]), "→".join(map(str, h["widths"]))],
                [
                    f"head pruned (scores < {doc['threshold']:g} dropped)",
                    _fmt(v["head_pruned"]),
                    "→".join(map(str, h["pruned_widths"])),
                ],
                ["head replaced by its formula", _fmt(v["head_formula"]), "—"],
            ],
        ),
        "",
        f"(`metrics.json` recorded val {metric} {_fmt((metrics.get('val') or {}).get(metric))}.)"
        f" The pruned head differs from the original by at most {h['max_deviation_train']:.3g} "
        "on the training embeddings.",
        "",
        "## Head: inputs by importance",
        "",
    ]
    order = _top(head_scores, top)
    kept = set(h["active_inputs"])
    lines.append(
        _table(
            ["input", "score", "kept"],
            [
                [names[i], f"{float(head_scores[i]):.4f}", "yes" if i in kept else "no"]
                for i in order
            ],
        )
    )
    lines += [
        "",
        f"{len(kept)} of {len(names)} inputs kept; the rest scored below {doc['threshold']:g}.",
        "",
        "## Head formula",
        "",
        f"R² against the pruned head: {res.fit_r2:.4f} on the training embeddings"
        + (" (constants refitted jointly)" if res.refitted else "")
        + f", {_fmt(doc['formula_fit']['r2_val'])} on the validation embeddings"
        + (
            f" (undefined on {doc['formula_fit']['val_nonfinite']} of {doc['val_molecules']} "
            "molecules, whose embeddings leave a fitted function's domain)."
            if doc["formula_fit"]["val_nonfinite"]
            else "."
        )
        + (
            f" The head has more than {LARGE_HEAD_EDGES} edges: one candidate per edge refined,"
            " on 256 points."
            if doc["formula_fit"]["light_fit"]
            else ""
        ),
        "",
    ]
    if res.is_closed_form:
        lines.append("Every edge is a library function, so this is a closed form:")
    else:
        lines.append(
            f"{len(res.spline_edges)} edges fit no library function with R² >= 0.99 and stay "
            "splines, written `phiL_I_J(...)` (layer L, input I, output J of the pruned head):"
        )
    lines += ["", "```", _short(h["formula"]), "```", "", "Edges per layer of the pruned head:", ""]
    lines.append(
        _table(
            ["layer", "edges", "constant", "near-linear", "library fits", "splines"],
            [
                [
                    s["layer"],
                    s["edges"],
                    s["zero"],
                    s["linear"],
                    ", ".join(f"{k} {n}" for k, n in sorted(s["functions"].items())) or "—",
                    s["spline"],
                ]
                for s in summary
            ],
        )
    )
    lines += ["", "## Conv functions: inputs by importance", ""]
    for c in convs:
        shares = ", ".join(f"{k} {100 * s:.0f}%" for k, s in c["group_shares"].items())
        best = sorted(range(len(c["input_scores"])), key=lambda i: -c["input_scores"][i])[:5]
        tops = ", ".join(f"{c['input_names'][i]} ({c['input_scores'][i]:.3f})" for i in best)
        lines.append(
            f"- conv {c['layer']} `{c['conv']}.{c['function']}` "
            f"({'→'.join(map(str, c['widths']))}): score shares {shares}; top inputs {tops}; "
            f"{c['inputs_below_threshold']} of {len(c['input_scores'])} inputs below "
            f"{doc['threshold']:g}."
        )
    lines += ["", "## Figures", ""]
    lines += [f"- `{png}`: {what}" for png, what in figures]
    return "\n".join(lines) + "\n"
