"""The KAN-vs-MLP comparison: same architecture, matched parameters, same splits and seeds.

For each seed the KAN model and its parameter-matched MLP baseline are trained on the same split
(scaffold splits are deterministic; random and balanced-scaffold splits follow the seed, the same
for both models), each selected on validation only. The summary reports mean ± std (ddof=1) over
seeds of the validation and test metrics (test at the best-validation epoch), the parameter
counts, time per training epoch and peak memory, and a paired Wilcoxon signed-rank test of the
test metric over seeds.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from kangnn.config import ConfigError, primary_metric, save_config, validate_config
from kangnn.reports import format_pm, markdown_table, plot_curves
from kangnn.train.rundir import (
    LOG_CSV,
    METRICS_FILE,
    RunDirError,
    drop_if_empty,
    make_dirs,
    read_metrics_csv,
    remove_tree,
    staging_dir,
    write_json,
)

__all__ = ["CompareResult", "RunFailedError", "compare", "wilcoxon_test"]

MODELS = ("kan", "mlp")
SEEDED_SPLITS = ("random", "balanced_scaffold")


class RunFailedError(RuntimeError):
    """A training run of the comparison failed (its one-line error is in the message)."""


@dataclass
class CompareResult:
    """A finished comparison: its directory, summary rows, test and printable table."""

    out_dir: Path
    rows: list[dict[str, Any]]
    test: dict[str, Any]
    table: str
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def wilcoxon_test(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Two-sided paired Wilcoxon signed-rank test of ``a`` vs ``b`` (zero differences dropped).

    Returns ``{"statistic", "p", "n", "note"}``; ``p`` is ``None`` (n/a) with fewer than two
    non-tied pairs, and ``note`` says why. With ``n`` pairs the smallest possible two-sided p is
    ``2 / 2**n`` (0.25 for 3 seeds, 0.0625 for 5, 0.03125 for 6).
    """
    pairs = [
        (x, y)
        for x, y in zip(a, b, strict=True)
        if x is not None and y is not None and not (math.isnan(x) or math.isnan(y))
    ]
    diffs = [x - y for x, y in pairs]
    nonzero = [d for d in diffs if d != 0]
    out: dict[str, Any] = {
        "statistic": None,
        "p": None,
        "n": len(pairs),
        "min_p": 2.0 / 2 ** len(nonzero) if nonzero else None,
        "note": "",
    }
    if len(nonzero) < 2:
        out["note"] = (
            f"n/a: {len(nonzero)} non-tied pair(s) of {len(pairs)} seeds; "
            "a paired test needs at least 2"
        )
        return out
    from scipy.stats import wilcoxon

    res = wilcoxon(
        [x for x, _ in pairs], [y for _, y in pairs], zero_method="wilcox", alternative="two-sided"
    )
    out["statistic"] = float(res.statistic)
    out["p"] = float(res.pvalue)
    out["note"] = f"{len(nonzero)} non-tied pairs; smallest possible p = {out['min_p']:.4g}"
    return out


def _stats(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None, None
    mean = float(np.mean(vals))
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return mean, std


def _curve(run_dir: Path, metric: str) -> list[tuple[int, float]]:
    points = []
    for row in read_metrics_csv(run_dir / LOG_CSV):
        v = row.get(f"val/{metric}", "")
        if v not in ("", None):
            points.append((int(float(row["epoch"])) + 1, float(v)))
    return points


def _run_config(cfg: DictConfig, function: str, seed: int) -> DictConfig:
    c = cfg.copy()
    c.model.function = function
    c.seed = seed
    c.train.resume = False
    if cfg.compare.isolate:
        c.train.progress_bar = False  # the child's output is captured, not shown
    return c


def _train_isolated(
    run_cfg: DictConfig, run_dir: Path, split: dict[str, list[int]]
) -> dict[str, Any]:
    """Train in a fresh Python process (clean peak-memory and timing figures)."""
    with tempfile.TemporaryDirectory(prefix="kangnn-cmp-") as tmp:
        cfg_path = Path(tmp) / "config.yaml"
        save_config(run_cfg, cfg_path)
        split_path = Path(tmp) / "splits.json"
        split_path.write_text(json.dumps(split))
        cmd = [sys.executable, "-m", "kangnn.cli", "train", str(cfg_path)]
        cmd += ["--run-dir", str(run_dir), "--split", str(split_path)]
        env = dict(os.environ)
        env.pop("KANGNN_RUN_STAGING", None)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        err = next((ln for ln in reversed(lines) if ln.startswith("kangnn: error:")), None)
        msg = err[len("kangnn: error:") :].strip() if err else (lines[-1] if lines else "no output")
        raise RunFailedError(f"training run {run_dir.name} failed (exit {proc.returncode}): {msg}")
    return json.loads((run_dir / METRICS_FILE).read_text())


def _train_inprocess(
    run_cfg: DictConfig, run_dir: Path, split: dict[str, list[int]]
) -> dict[str, Any]:
    from kangnn.train.run import train

    result = train(run_cfg, run_dir=run_dir, split=split)
    assert result is not None
    return result.metrics


def compare(
    cfg: DictConfig,
    seeds: int | None = None,
    out_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> CompareResult:
    """Train the KAN model of ``cfg`` and its parameter-matched MLP baseline over seeds.

    Parameters
    ----------
    cfg:
        The experiment config; ``model.function`` is set to ``kan`` and ``mlp`` in turn, and
        ``seed`` to ``seed, seed + 1, ...``.
    seeds:
        Number of seeds (default ``compare.seeds``).
    out_dir:
        Where the comparison goes (default ``<output_dir>/compare-<name>-<conv>-<time>``); it is
        written in ``<output_dir>/.partial`` first and moved there when complete.
    log:
        Where progress lines go.

    Returns
    -------
    CompareResult
        With ``summary.csv``, ``summary.md``, ``runs.csv``, ``curves.png`` and a run directory
        per model and seed under ``runs/`` in ``out_dir``.
    """
    from kangnn.train.data import prepare_data
    from kangnn.train.run import quiet_lightning, resolve_model

    quiet_lightning()
    log = log or (lambda s: None)
    validate_config(cfg)
    n_seeds = int(seeds if seeds is not None else cfg.compare.seeds)
    if n_seeds < 1:
        raise ConfigError(f"bad value for config key 'compare.seeds': {n_seeds} must be >= 1")
    seed_list = [int(cfg.seed) + i for i in range(n_seeds)]

    # Load the data, split it and match the baseline once, up front: bad input fails before any
    # training, and each seed's split is made once and handed to both of its runs.
    data = prepare_data(_run_config(cfg, "kan", seed_list[0]))
    _, match = resolve_model(_run_config(cfg, "mlp", seed_list[0]), data)
    splits: dict[int, dict[str, list[int]]] = {}
    for seed in seed_list:
        if cfg.dataset.split in SEEDED_SPLITS and cfg.dataset.split_seed is None:
            splits[seed] = prepare_data(_run_config(cfg, "kan", seed), reuse=data.dataset).split
        else:
            splits[seed] = data.split  # the same split for every seed
    task = data.task
    metric, mode = primary_metric(task)
    name = cfg.name or cfg.dataset.name or Path(cfg.dataset.path or "data").stem
    log(
        f"{name}: {len(data.dataset)} molecules ({task}), conv {cfg.model.conv}; KAN "
        f"{match.kan_params} parameters, MLP {match.mlp_params} (width "
        f"{match.mlp_hidden_channels}, {match.rel_diff:+.2%}); seeds {seed_list}"
    )
    del data

    final = (
        Path(out_dir)
        if out_dir is not None
        else (
            Path(cfg.output_dir)
            / f"compare-{name}-{cfg.model.conv}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
    )
    if final.exists():
        raise RunDirError(f"comparison directory already exists: {final}")
    staging = staging_dir(final)
    created = make_dirs(staging / "runs")
    run_one = _train_isolated if cfg.compare.isolate else _train_inprocess
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODELS}
    try:
        for seed in seed_list:
            for function in MODELS:
                run_cfg = _run_config(cfg, function, seed)
                if function == "mlp":
                    run_cfg.model.mlp_hidden_channels = match.mlp_hidden_channels
                run_dir = staging / "runs" / f"{function}-s{seed}"
                t0 = time.perf_counter()
                metrics = run_one(run_cfg, run_dir, splits[seed])
                metrics["run_dir"] = str(Path("runs") / run_dir.name)
                runs[function].append(metrics)
                log(
                    f"  seed {seed} {function.upper()}: val {metric} "
                    f"{_fmt(metrics['val'].get(metric))}, test {metric} "
                    f"{_fmt(metrics['test'].get(metric))}, best epoch "
                    f"{metrics['best_epoch']}/{metrics['epochs_run']}, "
                    f"{_fmt(metrics['epoch_time_s'])} s/epoch ({time.perf_counter() - t0:.0f} s)"
                )
        result = _summarise(cfg, staging, runs, metric, mode, task, match, name)
        os.replace(staging, final)
        drop_if_empty(staging.parent)
    except BaseException:
        remove_tree(staging, created)
        raise
    result.out_dir = final
    return result


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def _summarise(
    cfg: DictConfig,
    out: Path,
    runs: dict[str, list[dict[str, Any]]],
    metric: str,
    mode: str,
    task: str,
    match: Any,
    name: str,
) -> CompareResult:
    metric_names = list(runs["kan"][0]["test"].keys())
    metric_names = [m for m in metric_names if m != "auc_tasks"]
    test = wilcoxon_test(
        [r["test"].get(metric) for r in runs["kan"]], [r["test"].get(metric) for r in runs["mlp"]]
    )
    kan_times = [r["epoch_time_s"] for r in runs["kan"]]
    mlp_times = [r["epoch_time_s"] for r in runs["mlp"]]
    ratios = [k / m for k, m in zip(kan_times, mlp_times, strict=True) if k and m]
    time_ratio = float(np.mean(ratios)) if ratios else None

    rows: list[dict[str, Any]] = []
    for model in MODELS:
        rs = runs[model]
        row: dict[str, Any] = {
            "model": model,
            "conv": cfg.model.conv,
            "params": rs[0]["params"],
            "function_width": match.kan_hidden_channels
            if model == "kan"
            else match.mlp_hidden_channels,
            "n_seeds": len(rs),
        }
        for split in ("val", "test"):
            for m in metric_names:
                mean, std = _stats([r[split].get(m) for r in rs])
                row[f"{split}_{m}_mean"], row[f"{split}_{m}_std"] = mean, std
        for key, col in (
            ("epoch_time_s", "epoch_time_s"),
            ("peak_memory_mb", "peak_memory_mb"),
            ("best_epoch", "best_epoch"),
        ):
            row[f"{col}_mean"], row[f"{col}_std"] = _stats([r[key] for r in rs])
        row["memory_kind"] = rs[0]["memory_kind"]
        row["time_ratio_kan_mlp"] = time_ratio
        row["wilcoxon_stat"] = test["statistic"]
        row["wilcoxon_p"] = test["p"]
        row["wilcoxon_note"] = test["note"]
        rows.append(row)

    _write_csv(out / "summary.csv", rows)
    _write_runs_csv(out / "runs.csv", runs, metric_names)
    curves = {m: [_curve(out / r["run_dir"], metric) for r in runs[m]] for m in MODELS}
    label = f"validation {metric.upper().replace('_', '-')}"
    plot_curves(
        curves,
        label,
        out / "curves.png",
        title=f"{name} ({cfg.model.conv}): KAN vs parameter-matched MLP",
    )
    table = _table(rows, metric_names, metric)
    md = _markdown(cfg, name, task, metric, mode, rows, table, test, time_ratio, runs, match)
    tmp = out / ".summary.md.tmp"
    tmp.write_text(md)
    os.replace(tmp, out / "summary.md")
    write_json(
        out / "summary.json",
        {
            "rows": rows,
            "wilcoxon": test,
            "time_ratio_kan_mlp": time_ratio,
            "metric": metric,
            "mode": mode,
            "task": task,
        },
    )
    return CompareResult(out_dir=out, rows=rows, test=test, table=table, runs=runs)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    os.replace(tmp, path)


def _write_runs_csv(
    path: Path, runs: dict[str, list[dict[str, Any]]], metric_names: list[str]
) -> None:
    rows = []
    for model in MODELS:
        for r in runs[model]:
            row = {
                "model": model,
                "seed": r["seed"],
                "split_seed": r["split_seed"],
                "params": r["params"],
            }
            for split in ("val", "test"):
                for m in metric_names:
                    row[f"{split}_{m}"] = r[split].get(m)
            row.update(
                best_epoch=r["best_epoch"],
                epochs_run=r["epochs_run"],
                epoch_time_s=r["epoch_time_s"],
                peak_memory_mb=r["peak_memory_mb"],
                run_dir=r["run_dir"],
            )
            rows.append(row)
    _write_csv(path, rows)


def _table(rows: list[dict[str, Any]], metric_names: list[str], metric: str) -> str:
    header = ["model", "params"]
    header += [f"val {m}" for m in metric_names] + [f"test {m}" for m in metric_names]
    header += ["s/epoch", "peak MiB", f"Wilcoxon p (test {metric})"]
    body = []
    for row in rows:
        cells = [row["model"].upper(), f"{row['params']:,}"]
        for split in ("val", "test"):
            cells += [
                format_pm(row[f"{split}_{m}_mean"], row[f"{split}_{m}_std"]) for m in metric_names
            ]
        cells.append(format_pm(row["epoch_time_s_mean"], row["epoch_time_s_std"], 2))
        cells.append(format_pm(row["peak_memory_mb_mean"], row["peak_memory_mb_std"], 1))
        p = row["wilcoxon_p"]
        cells.append("n/a" if p is None else f"{p:.3g}")
        body.append(cells)
    return markdown_table(header, body)


def _markdown(
    cfg: DictConfig,
    name: str,
    task: str,
    metric: str,
    mode: str,
    rows: list[dict[str, Any]],
    table: str,
    test: dict[str, Any],
    time_ratio: float | None,
    runs: dict[str, list[dict[str, Any]]],
    match: Any,
) -> str:
    kind = rows[0]["memory_kind"]
    mem_note = (
        "CUDA peak allocated memory during training (torch.cuda.max_memory_allocated)"
        if kind == "cuda_max_allocated"
        else "CPU peak resident-memory increase during training (RSS high-water mark minus "
        "RSS at the start of fit"
        + (", each run in its own process)" if cfg.compare.isolate else ", runs in one process)")
    )
    better = "lower" if mode == "min" else "higher"
    seeds = [r["seed"] for r in runs["kan"]]
    lines = [
        f"# {name}: KAN vs parameter-matched MLP ({cfg.model.conv})",
        "",
        f"- Task: {task}; model selection on validation {metric} only ({better} is better); test "
        "metrics are those of the best-validation checkpoint.",
        f"- Split: {cfg.dataset.split} {list(cfg.dataset.split_sizes)}; seeds {seeds} "
        "(same split and seeds for both models"
        + (
            "; the split follows the seed)"
            if cfg.dataset.split in ("random", "balanced_scaffold")
            and cfg.dataset.split_seed is None
            else ")"
        ),
        f"- Architecture: {cfg.model.num_layers} x {cfg.model.conv} layers, "
        f"{cfg.model.hidden_channels} channels, {cfg.model.readout} readout, {cfg.model.norm} "
        "norm; only the hidden width of the message/update/head functions differs: KAN "
        f"{match.kan_hidden_channels} "
        f"(grid {cfg.model.grid_size}, order {cfg.model.spline_order}, {cfg.model.basis}) vs MLP "
        f"{match.mlp_hidden_channels}.",
        f"- Parameters: KAN {match.kan_params:,}, MLP {match.mlp_params:,} "
        f"({match.rel_diff:+.2%}, tolerance {cfg.model.match_tolerance:.0%}).",
        f"- Training: up to {cfg.train.epochs} epochs, batch {cfg.train.batch_size}, Adam lr "
        f"{cfg.train.lr}, early stopping patience {cfg.train.patience}.",
        "",
        "Mean ± std (ddof=1) over seeds:",
        "",
        table,
        "",
        f"- Paired Wilcoxon signed-rank test (two-sided) on test {metric}, KAN vs MLP over seeds: "
        + (
            f"statistic {test['statistic']:.3g}, p = {test['p']:.3g}."
            if test["p"] is not None
            else f"{test['note']}."
        )
        + (
            f" With {test['n']} seeds the smallest possible p is {2 / 2 ** test['n']:.4g}, so "
            "p < 0.05 needs at least 6 seeds."
            if test["n"]
            else ""
        ),
        "- Time per epoch: wall time of the training part of an epoch (forward, backward, "
        "optimiser; validation excluded), median over epochs (the first left out when there are "
        "3 or more), then mean ± std over seeds."
        + (
            f" KAN / MLP time per epoch: {time_ratio:.2f}x (mean of per-seed ratios)."
            if time_ratio
            else ""
        ),
        f"- Peak memory: {mem_note}.",
        "",
        "Per seed:",
        "",
    ]
    header = ["model", "seed", f"val {metric}", f"test {metric}", "best epoch", "s/epoch"]
    body = []
    for model in MODELS:
        for r in runs[model]:
            body.append(
                [
                    model.upper(),
                    r["seed"],
                    _fmt(r["val"].get(metric)),
                    _fmt(r["test"].get(metric)),
                    f"{r['best_epoch']}/{r['epochs_run']}",
                    _fmt(r["epoch_time_s"]),
                ]
            )
    lines += [markdown_table(header, body), "", "Validation curves: `curves.png`.", ""]
    return "\n".join(lines)
