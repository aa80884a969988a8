"""The KAN practice ablation: train every variant of ``ablation.yaml`` on every dataset and seed,
measure the spline branch's variance share of each trained model, and write the table.

    python experiments/ablation/run.py                       # the full ablation (resumable)
    python experiments/ablation/run.py --seeds 1 --set train.epochs=2 --out /tmp/abl   # a smoke run

On two cores, two shards run side by side and a third call writes the table of both:

    python experiments/ablation/run.py --datasets esol &
    python experiments/ablation/run.py --datasets bbbp; wait
    python experiments/ablation/run.py --report

Runs go to ``<out>/runs/<dataset>/<variant>-s<seed>/`` (``kangnn train`` run directories, plus
``spline_share.json``); a run whose directory is complete is not trained again, so an
interrupted ablation continues where it stopped. After every run ``<out>/results.json`` (every
run: validation and test metrics, spline shares, epochs, time) and ``<out>/results.md`` (the
table: validation metric mean ± std over seeds, its difference to the baseline, the mean spline
share) are rewritten. Selection uses the validation metric only: the table names, per dataset,
the variant with the best mean validation metric; test metrics are recorded, not shown.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from kangnn.config import (  # noqa: E402
    ConfigError,
    apply_overrides,
    for_model,
    load_config,
    validate_config,
)

SHARE_FILE = "spline_share.json"


def read_plan(path: Path) -> DictConfig:
    """The ablation config, checked: seeds, datasets (config + overrides), the override lists."""
    if not path.is_file():
        raise ConfigError(f"ablation config not found: {path}")
    plan = OmegaConf.load(path)
    for key in ("seeds", "datasets", "common", "baseline", "variants"):
        if key not in plan:
            raise ConfigError(f"{path}: missing key '{key}'")
    if not isinstance(plan.seeds, int) or plan.seeds < 1:
        raise ConfigError(f"{path}: 'seeds' must be an integer >= 1, got {plan.seeds!r}")
    if "baseline" not in plan.variants:
        raise ConfigError(f"{path}: 'variants' must contain 'baseline'")
    return plan


def run_config(
    plan: DictConfig, dataset: str, variant: str, seed: int, extra: list[str], data_root: str | None
) -> DictConfig:
    """The experiment config of one run: the dataset's config and ablation overrides, that
    model's ``compare.model_overrides`` (then cleared, so nothing re-applies them over the
    variant), the common protocol, the baseline, the variant, ``--set`` overrides, the seed."""
    spec = plan.datasets[dataset]
    variants = {**plan.variants, **plan.get("reference", {})}
    changes = list(variants[variant] or [])
    function = "mlp" if "model.function=mlp" in changes else "kan"
    cfg = load_config(REPO / spec.config, list(spec.get("overrides", [])))
    cfg = for_model(cfg, function)
    cfg.compare.model_overrides = {}
    tail = [*plan.common, *plan.baseline, *changes, *extra, f"seed={seed}"]
    if data_root is not None:
        tail.append(f"dataset.root={data_root}")
    cfg = apply_overrides(cfg, tail, source=f"ablation {dataset}/{variant}")
    validate_config(cfg)
    return cfg


def run_one(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train one run (unless complete) and measure its spline shares on validation."""
    from kangnn.train.run import train
    from kangnn.train.spline_share import run_spline_shares, summarize_spline_shares

    metrics_file, share_file = run_dir / "metrics.json", run_dir / SHARE_FILE
    t0 = time.perf_counter()
    if not metrics_file.is_file():
        if run_dir.exists():  # an earlier attempt that did not finish
            shutil.rmtree(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        train(cfg, run_dir=run_dir)
    if not share_file.is_file():
        shares = run_spline_shares(run_dir, part="val", data_root=cfg.dataset.root)
        at_init = initial_shares(run_dir, cfg.dataset.root)
        record = {
            "part": "val",
            "summary": summarize_spline_shares(shares),
            "layers": [s.as_dict() for s in shares],
            "init_summary": summarize_spline_shares(at_init),
            "init_layers": [s.as_dict() for s in at_init],
        }
        tmp = share_file.with_name(f".{SHARE_FILE}.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(share_file)
    result = read_run(run_dir)
    result["seconds"] = time.perf_counter() - t0
    return result


def initial_shares(run_dir: Path, data_root: str | None) -> list:
    """The spline shares of the run's model as it started training: built from the run's own
    config and seed as ``kangnn train`` builds it, grids fitted as its ``GridFit`` fits them at
    the start of fit, measured on the same validation molecules."""
    import lightning as L
    from torch_geometric.loader import DataLoader

    from kangnn.data import load_split
    from kangnn.train.data import prepare_data
    from kangnn.train.run import build_module, grid_fit_callback, resolve_model
    from kangnn.train.rundir import load_run_config
    from kangnn.train.spline_share import spline_variance_share

    cfg = load_run_config(run_dir)
    if cfg.model.function != "kan":
        return []
    if data_root is not None:
        cfg.dataset.root = data_root
    data = prepare_data(cfg, load_split(run_dir / "splits.json"))
    kwargs, _ = resolve_model(cfg, data)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = build_module(cfg, data, kwargs)
    fit = grid_fit_callback(cfg, data)
    if fit.initial:
        fit.fit(module, refit=False)
    return spline_variance_share(module, DataLoader(data.part("val"), batch_size=64))


def read_run(run_dir: Path) -> dict[str, Any] | None:
    """What the table needs from a complete run directory (``None`` if it is not complete)."""
    metrics_file, share_file = run_dir / "metrics.json", run_dir / SHARE_FILE
    if not (metrics_file.is_file() and share_file.is_file()):
        return None
    metrics = json.loads(metrics_file.read_text())
    share = json.loads(share_file.read_text())
    return {
        "run_dir": str(run_dir),
        "val": metrics["val"],
        "test": metrics["test"],  # recorded, never used for selection or shown in the table
        "metric": metrics["metric"],
        "mode": metrics["mode"],
        "best_epoch": metrics.get("best_epoch"),
        "epochs_run": metrics.get("epochs_run"),
        "params": metrics.get("params"),
        "epoch_time_s": metrics.get("epoch_time_s"),
        "spline_share": share["summary"].get("mean_share"),
        "spline_share_init": share.get("init_summary", {}).get("mean_share"),
        "spline_share_layers": {s["layer"]: s["share"] for s in share["layers"]},
    }


def collect(out: Path, plan: DictConfig, seeds: range) -> dict[str, dict[str, dict[int, dict]]]:
    """Every complete run of the plan under ``out/runs`` (this process's or another's)."""
    names = [*plan.variants, *plan.get("reference", {})]
    runs: dict[str, dict[str, dict[int, dict]]] = {}
    for d in plan.datasets:
        for v in names:
            for s in seeds:
                result = read_run(out / "runs" / d / f"{v}-s{s}")
                if result is not None:
                    runs.setdefault(d, {}).setdefault(v, {})[s] = result
    return runs


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def aggregate(runs: dict[str, dict[str, dict[int, dict]]], plan: DictConfig) -> dict[str, Any]:
    """Per dataset and variant: the validation metric's mean and std over seeds, its difference
    to the baseline, the mean spline share; per dataset the best variant on validation."""
    candidates = list(plan.variants)
    out: dict[str, Any] = {}
    for dataset, by_variant in runs.items():
        rows: dict[str, Any] = {}
        metric, mode = None, None
        for variant, by_seed in by_variant.items():
            if not by_seed:
                continue
            first = next(iter(by_seed.values()))
            metric, mode = first["metric"], first["mode"]
            vals = [r["val"][metric] for r in by_seed.values()]
            mean, std = _mean_std(vals)
            share, share_std = _mean_std([r["spline_share"] for r in by_seed.values()])
            init, _ = _mean_std([r.get("spline_share_init") for r in by_seed.values()])
            rows[variant] = {
                "seeds": sorted(by_seed),
                "val_mean": mean,
                "val_std": std,
                "spline_share_mean": share,
                "spline_share_std": share_std,
                "spline_share_init_mean": init,
                "candidate": variant in candidates,
            }
        base = rows.get("baseline", {}).get("val_mean", math.nan)
        for row in rows.values():
            row["delta_vs_baseline"] = row["val_mean"] - base
        ranked = [
            (v, r["val_mean"])
            for v, r in rows.items()
            if r["candidate"] and not math.isnan(r["val_mean"])
        ]
        best = None
        if ranked:
            best = (min if mode == "min" else max)(ranked, key=lambda t: t[1])[0]
        out[dataset] = {"metric": metric, "mode": mode, "best": best, "variants": rows}
    return out


def _fmt(mean: float, std: float, digits: int = 3) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _share(init: float, trained: float) -> str:
    if math.isnan(trained):
        return "—"
    return f"{trained:.2f}" if math.isnan(init) else f"{init:.2f} → {trained:.2f}"


def write_results(out: Path, plan: DictConfig, runs: dict, summary: dict, command: str) -> None:
    data = {"command": command, "plan": OmegaConf.to_container(plan), "summary": summary,
            "runs": runs}  # fmt: skip
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(data, indent=1, allow_nan=True, default=str))
    tmp.replace(out / "results.json")

    datasets = list(summary)
    variants = [*plan.variants, *plan.get("reference", {})]
    head = ["variant"]
    for d in datasets:
        m, mode = summary[d]["metric"], summary[d]["mode"]
        arrow = "↓" if mode == "min" else "↑"
        head += [f"{d} val {m} {arrow}", f"{d} Δ vs baseline", f"{d} spline share init → trained"]
    lines = [
        "# KAN practice ablation",
        "",
        f"`{command}`",
        "",
        "Validation metric, mean ± std over seeds (the test metric is never used here); spline "
        "share: `Var(spline) / (Var(spline) + Var(base))` of each KAN layer on the validation "
        "molecules, averaged over layers and seeds (`kangnn.train.spline_share`), at the start "
        "of training (after the grid fit) and for the best-validation checkpoint. One change "
        "per row against the baseline; `mlp_twin` is the parameter-matched MLP under the same "
        "protocol, for reference.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for v in variants:
        if not any(v in summary[d]["variants"] for d in datasets):
            continue
        cells = [v if v in plan.variants else f"{v} (reference)"]
        for d in datasets:
            row = summary[d]["variants"].get(v)
            if row is None:
                cells += ["—", "—", "—"]
                continue
            best = " **(best)**" if summary[d]["best"] == v else ""
            delta = row["delta_vs_baseline"]
            cells += [
                _fmt(row["val_mean"], row["val_std"]) + best,
                "—" if v == "baseline" or math.isnan(delta) else f"{delta:+.3f}",
                _share(row["spline_share_init_mean"], row["spline_share_mean"]),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Best on validation: " + ", ".join(f"{d}: {summary[d]['best']}" for d in datasets),
    ]
    (out / "results.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(HERE / "ablation.yaml"))
    parser.add_argument("--out", default=str(HERE), help="where results.md/.json and runs/ go")
    parser.add_argument("--datasets", nargs="+", help="a subset of the config's datasets")
    parser.add_argument("--variants", nargs="+", help="a subset of the variants (and references)")
    parser.add_argument("--seeds", type=int, help="number of seeds (default: the config's)")
    parser.add_argument("--data-root", help="data root (default: $KANGNN_DATA or data/)")
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="overrides for every run"
    )
    parser.add_argument(
        "--report", action="store_true", help="train nothing: rewrite the table from the runs"
    )
    args = parser.parse_args(argv)
    command = "python experiments/ablation/run.py " + " ".join(argv or sys.argv[1:])
    try:
        plan = read_plan(Path(args.config))
        names = {**plan.variants, **plan.get("reference", {})}
        datasets = args.datasets or list(plan.datasets)
        variants = args.variants or list(names)
        for d in datasets:
            if d not in plan.datasets:
                raise ConfigError(
                    f"unknown dataset {d!r}; the config has {', '.join(plan.datasets)}"
                )
        for v in variants:
            if v not in names:
                raise ConfigError(f"unknown variant {v!r}; the config has {', '.join(names)}")
        seeds = range(args.seeds if args.seeds is not None else plan.seeds)
        if not seeds:
            raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
        # Every config first, so a bad key fails before hours of training.
        configs = {
            (d, v, s): run_config(plan, d, v, s, list(args.set), args.data_root)
            for d in datasets
            for v in variants
            for s in seeds
        }
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from kangnn.train.run import quiet_lightning

    quiet_lightning()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    todo = {} if args.report else configs
    for i, ((d, v, s), cfg) in enumerate(todo.items(), 1):
        result = run_one(cfg, out / "runs" / d / f"{v}-s{s}")
        metric, share = result["metric"], result["spline_share"]
        share_text = "" if share is None or math.isnan(share) else f", spline share {share:.3f}"
        print(
            f"[{i}/{len(todo)}] {d} {v} seed {s}: val {metric} {result['val'][metric]:.4f}"
            f"{share_text} ({result['seconds']:.0f} s)",
            flush=True,
        )
        runs = collect(out, plan, seeds)
        write_results(out, plan, runs, aggregate(runs, plan), command)
    runs = collect(out, plan, seeds)
    write_results(out, plan, runs, aggregate(runs, plan), command)
    print(f"wrote {out / 'results.md'} and {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
