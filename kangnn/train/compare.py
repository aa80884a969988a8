"""The KAN-vs-MLP comparison: same architecture, matched parameters, same splits and seeds.

For each seed the KAN model and its parameter-matched MLP baseline are trained on the same split
(scaffold splits are deterministic; random and balanced-scaffold splits follow the seed, the same
for both models), each selected on validation only. The summary reports mean ± std (ddof=1) over
seeds of the validation and test metrics (test at the best-validation epoch), the parameter
counts, time per training epoch and peak memory, and a paired Wilcoxon signed-rank test of the
test metric over seeds.

With ``with_models=("chemprop",)`` (``kangnn compare CONFIG --with chemprop``) chemprop v2 is
trained too, on the same molecules, splits and seeds (:mod:`kangnn.train.chemprop`): a row
``chemprop`` at the settings of the config's ``chemprop`` section (chemprop's defaults) and, when
the config has ``compare.model_overrides.chemprop`` (written by ``kangnn tune --models
chemprop``), a row ``chemprop-tuned``. Their metrics are recomputed by kangnn from chemprop's
prediction files, and each is tested against the KAN (and the MLP) with the same paired test.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kangnn.config import (
    FUNCTIONS,
    ConfigError,
    default_config,
    for_model,
    primary_metric,
    save_config,
    validate_config,
)
from kangnn.files import atomic_write_json, make_dirs
from kangnn.reports import format_pm, markdown_table, plot_curves
from kangnn.train.rundir import (
    LOG_CSV,
    METRICS_FILE,
    RunDirError,
    drop_if_empty,
    experiment_name,
    read_metrics_csv,
    remove_tree,
    resumable_epochs,
    staging_dir,
    timestamp,
)

__all__ = ["CompareResult", "RunFailedError", "compare", "wilcoxon_test"]

#: The KAN model and its MLP twin, by their ``model.function``.
MODELS = FUNCTIONS
#: Models ``compare(..., with_models=...)`` can add beside the KAN and its MLP twin.
EXTERNAL = ("chemprop",)
SEEDED_SPLITS = ("random", "balanced_scaffold")
#: The staging folder's record of what it compares (config, seeds, external rows), to resume.
COMPARE_FILE = "compare.json"


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
    run_cfg: DictConfig,
    run_dir: Path,
    split: dict[str, list[int]],
    label: str | None = None,
    resume: Path | None = None,
) -> dict[str, Any]:
    """Train in a fresh Python process (clean peak-memory and timing figures); ``label``
    names a chemprop row (``chemprop``, ``chemprop-tuned``) instead of a kangnn run; ``resume``
    is the interrupted run (in ``.partial``) to continue instead of training anew."""
    with tempfile.TemporaryDirectory(prefix="kangnn-cmp-") as tmp:
        cfg_path = Path(tmp) / "config.yaml"
        save_config(run_cfg, cfg_path)
        split_path = Path(tmp) / "splits.json"
        split_path.write_text(json.dumps(split))
        if resume is not None and label is None:
            cmd = [sys.executable, "-m", "kangnn.cli", "train", "--resume", str(resume)]
        else:
            if label is None:
                cmd = [sys.executable, "-m", "kangnn.cli", "train", str(cfg_path)]
            else:
                cmd = [sys.executable, "-m", "kangnn.train.chemprop", str(cfg_path)]
                cmd += ["--label", label] + (["--resume"] if resume is not None else [])
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
    run_cfg: DictConfig,
    run_dir: Path,
    split: dict[str, list[int]],
    label: str | None = None,
    resume: Path | None = None,
) -> dict[str, Any]:
    from kangnn.train.run import train

    if label is not None:
        from kangnn.train.chemprop import train_chemprop

        return train_chemprop(run_cfg, run_dir, split, label=label, resume=resume is not None)
    if resume is not None:
        result = train(None, resume=resume)
    else:
        result = train(run_cfg, run_dir=run_dir, split=split)
    assert result is not None
    return result.metrics


def _externals(cfg: DictConfig, with_models: Sequence[str]) -> list[tuple[str, DictConfig]]:
    """``(row name, config)`` of each external model to train; checked before any training."""
    unknown = [m for m in with_models if m not in EXTERNAL]
    if unknown:
        raise ConfigError(
            f"unknown model(s) for --with: {', '.join(unknown)}; valid: {', '.join(EXTERNAL)}"
        )
    out: list[tuple[str, DictConfig]] = []
    if "chemprop" in with_models:
        from kangnn.train.chemprop import _tracking, require_chemprop, tuned_config

        cp = require_chemprop()
        out.append(("chemprop", cfg))
        tuned = tuned_config(cfg)
        if tuned is not None:
            validate_config(tuned)
            out.append(("chemprop-tuned", tuned))
        for _, c in out:
            _tracking(cp, c.chemprop.tracking_metric)
    return out


def _external_config(cfg: DictConfig, seed: int) -> DictConfig:
    c = cfg.copy()
    c.seed = seed
    c.train.resume = False
    if cfg.compare.isolate:
        c.train.progress_bar = False
    return c


def compare(
    cfg: DictConfig,
    seeds: int | None = None,
    out_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    with_models: Sequence[str] = (),
    jobs: int = 1,
    update: bool = False,
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
    with_models:
        External models to train beside them on the same splits and seeds: ``("chemprop",)``
        adds the rows ``chemprop`` and (with ``compare.model_overrides.chemprop``)
        ``chemprop-tuned``.
    jobs:
        Training runs at a time (each in its own process; needs ``compare.isolate``).
    update:
        Re-run, in the finished comparison in ``out_dir`` (same seeds and rows), the rows whose
        training config differs from the one they were trained with (e.g. a model tuned again)
        and keep the runs of every other row.

    An interrupted or failed comparison keeps its finished runs in the staging folder: calling
    it again with the same ``out_dir`` and config trains only the runs still missing. A finished
    comparison in ``out_dir`` gets new external rows (``with_models``) added when the config and
    seeds are the same (``compare.model_overrides.chemprop`` may have been added since): its
    runs are kept, only the new rows are trained, and the summary is rewritten.

    Returns
    -------
    CompareResult
        With ``summary.csv``, ``summary.md``, ``summary.json``, ``runs.csv``, ``curves.png``
        and a run directory per model and seed under ``runs/`` in ``out_dir``.

    Raises
    ------
    ConfigError, DataError, RunDirError, RunFailedError, ChempropUnavailableError
        Before any training for bad input or a missing chemprop.
    """
    from kangnn.train.data import prepare_data
    from kangnn.train.run import quiet_lightning, resolve_model

    quiet_lightning()
    log = log or (lambda s: None)
    validate_config(cfg)
    n_seeds = int(seeds if seeds is not None else cfg.compare.seeds)
    if n_seeds < 1:
        raise ConfigError(f"bad value for config key 'compare.seeds': {n_seeds} must be >= 1")
    if jobs < 1:
        raise ConfigError(f"the number of parallel runs must be >= 1, got {jobs}")
    if jobs > 1 and not cfg.compare.isolate:
        raise ConfigError("parallel runs (jobs > 1) need compare.isolate: true")
    seed_list = [int(cfg.seed) + i for i in range(n_seeds)]
    externals = _externals(cfg, list(dict.fromkeys(with_models)))

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
    name = experiment_name(cfg)
    log(
        f"{name}: {len(data.dataset)} molecules ({task}), conv {cfg.model.conv}; MLP twin "
        f"{match.mlp_params} parameters (width {match.mlp_hidden_channels}), matched to a KAN "
        f"of its architecture: {match.kan_params} ({match.rel_diff:+.2%}); seeds {seed_list}"
    )
    del data

    final = (
        Path(out_dir)
        if out_dir is not None
        else Path(cfg.output_dir) / f"compare-{name}-{cfg.model.conv}-{timestamp()}"
    )
    staging = staging_dir(final)
    identity = json.loads(  # as compare.json holds it, to compare with an earlier one
        json.dumps(
            {
                "config": OmegaConf.to_container(cfg, resolve=True),
                "seeds": seed_list,
                "with": [label for label, _ in externals],
            }
        )
    )
    extending = final.exists()
    kept = _extendable(final, identity, update) if extending else []
    resumed = _open_staging(staging, identity)
    created = make_dirs(staging / "runs")
    atomic_write_json(staging / COMPARE_FILE, identity)
    for run in kept:  # hard links: the finished comparison stays as it is until the swap
        if not (staging / "runs" / run).exists():
            shutil.copytree(final / "runs" / run, staging / "runs" / run, copy_function=os.link)
    if kept:
        what = "updating" if update else "adding rows to"
        log(f"  {what} the finished comparison in {final}: {len(kept)} of its runs are kept")
    run_one = _train_isolated if cfg.compare.isolate else _train_inprocess

    tasks = []  # (row, seed, display name, run config, external label)
    for seed in seed_list:
        for function in MODELS:
            run_cfg = _run_config(cfg, function, seed)
            if function == "mlp":
                run_cfg.model.mlp_hidden_channels = match.mlp_hidden_channels
            tasks.append((function, seed, function.upper(), run_cfg, None))
        for label, ext_cfg in externals:
            tasks.append((label, seed, label, _external_config(ext_cfg, seed), label))

    def work(task) -> dict[str, Any]:
        row, seed, shown, run_cfg, label = task
        run_dir = staging / "runs" / f"{row}-s{seed}"
        t0 = time.perf_counter()
        partial = staging_dir(run_dir)
        if (run_dir / METRICS_FILE).exists():
            metrics = json.loads((run_dir / METRICS_FILE).read_text())
            log(f"  seed {seed} {shown}: finished in an earlier call, kept")
        elif (done := resumable_epochs(partial)) is not None:
            # Interrupted (e.g. a session's end): continued from its last epoch, to the numbers
            # an uninterrupted run gives (same weights, batch order, dropout masks, schedule).
            log(f"  seed {seed} {shown}: continuing an interrupted run after epoch {done}")
            metrics = run_one(run_cfg, run_dir, splits[seed], label, resume=partial)
            _log_run(log, seed, shown, metric, metrics, t0)
        else:
            remove_tree(partial)  # an interrupted run that cannot be continued: trained anew
            metrics = run_one(run_cfg, run_dir, splits[seed], label)
            _log_run(log, seed, shown, metric, metrics, t0)
        metrics["run_dir"] = str(Path("runs") / run_dir.name)
        return metrics

    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODELS}
    runs.update({label: [] for label, _ in externals})
    if resumed:
        log(f"  continuing the unfinished comparison in {staging}")
    try:
        if jobs == 1:
            results = [work(t) for t in tasks]
        else:
            from concurrent.futures import ThreadPoolExecutor

            # Threads only wait on the child processes that train.
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                results = list(pool.map(work, tasks))
        for (row, *_), metrics in zip(tasks, results, strict=True):
            runs[row].append(metrics)
        result = _summarise(cfg, staging, runs, metric, mode, task, match, name)
        if extending:  # the extended comparison replaces the one it extends
            old = staging.parent / f"{final.name}.replaced"
            remove_tree(old)
            os.replace(final, old)
            os.replace(staging, final)
            remove_tree(old)
        else:
            os.replace(staging, final)
        drop_if_empty(staging.parent)
    except BaseException:
        done = list((staging / "runs").glob(f"*/{METRICS_FILE}"))
        if not done:
            remove_tree(staging, created)
        else:
            log(
                f"kangnn: {len(done)} finished run(s) kept in {staging}; run the same command "
                f"with --out {final} to train the rest"
            )
        raise
    result.out_dir = final
    return result


def _without_tuned_chemprop(identity: dict[str, Any]) -> dict[str, Any]:
    """``identity`` less what only the external rows depend on (which rows, chemprop's tuned
    values): two comparisons equal under it have the same KAN, MLP and chemprop-default runs.

    The config is read over the schema's defaults, so a comparison written before a key existed
    equals one that holds the key at its default (every new key defaults to the old behaviour).
    """
    out = json.loads(json.dumps(identity))
    out.pop("with", None)
    try:
        out["config"] = OmegaConf.to_container(
            OmegaConf.merge(default_config(), out["config"]), resolve=True
        )
    except OmegaConfBaseException:
        pass  # a key the schema no longer has: compared as written, so never equal
    out["config"].get("compare", {}).get("model_overrides", {}).pop("chemprop", None)
    return out


def _chemprop_tuned(identity: dict[str, Any]) -> Any:
    return identity["config"].get("compare", {}).get("model_overrides", {}).get("chemprop")


def _same_tuned_rows(earlier: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether ``earlier``'s chemprop-tuned runs (if any) are those ``new`` would train."""
    return "chemprop-tuned" not in earlier.get("with", []) or (
        _chemprop_tuned(earlier) == _chemprop_tuned(new)
    )


def _row_identity(config: dict[str, Any], row: str) -> Any:
    """What the runs of ``row`` are trained from: that row's config (its model's overrides
    applied; ``chemprop-tuned`` with chemprop's) less what never reaches a run's numbers (the
    ``compare`` section: seeds, isolation, the other rows' overrides; the ``quick`` preset, which
    is applied when the config is loaded; ``output_dir``), read over the schema's defaults;
    ``None`` when unreadable."""
    try:
        cfg = OmegaConf.merge(default_config(), config)
        if row in MODELS:
            cfg = for_model(cfg, row)
        elif row == "chemprop-tuned":
            from kangnn.train.chemprop import tuned_config

            cfg = tuned_config(cfg)
        out = OmegaConf.to_container(cfg, resolve=True) if cfg is not None else None
    except (OmegaConfBaseException, ConfigError):
        return None  # e.g. a key the schema no longer has: never equal, so retrained
    if out is not None:
        for key in ("compare", "quick", "output_dir"):
            out.pop(key, None)
    return out


def _refuse_dropped_rows(final: Path, earlier: dict[str, Any], identity: dict[str, Any]) -> None:
    """A :class:`RunDirError` when ``final`` has external rows the new comparison lacks."""
    dropped = [w for w in earlier.get("with", []) if w not in identity["with"]]
    if dropped:
        raise RunDirError(
            f"{final} has the rows {', '.join(dropped)}: pass --with {dropped[0].split('-')[0]} "
            "to keep them, or choose another --out"
        )


def _updated(final: Path, earlier: dict[str, Any], identity: dict[str, Any]) -> list[str]:
    """The run folders of ``final`` an ``update`` keeps: those of rows whose training config
    is unchanged; a :class:`RunDirError` when seeds or rows differ, or nothing changed."""
    if earlier.get("seeds") != identity["seeds"]:
        raise RunDirError(
            f"{final} was compared over seeds {earlier.get('seeds')}, not {identity['seeds']}: "
            "--update re-runs changed rows over the same seeds; choose another --out"
        )
    _refuse_dropped_rows(final, earlier, identity)
    rows = [*MODELS, *earlier.get("with", [])]
    same = set()
    for row in rows:
        before = _row_identity(earlier["config"], row)
        if before is not None and before == _row_identity(identity["config"], row):
            same.add(row)
    runs = sorted(p.parent.name for p in (final / "runs").glob(f"*/{METRICS_FILE}"))
    kept = [r for r in runs if r.rsplit("-s", 1)[0] in same]
    if len(kept) == len(runs) and set(identity["with"]) <= set(earlier.get("with", [])):
        raise RunDirError(f"{final}: no row's config changed, nothing to update")
    return kept


def _extendable(final: Path, identity: dict[str, Any], update: bool = False) -> list[str]:
    """The run folders of the finished comparison ``final`` that a comparison of ``identity``
    keeps, when it only adds rows to it (``--with chemprop`` after a KAN/MLP comparison) or,
    with ``update``, re-runs the rows whose config changed; a :class:`RunDirError` when it
    would retrain or drop runs it may not."""
    try:
        earlier = json.loads((final / COMPARE_FILE).read_text())
    except (OSError, ValueError):
        raise RunDirError(f"comparison directory already exists: {final}") from None
    if update:
        return _updated(final, earlier, identity)
    if _without_tuned_chemprop(earlier) != _without_tuned_chemprop(identity):
        raise RunDirError(
            f"{final} holds a comparison of another config (or seeds); rows can only be added "
            "to the same comparison: choose another --out, or --update to re-run the rows whose "
            "config changed"
        )
    _refuse_dropped_rows(final, earlier, identity)
    if not _same_tuned_rows(earlier, identity):
        raise RunDirError(
            f"{final}: its chemprop-tuned runs were trained with other tuned values than "
            "compare.model_overrides.chemprop now holds; choose another --out"
        )
    added = [w for w in identity["with"] if w not in earlier.get("with", [])]
    if not added:
        raise RunDirError(f"comparison directory already exists: {final}")
    return sorted(p.parent.name for p in (final / "runs").glob(f"*/{METRICS_FILE}"))


def _open_staging(staging: Path, identity: dict[str, Any]) -> bool:
    """Whether ``staging`` holds an unfinished comparison of the same config to continue; a
    :class:`RunDirError` when it holds one of another config. chemprop's tuned values may have
    changed meanwhile (its tuning runs beside the comparison) unless the comparison has a
    ``chemprop-tuned`` row."""
    if not staging.exists():
        return False
    try:
        earlier = json.loads((staging / COMPARE_FILE).read_text())
    except (OSError, ValueError):
        earlier = None
    same = (
        isinstance(earlier, dict)
        and earlier.get("with") == identity["with"]
        and _without_tuned_chemprop(earlier) == _without_tuned_chemprop(identity)
        and _same_tuned_rows(earlier, identity)
    )
    if not same:
        raise RunDirError(
            f"an unfinished comparison of another config (or seeds) is in {staging}: remove it "
            "or choose another --out"
        )
    return True


def _log_run(
    log: Callable[[str], None], seed: int, name: str, metric: str, m: dict[str, Any], t0: float
) -> None:
    log(
        f"  seed {seed} {name}: val {metric} {_fmt(m['val'].get(metric))}, test {metric} "
        f"{_fmt(m['test'].get(metric))}, best epoch {m['best_epoch']}/{m['epochs_run']}, "
        f"{_fmt(m['epoch_time_s'])} s/epoch ({time.perf_counter() - t0:.0f} s)"
    )


def _pair_name(pair: str) -> str:
    """``"kan vs chemprop"`` -> ``"KAN vs chemprop"``."""
    return " vs ".join(m.upper() if m in MODELS else m for m in pair.split(" vs "))


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
    # Every other model against the KAN (and the externals against the MLP twin too), paired
    # by seed on the test metric.
    tests = {"kan vs mlp": test}
    for other in (m for m in runs if m not in MODELS):
        for ours in MODELS:
            tests[f"{ours} vs {other}"] = wilcoxon_test(
                [r["test"].get(metric) for r in runs[ours]],
                [r["test"].get(metric) for r in runs[other]],
            )

    rows: list[dict[str, Any]] = []
    for model, rs in runs.items():
        if model in MODELS:
            km = for_model(cfg, "kan").model
            kan_width = km.function_hidden_channels or km.hidden_channels
            width = kan_width if model == "kan" else match.mlp_hidden_channels
        else:
            width = rs[0]["chemprop"]["message_hidden_dim"]
        row: dict[str, Any] = {
            "model": model,
            "conv": cfg.model.conv if model in MODELS else rs[0]["conv"],
            # the same inputs for every row of a comparison (chemprop gets them as x_d)
            "descriptors": cfg.dataset.get("descriptors"),
            "params": rs[0]["params"],
            "function_width": width,
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
        # The KAN row carries the KAN-vs-MLP test; every other row its test against the KAN.
        vs = "mlp" if model == "kan" else "kan"
        pair = test if model in MODELS else tests[f"kan vs {model}"]
        row["wilcoxon_vs"] = vs
        row["wilcoxon_stat"] = pair["statistic"]
        row["wilcoxon_p"] = pair["p"]
        row["wilcoxon_note"] = pair["note"]
        rows.append(row)

    _write_csv(out / "summary.csv", rows)
    _write_runs_csv(out / "runs.csv", runs, metric_names)
    # Only kangnn's curves: chemprop logs its validation metric on standardised targets.
    curves = {m: [_curve(out / r["run_dir"], metric) for r in runs[m]] for m in MODELS}
    label = f"validation {metric.upper().replace('_', '-')}"
    plot_curves(
        curves,
        label,
        out / "curves.png",
        title=f"{name} ({cfg.model.conv}): KAN vs parameter-matched MLP",
    )
    table = _table(rows, metric_names, metric)
    md = _markdown(cfg, name, task, metric, mode, rows, table, tests, time_ratio, runs, match)
    tmp = out / ".summary.md.tmp"
    tmp.write_text(md)
    os.replace(tmp, out / "summary.md")
    atomic_write_json(
        out / "summary.json",
        {
            "rows": rows,
            "wilcoxon": test,
            "wilcoxon_pairs": tests,
            "per_seed": {
                m: [
                    {
                        "seed": r["seed"],
                        "val": r["val"].get(metric),
                        "test": r["test"].get(metric),
                        "run_dir": r["run_dir"],
                    }
                    for r in rs
                ]
                for m, rs in runs.items()
            },
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
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    os.replace(tmp, path)


def _write_runs_csv(
    path: Path, runs: dict[str, list[dict[str, Any]]], metric_names: list[str]
) -> None:
    rows = []
    for model, rs in runs.items():
        for r in rs:
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
    header += ["s/epoch", "peak MiB", f"Wilcoxon p vs KAN (test {metric})"]
    body = []
    for row in rows:
        name = row["model"].upper() if row["model"] in MODELS else row["model"]
        cells = [name, f"{row['params']:,}"]
        for split in ("val", "test"):
            cells += [
                format_pm(row[f"{split}_{m}_mean"], row[f"{split}_{m}_std"]) for m in metric_names
            ]
        cells.append(format_pm(row["epoch_time_s_mean"], row["epoch_time_s_std"], 2))
        cells.append(format_pm(row["peak_memory_mb_mean"], row["peak_memory_mb_std"], 1))
        p = row["wilcoxon_p"]
        cells.append("—" if row["model"] == "kan" else "n/a" if p is None else f"{p:.3g}")
        body.append(cells)
    return markdown_table(header, body)


def _setup_lines(cfg: DictConfig, runs: dict[str, list[dict[str, Any]]], match: Any) -> list[str]:
    """Architecture, parameters and training of the pair: one description when both models share
    them, one per model when tuning gave each its own (``compare.model_overrides``)."""
    cfgs = {m: for_model(cfg, m) for m in MODELS}

    def setup(c: DictConfig) -> dict[str, Any]:
        m, t = c.model, c.train
        return {
            "arch": f"{m.num_layers} x {m.conv} layers, {m.hidden_channels} channels, "
            f"{m.readout} readout, {m.norm} norm, dropout {m.dropout}",
            "train": f"up to {t.epochs} epochs, batch {t.batch_size}, {t.optimizer} lr {t.lr:.4g}, "
            f"weight decay {t.weight_decay:g}, {t.scheduler} schedule, early stopping patience "
            f"{t.patience}",
        }

    kan, mlp = setup(cfgs["kan"]), setup(cfgs["mlp"])
    km = cfgs["kan"].model
    kan_fn = f"grid {km.grid_size}, order {km.spline_order}, {km.basis}"
    params = {m: runs[m][0]["params"] for m in MODELS if runs.get(m)}
    if kan == mlp:
        return [
            f"- Architecture: {kan['arch']}; only the hidden width of the message/update/head "
            f"functions differs: KAN {match.kan_hidden_channels} ({kan_fn}) vs MLP "
            f"{match.mlp_hidden_channels}.",
            f"- Parameters: KAN {match.kan_params:,}, MLP {match.mlp_params:,} "
            f"({match.rel_diff:+.2%}, tolerance {cfg.model.match_tolerance:.0%}).",
            f"- Training: {kan['train']}.",
        ]
    return [
        "- Each model has its own tuned configuration (`compare.model_overrides`, written by "
        "`kangnn tune` with the same trial budget for both); the MLP's function width is matched "
        f"to the parameter count of a KAN of the MLP's own architecture ({match.kan_params:,} vs "
        f"{match.mlp_params:,}, {match.rel_diff:+.2%}).",
        f"- KAN: {kan['arch']} ({kan_fn}); {params.get('kan', 0):,} parameters; {kan['train']}.",
        f"- MLP: {mlp['arch']}, function width {match.mlp_hidden_channels}; "
        f"{params.get('mlp', 0):,} parameters; {mlp['train']}.",
    ]


def _markdown(
    cfg: DictConfig,
    name: str,
    task: str,
    metric: str,
    mode: str,
    rows: list[dict[str, Any]],
    table: str,
    tests: dict[str, dict[str, Any]],
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
    test = tests["kan vs mlp"]
    others = [m for m in runs if m not in MODELS]
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
        *_setup_lines(cfg, runs, match),
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
        *(
            f"- Paired Wilcoxon test on test {metric}, {_pair_name(pair)}: "
            + (f"p = {t['p']:.3g}." if t["p"] is not None else f"{t['note']}.")
            for pair, t in tests.items()
            if pair != "kan vs mlp"
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
    ]
    for model in others:
        c = runs[model][0]["chemprop"]
        lines.append(
            f"- {model}: chemprop {runs[model][0]['chemprop_version']} D-MPNN (bond messages, "
            f"depth {c['depth']}, width {c['message_hidden_dim']}, {c['aggregation']} "
            f"aggregation, FFN {c['ffn_num_layers']} x {c['ffn_hidden_dim']}, dropout "
            f"{c['dropout']}), {c['epochs']} epochs, batch {c['batch_size']}, lr {c['init_lr']} → "
            f"{c['max_lr']} → {c['final_lr']} ({c['warmup_epochs']} warm-up epochs), checkpoint "
            f"of the best {c['tracking_metric']}; trained on the same molecules, splits and "
            "seeds; its val and test metrics are recomputed by kangnn from its "
            "val_predictions.csv / predictions.csv."
        )
    lines += ["", "Per seed:", ""]
    header = ["model", "seed", f"val {metric}", f"test {metric}", "best epoch", "s/epoch"]
    body = []
    for model, rs in runs.items():
        for r in rs:
            body.append(
                [
                    model.upper() if model in MODELS else model,
                    r["seed"],
                    _fmt(r["val"].get(metric)),
                    _fmt(r["test"].get(metric)),
                    f"{r['best_epoch']}/{r['epochs_run']}",
                    _fmt(r["epoch_time_s"]),
                ]
            )
    curves_note = "Validation curves: `curves.png`" + (
        " (KAN and MLP; chemprop logs its validation metric on standardised targets)."
        if others
        else "."
    )
    lines += [markdown_table(header, body), "", curves_note, ""]
    return "\n".join(lines)
