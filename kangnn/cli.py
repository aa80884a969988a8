"""The ``kangnn`` command: train, compare, predict, plot, bench, datasets.

Examples
--------
::

    kangnn train experiments/esol.yaml model.function=mlp train.epochs=5 seed=3
    kangnn train --resume runs/esol-gin-kan-s0-20250101-120000-ab12 train.epochs=200
    kangnn compare experiments/esol.yaml --quick
    kangnn compare experiments/bbbp.yaml --seeds 5 train.epochs=50
    kangnn tune experiments/esol.yaml --trials 20 --out runs/tune-esol
    kangnn compare runs/tune-esol/best-kan.yaml   # the tuned KAN vs the tuned MLP twin
    kangnn predict runs/esol-gin-kan-s0-... --input new.csv --output preds.csv
    kangnn plot runs/esol-gin-kan-s0-...
    kangnn explain runs/esol-gin-kan-s0-...
    kangnn bench model --conv gin
    kangnn datasets
    kangnn compare experiments/esol.yaml --with chemprop   # plus chemprop on the same splits
    kangnn splits export runs/esol-gin-kan-s0-... --format chemprop
    kangnn report experiments/results --output results.md

A user mistake (missing file, bad config key or value, bad data, missing run directory, a
checkpoint of a different model) prints ``kangnn: error: <one line>`` to stderr and exits with
status 2, without a traceback and without leaving a half-written run directory.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

BENCH_KINDS = ("layer", "conv", "model")
DATA_ROOT_HELP = (
    "data root holding <name>/raw/<file> (same as dataset.root=DIR; default: $KANGNN_DATA, "
    "else the repository's data/)"
)


def _err(msg: str) -> None:
    print(f"kangnn: error: {' '.join(str(msg).split())}", file=sys.stderr)


def _info(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kangnn",
        description="KAN layers for PyG: molecular property experiments and fair KAN-vs-MLP "
        "comparisons.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    t = sub.add_parser(
        "train",
        help="train one model; prints the run directory",
        description="Train the model a config describes. OVERRIDES are dotlist "
        "key=value pairs, e.g. model.function=mlp train.epochs=5 seed=3.",
    )
    t.add_argument("config", nargs="?", help="experiment YAML (e.g. experiments/esol.yaml)")
    t.add_argument("overrides", nargs="*", metavar="OVERRIDES")
    t.add_argument("--quick", action="store_true", help="apply the config's quick preset")
    t.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue RUN_DIR from its last.ckpt (CONFIG then counts as an override)",
    )
    t.add_argument("--data-root", metavar="DIR", help=DATA_ROOT_HELP)
    # Used by `compare` for its child runs: where the run goes and the seed's split.
    t.add_argument("--run-dir", help=argparse.SUPPRESS)
    t.add_argument("--split", help=argparse.SUPPRESS)

    c = sub.add_parser(
        "compare",
        help="KAN vs parameter-matched MLP over seeds",
        description="Train the KAN model and its parameter-matched MLP baseline on "
        "the same splits and seeds; write summary.csv, summary.md and curves.png "
        "and print the table.",
    )
    c.add_argument("config")
    c.add_argument("overrides", nargs="*", metavar="OVERRIDES")
    c.add_argument("--seeds", type=int, help="number of seeds (default: compare.seeds)")
    c.add_argument("--quick", action="store_true", help="apply the config's quick preset")
    c.add_argument(
        "--out",
        help="comparison directory (default: under output_dir); an interrupted comparison "
        "continues when the same command is run again with the same --out, and a finished one "
        "gets the rows of a new --with added",
    )
    c.add_argument(
        "--jobs", type=int, default=1, help="training runs at a time, one process each (default 1)"
    )
    c.add_argument("--data-root", metavar="DIR", help=DATA_ROOT_HELP)
    c.add_argument(
        "--with",
        dest="with_models",
        action="append",
        default=[],
        choices=["chemprop"],
        metavar="MODEL",
        help="also train chemprop on the same splits and seeds: rows chemprop (the config's "
        "chemprop section) and, with compare.model_overrides.chemprop (kangnn tune), "
        "chemprop-tuned",
    )
    c.add_argument(
        "--update",
        action="store_true",
        help="in the finished comparison of --out, re-run the rows whose config changed (e.g. "
        "a model tuned again) over the same seeds and keep the others",
    )

    pr = sub.add_parser("predict", help="predict new molecules with a trained run")
    pr.add_argument("run_dir", metavar="RUN_DIR")
    pr.add_argument("--input", required=True, help="CSV with a SMILES column")
    pr.add_argument("--output", required=True, help="CSV to write")
    pr.add_argument("--smiles-column", help="SMILES column (default: the run's, else 'smiles')")
    pr.add_argument("--batch-size", type=int, default=256)

    pl = sub.add_parser("plot", help="plot the learned KAN functions of a run")
    pl.add_argument("run_dir", metavar="RUN_DIR")
    pl.add_argument("--output", help="PNG to write (default: RUN_DIR/kan_functions.png)")
    pl.add_argument("--edges", type=int, default=4, help="functions shown per layer")

    xp = sub.add_parser(
        "explain",
        help="what a KAN run uses: importance, pruned head, the head's formula",
        description="Score the inputs of the head and of each conv's update function "
        "(pykan's attribution), prune the head and compare its validation metric with the "
        "original's, fit the head's symbolic formula, and plot the most important functions; "
        "writes report.md, formulas.json and PNGs into RUN_DIR/explain (or --out).",
    )
    xp.add_argument("run_dir", metavar="RUN_DIR")
    xp.add_argument(
        "--out", help="report folder (default: RUN_DIR/explain; an earlier report is replaced)"
    )
    xp.add_argument(
        "--threshold", type=float, default=1e-2, help="prune scores below this (default 0.01)"
    )
    xp.add_argument("--top", type=int, default=8, help="functions plotted per function")
    xp.add_argument(
        "--max-molecules", type=int, default=2000, help="training molecules used (default 2000)"
    )
    xp.add_argument("--data-root", dest="root", metavar="DIR", help=DATA_ROOT_HELP)

    sp = sub.add_parser("splits", help="export the split of a run for other tools")
    sp_sub = sp.add_subparsers(dest="splits_command", metavar="ACTION")
    sp_sub.required = True
    ex = sp_sub.add_parser(
        "export",
        help="write a run's train/val/test indices in chemprop's --splits-file format",
        description="Write the split of RUN_DIR as chemprop's --splits-file JSON and print "
        "the chemprop train command that uses it.",
    )
    ex.add_argument("run_dir", metavar="RUN_DIR")
    ex.add_argument("--format", default="chemprop", choices=["chemprop"])
    ex.add_argument("--output", help="JSON to write (default: RUN_DIR/chemprop_splits.json)")
    ex.add_argument(
        "--data",
        metavar="FILE",
        help="also write the run's molecules (smiles, targets) in index order to this CSV "
        "(needed when the dataset skipped rows of its source file)",
    )
    ex.add_argument("--data-root", dest="root", metavar="DIR", help=DATA_ROOT_HELP)

    rp = sub.add_parser(
        "report",
        help="the results tables of all comparisons (Markdown)",
        description="Render the Results tables (every model; KAN vs MLP twin; kangnn vs "
        "chemprop, with the paired Wilcoxon p) from RESULTS_DIR/<dataset>/summary.json.",
    )
    rp.add_argument("results", nargs="?", default="experiments/results", metavar="RESULTS_DIR")
    rp.add_argument("--output", help="Markdown file to write (default: stdout)")
    rp.add_argument("--datasets", nargs="+", help="dataset folders, in order (default: all)")

    # Only listed here for --help: main() forwards `bench KIND ARGS` before parsing.
    sub.add_parser("bench", help="benchmarks: kangnn bench {layer|conv|model} [options]")

    sub.add_parser("datasets", help="list the built-in dataset names")

    tu = sub.add_parser(
        "tune",
        help="tune the KAN and its MLP twin with equal budgets (Optuna); writes best-<model>.yaml",
        description="Search the config's tune.space for each model with the same number of "
        "trials, selecting on the validation metric only. Resumable: rerun the same command "
        "(or with a larger --trials) to continue the study in --out.",
    )
    tu.add_argument("config")
    tu.add_argument("overrides", nargs="*", metavar="OVERRIDES")
    tu.add_argument("--trials", type=int, help="trials per model (default: tune.trials)")
    tu.add_argument(
        "--models", nargs="+", default=["kan", "mlp"], help="models to tune (default: kan mlp)"
    )
    tu.add_argument("--out", help="study folder (default: <output_dir>/tune-<name>-<conv>)")
    tu.add_argument("--quick", action="store_true", help="apply the config's quick preset")
    tu.add_argument("--data-root", metavar="DIR", help=DATA_ROOT_HELP)
    return p


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _train(args: argparse.Namespace) -> int:
    from kangnn.config import load_config
    from kangnn.train.run import train

    if args.resume:
        overrides = ([args.config] if args.config else []) + list(args.overrides)
        if args.quick:
            raise UsageError("--quick cannot be combined with --resume (give overrides instead)")
        result = train(None, resume=args.resume, overrides=overrides, log=_info)  # type: ignore[arg-type]
    else:
        if not args.config:
            raise UsageError("train needs a CONFIG file (or --resume RUN_DIR)")
        cfg = load_config(args.config, args.overrides, quick=args.quick)
        split = None
        if args.split:
            from kangnn.data import load_split

            split = load_split(args.split)
        result = train(cfg, run_dir=args.run_dir, split=split, log=_info)
    if result is None:  # a DDP worker process
        return 0
    m = result.metrics
    metric = m["metric"]
    val, test = m["val"].get(metric), m["test"].get(metric)
    _info(
        f"{m['function'].upper()} {m['conv']}: {m['params']:,} parameters; best epoch "
        f"{m['best_epoch']}/{m['epochs_run']}; val {metric} {_num(val)}, test {metric} {_num(test)}"
    )
    print(result.run_dir)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from kangnn.config import load_config
    from kangnn.train.compare import compare

    cfg = load_config(args.config, args.overrides, quick=args.quick)
    if args.seeds is not None and args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    if args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    result = compare(
        cfg,
        seeds=args.seeds,
        out_dir=args.out,
        log=_info,
        with_models=args.with_models,
        jobs=args.jobs,
        update=args.update,
    )
    print(result.table)
    if result.test.get("p") is None:
        print(f"Wilcoxon: {result.test['note']}")
    ratio = result.rows[0].get("time_ratio_kan_mlp")
    if ratio:
        print(f"KAN / MLP time per epoch: {ratio:.2f}x")
    print(result.out_dir)
    return 0


def _tune(args: argparse.Namespace) -> int:
    from kangnn.config import load_config
    from kangnn.train.tune import tune

    if args.trials is not None and args.trials < 1:
        raise UsageError(f"--trials must be >= 1, got {args.trials}")
    cfg = load_config(args.config, args.overrides, quick=args.quick)
    result = tune(cfg, trials=args.trials, models=args.models, out_dir=args.out, log=_info)
    print(result.table)
    for model, best in result.best.items():
        print(f"{model}: {best['config']}")
    print(result.out_dir)
    return 0


def _splits(args: argparse.Namespace) -> int:
    from kangnn.train.chemprop import export_splits

    out, data, command = export_splits(
        args.run_dir, output=args.output, data_out=args.data, data_root=args.root
    )
    if data is not None:
        _info(f"molecules: {data}")
    _info(f"run chemprop on it with: {command}")
    print(out)
    return 0


def _report(args: argparse.Namespace) -> int:
    from kangnn.reports import results_table

    try:
        text = results_table(args.results, args.datasets)
    except ValueError as err:  # an unreadable summary.json, named
        raise UsageError(str(err)) from None
    if args.output:
        Path(args.output).write_text(text)
        print(args.output)
    else:
        print(text, end="")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from kangnn.train.predict import predict_csv

    out = predict_csv(
        args.run_dir,
        args.input,
        args.output,
        smiles_column=args.smiles_column,
        batch_size=args.batch_size,
        log=_info,
    )
    print(out)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from kangnn.reports import plot_kan_functions
    from kangnn.train.run import load_run

    if args.edges < 1:
        raise UsageError(f"--edges must be >= 1, got {args.edges}")
    cfg, module, _ = load_run(args.run_dir)
    if cfg.model.function != "kan":
        raise UsageError(f"{args.run_dir} is an MLP run: there are no KAN functions to plot")
    out = Path(args.output) if args.output else Path(args.run_dir) / "kan_functions.png"
    name = cfg.name or cfg.dataset.name or "run"
    plot_kan_functions(
        module.model,
        out,
        edges_per_layer=args.edges,
        title=f"{name} {cfg.model.conv}: learned KAN functions φ(x) (shaded: grid range)",
    )
    print(out)
    return 0


def _explain(args: argparse.Namespace) -> int:
    from kangnn.explain import explain_run

    if args.threshold < 0:
        raise UsageError(f"--threshold must be >= 0, got {args.threshold}")
    if args.top < 1:
        raise UsageError(f"--top must be >= 1, got {args.top}")
    if args.max_molecules < 2:
        raise UsageError(f"--max-molecules must be >= 2, got {args.max_molecules}")
    result = explain_run(
        args.run_dir,
        out_dir=args.out,
        threshold=args.threshold,
        top=args.top,
        max_molecules=args.max_molecules,
        data_root=args.root,
        log=_info,
    )
    _info(
        f"val {result.metric}: {_num(result.val)} original, {_num(result.val_pruned)} with the "
        f"head pruned {result.head_widths} -> {result.pruned_widths}, "
        f"{_num(result.val_formula)} with the head's formula"
    )
    print(result.out_dir)
    return 0


def _bench(argv: list[str]) -> int:
    import importlib

    if not argv or argv[0] not in BENCH_KINDS:
        _err(f"bench needs a KIND: kangnn bench {{{'|'.join(BENCH_KINDS)}}} [options]")
        return 2
    importlib.import_module(f"kangnn.bench.{argv[0]}").main(argv[1:])
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from kangnn.data import list_datasets

    for name in list_datasets():
        print(name)
    return 0


COMMANDS = {
    "train": _train,
    "compare": _compare,
    "splits": _splits,
    "report": _report,
    "predict": _predict,
    "plot": _plot,
    "explain": _explain,
    "datasets": _datasets,
    "tune": _tune,
}


class UsageError(ValueError):
    """A bad command-line argument (one line)."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from kangnn.config import ConfigError
    from kangnn.data import DataError
    from kangnn.models import ParameterMatchError
    from kangnn.train.chemprop import ChempropUnavailableError
    from kangnn.train.compare import RunFailedError
    from kangnn.train.rundir import CheckpointError, RunDirError

    return (
        ConfigError,
        DataError,
        RunDirError,
        CheckpointError,
        ParameterMatchError,
        RunFailedError,
        ChempropUnavailableError,
        UsageError,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kangnn`` command line; returns the exit status (2 for a user mistake).

    Set ``KANGNN_DEBUG=1`` to see the traceback of an error instead of its one-line message.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":  # forward everything after KIND untouched
        return _bench(argv[1:])
    parser = _parser()
    # Overrides may come after options (`compare cfg.yaml --seeds 3 train.epochs=5`), which
    # argparse leaves over as unknown: take those back as overrides, reject real unknown options.
    args, extra = parser.parse_known_args(argv)
    if extra:
        bad = [e for e in extra if e.startswith("-") or not hasattr(args, "overrides")]
        if bad:
            parser.error(f"unrecognized arguments: {' '.join(bad)}")
        args.overrides = list(args.overrides) + extra
    if getattr(args, "data_root", None):
        args.overrides = [*args.overrides, f"dataset.root={args.data_root}"]
    user_errors = _user_errors()
    try:
        return COMMANDS[args.command](args)
    except user_errors as err:
        if os.environ.get("KANGNN_DEBUG"):
            raise
        _err(str(err))
        return 2
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as err:
        if os.environ.get("KANGNN_DEBUG"):
            raise
        _err(f"{err.strerror}: {err.filename}")
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
