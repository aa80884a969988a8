"""chemprop v2 (D-MPNN) as kangnn's external baseline, on kangnn's own molecules and splits.

:func:`train_chemprop` trains chemprop through its Python API (``chemprop.data``,
``chemprop.featurizers``, ``chemprop.nn``, ``chemprop.models.MPNN`` and a Lightning trainer) on
exactly the molecules of a kangnn dataset and the train/val/test indices of a kangnn split, with
the settings of the config's ``chemprop`` section. Its defaults are those of ``chemprop train``
2.3.1: bond message passing of depth 3 and width 300, ``norm`` aggregation (sum / 100), one FFN
hidden layer of 300, dropout 0, 50 epochs, batch 64, the Noam-like schedule (2 warm-up epochs
from ``init_lr`` 1e-4 to ``max_lr`` 1e-3, then decay to ``final_lr`` 1e-4), regression targets
standardised on the training part, V2 multi-hot atom features, and the checkpoint of the best
``val_loss`` (``chemprop.tracking_metric``). The run's seed seeds the weights (like
``--pytorch-seed``) and the order of the training batches (like ``--data-seed``), and training
is deterministic (1 CPU thread unless ``train.threads`` says otherwise). With the same settings
and seeds, ``chemprop train --splits-file`` (:func:`export_splits`) predicts the same values
(tested).

The best-validation checkpoint then predicts the validation and test parts, written to
``val_predictions.csv`` and ``predictions.csv`` in the run directory; kangnn's own metric code
(:mod:`kangnn.train.metrics`) computes the reported metrics *from those files*, exactly as for a
kangnn run. Time per epoch and peak memory are measured by the same callbacks as kangnn's runs.

A chemprop run directory holds ``config.yaml`` (the kangnn config, ``chemprop`` section
included), ``splits.json`` (kangnn's indices), ``predictions.csv``, ``val_predictions.csv``,
``metrics.json``, ``environment.json``, ``logs/metrics.csv`` and ``checkpoints/best.ckpt``
(``checkpoints/last.ckpt`` too, written after every epoch); nothing is written outside it. A
run cut off mid-training (a session's end) is left in ``.partial`` and continues from its last
epoch with ``resume=True`` (``--resume``), to the numbers an uninterrupted run gives: the
checkpoint keeps the weights, optimiser, schedule, early-stopping and random states, and the
order of the training batches is replayed.

chemprop is optional (``pip install 'kangnn[chemprop]'``); this module imports it only when it
trains. It also registers ``chemprop`` as a model of ``kangnn tune`` (over the ``tune.space``
entries whose ``models`` list ``chemprop``), and converts kangnn splits into chemprop's
``--splits-file`` format (:func:`export_splits`).
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from kangnn.config import ConfigError, apply_overrides, primary_metric, save_config
from kangnn.data import DataError, load_split
from kangnn.files import atomic_write_json, make_dirs
from kangnn.train.callbacks import RandomState, every_epoch_checkpoint
from kangnn.train.metrics import make_metrics
from kangnn.train.rundir import (
    CONFIG_FILE,
    LAST_CKPT,
    LOG_BEFORE_RESUME,
    LOG_CSV,
    METRICS_FILE,
    PREDICTIONS_FILE,
    SPLITS_FILE,
    RunDirError,
    drop_if_empty,
    load_run_config,
    merge_metrics_csv,
    remove_tree,
    resumable_epochs,
    retarget_checkpoint,
    set_aside_metrics_csv,
    staging_dir,
)

__all__ = [
    "INSTALL_HINT",
    "MODEL_NAMES",
    "ChempropUnavailableError",
    "export_splits",
    "metrics_from_predictions",
    "require_chemprop",
    "to_chemprop_splits",
    "train_chemprop",
    "tuned_config",
]

INSTALL_HINT = "pip install 'kangnn[chemprop]' (or bash install.sh)"
#: The summary rows: chemprop at its defaults, and with ``compare.model_overrides.chemprop``.
MODEL_NAMES = ("chemprop", "chemprop-tuned")
VAL_PREDICTIONS_FILE = "val_predictions.csv"
BEST_CKPT = Path("checkpoints") / "best.ckpt"


class ChempropUnavailableError(RuntimeError):
    """chemprop is not installed (or not a 2.x version); the message names the install command."""


def require_chemprop() -> Any:
    """Import chemprop 2.x and return the module.

    Raises
    ------
    ChempropUnavailableError
        One line naming the install command when chemprop cannot be imported or is not 2.x.
    """
    try:
        import chemprop
    except ImportError as err:
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        raise ChempropUnavailableError(
            f"chemprop is not installed ({reason}); install it with {INSTALL_HINT}"
        ) from None
    version = str(getattr(chemprop, "__version__", "0"))
    if not version.startswith("2."):
        raise ChempropUnavailableError(
            f"kangnn needs chemprop 2.x, found {version}; install it with {INSTALL_HINT}"
        )
    return chemprop


def tuned_config(cfg: DictConfig) -> DictConfig | None:
    """``cfg`` with ``compare.model_overrides.chemprop`` applied (the values ``kangnn tune
    --models chemprop`` found), or ``None`` when it has none."""
    items = cfg.compare.model_overrides.get("chemprop")
    if not items:
        return None
    return apply_overrides(cfg, list(items), source="compare.model_overrides.chemprop")


# ----------------------------------------------------------------------------- training


def _tracking(cp: Any, name: str) -> tuple[str, str]:
    """The monitored key and its mode for ``chemprop.tracking_metric``."""
    if name == "val_loss":
        return "val_loss", "min"
    registry = cp.nn.MetricRegistry
    if name not in registry:
        raise ConfigError(
            f"bad value for config key 'chemprop.tracking_metric': {name!r} is not val_loss or "
            f"one of chemprop's metrics ({', '.join(sorted(registry))})"
        )
    return f"val/{name}", "max" if registry[name].higher_is_better else "min"


def _featurizer(cp: Any, mode: str) -> Any:
    from chemprop.featurizers.bond import RIGRBondFeaturizer

    mode = mode.upper()
    atoms = cp.featurizers.get_multi_hot_atom_featurizer(mode)
    bonds = RIGRBondFeaturizer() if mode == "RIGR" else cp.featurizers.MultiHotBondFeaturizer()
    return cp.featurizers.SimpleMoleculeMolGraphFeaturizer(
        atom_featurizer=atoms, bond_featurizer=bonds
    )


def _datapoints(
    cp: Any,
    smiles: Sequence[str],
    y: np.ndarray,
    part: Sequence[int],
    x_d: np.ndarray | None = None,
) -> list:
    points = []
    for i in part:
        extra = {} if x_d is None else {"x_d": x_d[i]}
        try:
            points.append(cp.data.MoleculeDatapoint.from_smi(smiles[i], y[i], **extra))
        except RuntimeError as err:  # chemprop's make_mol: RDKit returned None
            raise DataError(
                f"molecule {i} ({smiles[i]!r}): chemprop cannot read it ({err})"
            ) from None
    return points


def _descriptor_inputs(data: Any) -> np.ndarray | None:
    """The descriptors kangnn's model head sees (normal scores fitted on train), or ``None``.

    chemprop gets these very values as its extra molecule features ``x_d``, so both sides see
    the same inputs; chemprop's own ``X_d`` scaler is not used (it cannot take NaN).
    """
    from kangnn.models.descriptors import QuantileNormal

    raw = data.descriptors("train")
    if raw is None:
        return None
    full = data.descriptors()
    norm = QuantileNormal(full.size(1)).fit(raw)
    return norm(full).double().numpy()


def _model(
    cp: Any,
    cfg: DictConfig,
    featurizer: Any,
    task: str,
    n_tasks: int,
    scaler: Any,
    x_d_dim: int = 0,
):
    s = cfg.chemprop
    mp = cp.nn.BondMessagePassing(
        featurizer.atom_fdim,
        featurizer.bond_fdim,
        d_h=s.message_hidden_dim,
        depth=s.depth,
        dropout=s.dropout,
        activation=s.activation,
    )
    if s.aggregation == "norm":
        agg = cp.nn.NormAggregation(norm=s.aggregation_norm)
    elif s.aggregation == "mean":
        agg = cp.nn.MeanAggregation()
    else:
        agg = cp.nn.SumAggregation()
    kwargs: dict[str, Any] = dict(
        n_tasks=n_tasks,
        input_dim=mp.output_dim + x_d_dim,
        hidden_dim=s.ffn_hidden_dim,
        n_layers=s.ffn_num_layers,
        dropout=s.dropout,
        activation=s.activation,
    )
    if task == "regression":
        transform = cp.nn.UnscaleTransform.from_standard_scaler(scaler)
        predictor = cp.nn.RegressionFFN(output_transform=transform, **kwargs)
        metrics = [cp.nn.RMSE()]
    else:
        predictor = cp.nn.BinaryClassificationFFN(**kwargs)
        metrics = [cp.nn.BinaryAUROC()]
    tracked = s.tracking_metric
    if tracked != "val_loss" and tracked != metrics[0].alias:
        metrics.append(cp.nn.MetricRegistry[tracked]())
    return cp.models.MPNN(
        mp,
        agg,
        predictor,
        batch_norm=s.batch_norm,
        metrics=metrics,
        warmup_epochs=s.warmup_epochs,
        init_lr=s.init_lr,
        max_lr=s.max_lr,
        final_lr=s.final_lr,
    )


class _Report(L.Callback):
    """Report chemprop's per-epoch validation metric (in the target's units) to ``report``
    (``kangnn tune``'s pruner) and stop the fit when it answers ``True``."""

    def __init__(self, report: Callable[[int, float], bool], key: str, scale: float) -> None:
        self.report, self.key, self.scale = report, key, scale

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.key)
        if value is not None and self.report(trainer.current_epoch, float(value) * self.scale):
            trainer.should_stop = True


def _accelerator(cfg: DictConfig) -> str:
    acc = cfg.train.accelerator
    if acc == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if acc == "cuda" else acc


def _write_predictions(
    path: Path, part: Sequence[int], smiles: Sequence[str], y: np.ndarray, names, preds
) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "smiles", *names, *(f"{n}_pred" for n in names)])
        for row, i in enumerate(part):
            truth = ["" if math.isnan(v) else repr(float(v)) for v in y[i]]
            w.writerow([i, smiles[i], *truth, *(repr(float(v)) for v in preds[row])])
    os.replace(tmp, path)


def metrics_from_predictions(path: str | Path, task: str) -> dict[str, float | int | None]:
    """kangnn's metrics of a predictions file (``index, smiles, <targets>, <targets>_pred``).

    Regression: RMSE and MAE per task in the targets' units, averaged over tasks;
    classification: ROC-AUC per task, averaged over tasks with both classes (``auc_tasks`` of
    them). Empty truth cells are missing labels. A missing value is ``None``.
    """
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    names = [h for h in header[2:] if not h.endswith("_pred")]
    t = len(names)
    truth = torch.tensor(
        [[float(v) if v != "" else float("nan") for v in r[2 : 2 + t]] for r in body],
        dtype=torch.float64,
    ).reshape(-1, t)
    preds = torch.tensor([[float(v) for v in r[2 + t :]] for r in body], dtype=torch.float64)
    metric = make_metrics(task, t, sync_on_compute=False)
    metric.update(preds.reshape(-1, t), truth)
    out: dict[str, float | int | None] = {}
    for k, v in metric.compute().items():
        x = float(v)
        out[k] = int(x) if k == "auc_tasks" else (None if math.isnan(x) else x)
    return out


def train_chemprop(
    cfg: DictConfig,
    run_dir: str | Path,
    split: dict[str, list[int]] | None = None,
    *,
    data: Any = None,
    label: str = "chemprop",
    report: Callable[[int, float], bool] | None = None,
    keep_checkpoint: bool = True,
    resume: bool = False,
    callbacks: Sequence[L.Callback] = (),
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train chemprop on kangnn's molecules and split; write its run directory.

    Parameters
    ----------
    cfg:
        A kangnn config: its dataset, ``seed``, ``train.threads``/``accelerator`` and
        ``chemprop`` section are used.
    run_dir:
        Where the run goes (must not exist; written in ``.partial`` first).
    split:
        The ``{"train", "val", "test"}`` indices (default: the split ``cfg`` makes).
    data:
        An already prepared :class:`~kangnn.train.data.PreparedData` (its split is used).
    label:
        The model name recorded in ``metrics.json`` (``chemprop`` or ``chemprop-tuned``).
    report:
        ``report(epoch, value) -> stop?`` after each validation epoch (``kangnn tune``).
    keep_checkpoint:
        Keep ``checkpoints/best.ckpt`` (and ``last.ckpt``). With ``True`` a run interrupted
        mid-training (``KeyboardInterrupt``) is left in ``.partial`` to be continued; with
        ``False`` (tuning trials) it is removed.
    resume:
        Continue the run cut off in ``run_dir``'s staging folder (``.partial/<name>``) from its
        ``last.ckpt``; it must have been made with the same config and split. Without such a run
        it is trained anew.
    callbacks:
        Extra Lightning callbacks for the fit.

    Returns
    -------
    dict
        The contents of ``metrics.json``: ``val`` and ``test`` metrics recomputed by kangnn
        from the prediction files, ``params``, ``epoch_time_s``, ``best_epoch``, ...

    Raises
    ------
    ChempropUnavailableError, ConfigError, DataError, RunDirError
    """
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from kangnn.train.callbacks import EpochTimer, PeakMemory
    from kangnn.train.data import prepare_data
    from kangnn.train.environment import ENVIRONMENT_FILE, collect_environment
    from kangnn.train.run import quiet_lightning

    cp = require_chemprop()
    quiet_lightning()
    logging.getLogger("chemprop").setLevel(logging.ERROR)
    # chemprop's metric objects are hyperparameters its checkpoints keep but YAML cannot hold
    warnings.filterwarnings("ignore", message=".*Skipping 'metrics' parameter.*")
    log = log or (lambda s: None)
    s = cfg.chemprop
    monitor, mode = _tracking(cp, s.tracking_metric)
    torch.set_num_threads(int(cfg.train.threads or 1))
    if data is None:
        data = prepare_data(cfg, split)
    task, n_tasks = data.task, data.num_tasks
    smiles = list(data.dataset.smiles)
    y = data.dataset.y.double().numpy().reshape(len(smiles), n_tasks)
    part = {k: list(map(int, v)) for k, v in data.split.items()}

    final = Path(run_dir)
    if final.exists():
        raise RunDirError(f"run directory already exists: {final}")
    staging = staging_dir(final)
    done = resumable_epochs(staging) if resume else None
    if done is not None:
        _check_same_run(staging, cfg, part)
        created: list[Path] = []
    else:
        remove_tree(staging)  # a cut-off run that cannot be continued exactly: trained anew
        created = make_dirs(staging)
    keep_partial = False
    try:
        save_config(cfg, staging / CONFIG_FILE)
        atomic_write_json(staging / SPLITS_FILE, {**part, "n": len(smiles)})
        featurizer = _featurizer(cp, s.atom_features)
        x_d = _descriptor_inputs(data)
        sets = {
            k: cp.data.MoleculeDataset(_datapoints(cp, smiles, y, v, x_d), featurizer)
            for k, v in part.items()
        }
        scaler = None
        if task == "regression":  # chemprop scales the targets on train, and val alike
            scaler = sets["train"].normalize_targets()
            sets["val"].normalize_targets(scaler)
        sets["train"].cache = sets["val"].cache = True

        seed = int(cfg.seed)
        L.seed_everything(seed, workers=True, verbose=False)
        x_d_dim = 0 if x_d is None else x_d.shape[1]
        model = _model(cp, cfg, featurizer, task, n_tasks, scaler, x_d_dim)
        build = cp.data.build_dataloader
        train_loader = build(sets["train"], s.batch_size, 0, seed=seed, drop_last=s.batch_norm)
        loaders = {
            k: build(sets[k], s.batch_size, 0, shuffle=False, drop_last=False)
            for k in ("val", "test")
        }

        checkpoint = ModelCheckpoint(
            dirpath=staging / "checkpoints",
            filename="best",
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )
        last = every_epoch_checkpoint(staging / "checkpoints")  # with RandomState's state
        timer, memory = EpochTimer(), PeakMemory()
        fit_callbacks: list[L.Callback] = [checkpoint, last, timer, memory, RandomState()]
        fit_callbacks += callbacks
        if report is not None:
            key = f"val/{model.metrics[0].alias}"
            scale = float(np.mean(scaler.scale_)) if scaler is not None else 1.0
            fit_callbacks.append(_Report(report, key, scale))
        accelerator = _accelerator(cfg)
        deterministic: bool | str = bool(cfg.train.deterministic)
        if deterministic and accelerator == "gpu":
            deterministic = "warn"
        trainer = L.Trainer(
            max_epochs=s.epochs,
            accelerator=accelerator,
            devices=1,
            deterministic=deterministic,
            logger=CSVLogger(save_dir=str(staging), name="logs", version=""),
            callbacks=fit_callbacks,
            enable_progress_bar=bool(cfg.train.progress_bar),
            enable_model_summary=False,
            num_sanity_val_steps=0,
            log_every_n_steps=1,
            default_root_dir=str(staging),
        )
        ckpt_path = None
        if done is not None:
            retarget_checkpoint(staging / LAST_CKPT, staging / "checkpoints")
            set_aside_metrics_csv(staging, done)
            for _ in range(done):  # chemprop's sampler reshuffles on each pass: replay them
                iter(train_loader.sampler)
            ckpt_path = str(staging / LAST_CKPT)
            log(f"continuing {final.name} after epoch {done}")
        try:
            # weights_only=False: chemprop's checkpoints keep its metric objects (our own file)
            trainer.fit(
                model, train_loader, loaders["val"], ckpt_path=ckpt_path, weights_only=False
            )
        except (KeyboardInterrupt, SystemExit):
            keep_partial = keep_checkpoint and (staging / LAST_CKPT).is_file()
            raise
        if trainer.interrupted:
            keep_partial = keep_checkpoint and (staging / LAST_CKPT).is_file()
            raise KeyboardInterrupt
        if (staging / LOG_BEFORE_RESUME).is_file():
            merge_metrics_csv(staging / LOG_BEFORE_RESUME, staging / LOG_CSV)

        best_epoch, best_score = int(trainer.current_epoch), None
        if checkpoint.best_model_path:
            ckpt = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
            model.load_state_dict(ckpt["state_dict"])
            best_epoch = int(ckpt["epoch"]) + 1
            best_score = float(checkpoint.best_model_score)
        metrics: dict[str, Any] = {}
        for name, file in (("val", VAL_PREDICTIONS_FILE), ("test", PREDICTIONS_FILE)):
            preds = torch.cat(trainer.predict(model, dataloaders=loaders[name])).double()
            preds = preds.reshape(len(part[name]), n_tasks).cpu().numpy()
            names = data.dataset.target_names
            _write_predictions(staging / file, part[name], smiles, y, names, preds)
            metrics[name] = metrics_from_predictions(staging / file, task)
        if not keep_checkpoint:
            remove_tree(staging / "checkpoints")
        else:  # the best weights are kept; the state to continue from is not needed any more
            (staging / LAST_CKPT).unlink(missing_ok=True)

        metric, metric_mode = primary_metric(task)
        gpu = accelerator == "gpu"
        device = torch.device("cuda", torch.cuda.current_device()) if gpu else torch.device("cpu")
        out: dict[str, Any] = {
            "task": task,
            "metric": metric,
            "mode": metric_mode,
            "val": metrics["val"],
            "test": metrics["test"],
            "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "epoch_time_s": timer.epoch_time(),
            "epoch_times_s": list(timer.times),
            "best_epoch": best_epoch,
            "epochs_run": int(trainer.current_epoch),
            "peak_memory_mb": memory.peak_bytes / 2**20,
            "memory_kind": memory.kind,
            "seed": seed,
            "split_seed": data.split_seed,
            "function": label,
            "conv": "dmpnn",
            "model": label,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "num_devices": 1,
            "num_molecules": {k: len(v) for k, v in part.items()},
            "target_names": list(data.dataset.target_names),
            "chemprop": OmegaConf.to_container(s, resolve=True),
            "chemprop_version": cp.__version__,
            "chemprop_selection": {"monitor": monitor, "mode": mode, "best": best_score},
        }
        atomic_write_json(staging / METRICS_FILE, out)
        atomic_write_json(staging / ENVIRONMENT_FILE, collect_environment(cfg, data, device))
        os.replace(staging, final)
        drop_if_empty(staging.parent)
    except BaseException:
        if not keep_partial:
            remove_tree(staging, created)
        raise
    return out


def _check_same_run(staging: Path, cfg: DictConfig, part: dict[str, list[int]]) -> None:
    """Refuse to continue a cut-off run made with another config or split."""
    import json

    old_cfg = OmegaConf.to_container(load_run_config(staging), resolve=True)
    new_cfg = OmegaConf.to_container(cfg, resolve=True)
    old_split = json.loads((staging / SPLITS_FILE).read_text())
    if old_cfg != new_cfg or any(old_split.get(k) != v for k, v in part.items()):
        what = "config" if old_cfg != new_cfg else "split"
        raise RunDirError(
            f"{staging}: the cut-off run there was made with another {what}; remove it to "
            "train anew"
        )


# ----------------------------------------------------------------------------- kangnn tune


def _check_key(key: str) -> str | None:
    if key.startswith("chemprop."):
        return None
    return "a chemprop trial reads only the chemprop section (search chemprop.* keys)"


def _objective(cfg: DictConfig, ctx: Any) -> float:
    """``kangnn tune``: train chemprop with the trial's values; its validation metric."""
    require_chemprop()
    if cfg.tune.epochs is not None:  # the trials' epoch budget applies to chemprop too
        cfg = cfg.copy()
        cfg.chemprop.epochs = int(cfg.tune.epochs)
    m = train_chemprop(cfg, ctx.run_dir, data=ctx.data, report=ctx.report, keep_checkpoint=False)
    value = m["val"].get(ctx.metric)
    return float("nan") if value is None else float(value)


def _register() -> None:
    try:
        from kangnn.train import tune
    except ImportError:  # kangnn without its tuning module
        return
    tune.register("chemprop", tune.Tunable(objective=_objective, check_key=_check_key))


_register()


# ----------------------------------------------------------------------------- splits


def to_chemprop_splits(split: dict[str, Sequence[int]]) -> list[dict[str, list[int]]]:
    """A kangnn split in chemprop's ``--splits-file`` format: a list with one replicate,
    ``[{"train": [...], "val": [...], "test": [...]}]``."""
    return [{k: [int(i) for i in split[k]] for k in ("train", "val", "test")}]


def export_splits(
    run_dir: str | Path,
    output: str | Path | None = None,
    data_out: str | Path | None = None,
    data_root: str | None = None,
) -> tuple[Path, Path | None, str]:
    """Write the split of a kangnn run in chemprop's ``--splits-file`` format.

    The indices are those of kangnn's molecules. They are the rows of the run's source CSV
    when kangnn kept every row of it; otherwise (invalid SMILES skipped) ``data_out`` must be
    given, and the molecules they index are written there (``smiles`` and the targets).

    Parameters
    ----------
    run_dir:
        A kangnn (or chemprop) run directory with ``splits.json`` and ``config.yaml``.
    output:
        The JSON file to write (default ``RUN_DIR/chemprop_splits.json``).
    data_out:
        Also write kangnn's molecules, in index order, to this CSV.
    data_root:
        Where the run's dataset lives, if not where its config says.

    Returns
    -------
    (splits path, data path or None, the chemprop command that uses them)

    Raises
    ------
    RunDirError, DataError
        No run directory or split; a split that does not fit the dataset; indices that would
        not match the source file's rows without ``data_out``.
    """
    from kangnn.train.data import load_from_config

    run = Path(run_dir)
    split_file = run / SPLITS_FILE
    if not run.is_dir():
        raise RunDirError(f"run directory not found: {run}")
    if not split_file.is_file():
        nested = sorted(p.parent.name for p in run.glob(f"runs/*/{SPLITS_FILE}"))
        hint = f" (a comparison? pick a run: {run / 'runs' / nested[0]})" if nested else ""
        raise RunDirError(f"{run} has no {SPLITS_FILE}{hint}")
    cfg = load_run_config(run, [f"dataset.root={data_root}"] if data_root else None)
    dataset = load_from_config(cfg)
    split = load_split(split_file, len(dataset))
    out = Path(output) if output is not None else run / "chemprop_splits.json"
    names = list(dataset.target_names)
    targets = " ".join(shlex.quote(n) for n in names)
    if data_out is not None:
        data_path = Path(data_out)
        y = dataset.y.double().numpy().reshape(len(dataset), len(names))
        tmp = data_path.with_name(f".{data_path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["smiles", *names])
            for smi, row in zip(dataset.smiles, y, strict=True):
                w.writerow([smi, *("" if math.isnan(v) else repr(float(v)) for v in row)])
        os.replace(tmp, data_path)
        source, smiles_col = data_path, "smiles"
    else:
        data_path = None
        rows = list(dataset.source_rows)
        if rows != list(range(2, 2 + len(dataset))):
            skipped = len(getattr(dataset, "invalid_rows", []) or [])
            raise DataError(
                f"{dataset.source}: kangnn's {len(dataset)} molecules are not the file's rows "
                f"one for one ({skipped} skipped as invalid), so the indices would not match "
                "it; add --data FILE to also write the molecules they index"
            )
        source = Path(dataset.source)
        smiles_col = _smiles_column(cfg, source)
    atomic_write_json(out, to_chemprop_splits(split))
    kind = "regression" if dataset.task == "regression" else "classification"
    q = shlex.quote
    command = (
        f"chemprop train --data-path {q(str(source))} --smiles-columns {q(smiles_col)} "
        f"--target-columns {targets} --task-type {kind} --splits-file {q(str(out))}"
    )
    return out, data_path, command


def _smiles_column(cfg: DictConfig, path: Path) -> str:
    """The SMILES column of a run's source CSV: the config's, else the MoleculeNet file's."""
    from kangnn.data import KNOWN_DATASETS

    if cfg.dataset.path is not None or cfg.dataset.name not in KNOWN_DATASETS:
        return cfg.dataset.smiles_column or "smiles"
    with open(path, newline="") as f:
        header = next(csv.reader(f))
    return header[KNOWN_DATASETS[cfg.dataset.name].smiles_index]


# ----------------------------------------------------------------------------- child process


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kangnn.train.chemprop CONFIG [OVERRIDES] --run-dir DIR [--split FILE]
    [--label NAME] [--resume]``: one chemprop run in its own process (what ``kangnn compare``
    starts for clean timings), e.g. ``chemprop.aggregation=sum seed=1`` to try one of chemprop's
    settings on kangnn's split."""
    from kangnn.config import load_config

    p = argparse.ArgumentParser(prog="python -m kangnn.train.chemprop")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", metavar="OVERRIDES")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--split")
    p.add_argument("--label", default="chemprop", choices=MODEL_NAMES)
    p.add_argument(
        "--resume", action="store_true", help="continue the run cut off in RUN_DIR's .partial"
    )
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        split = load_split(args.split) if args.split else None
        train_chemprop(cfg, args.run_dir, split, label=args.label, resume=args.resume)
    except (ConfigError, DataError, RunDirError, ChempropUnavailableError) as err:
        print(f"kangnn: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
