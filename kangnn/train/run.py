"""One training run: data → model → Lightning fit → best-on-validation evaluation → run directory.

The run directory holds the resolved ``config.yaml``, ``splits.json``, ``scaler.json``
(regression), ``metrics.json``, ``environment.json`` (versions and every switch that changes the
numbers, see :mod:`kangnn.train.environment`), ``predictions.csv`` (test part),
``checkpoints/best.ckpt`` and ``checkpoints/last.ckpt``, and the CSV logs ``logs/metrics.csv``.
Model selection uses the validation metric only; the test metrics are those of the
best-validation checkpoint.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf

from kangnn.config import ConfigError, for_model, primary_metric, save_config, validate_config
from kangnn.data import feature_dims, load_split, write_invalid_rows
from kangnn.files import atomic_write_json, make_dirs
from kangnn.models import ParamMatch, match_mlp, model_kwargs
from kangnn.train.callbacks import (
    EpochTimer,
    GridFit,
    PeakMemory,
    RandomState,
    every_epoch_checkpoint,
)
from kangnn.train.data import MoleculeDataModule, PreparedData, num_descriptors, prepare_data
from kangnn.train.environment import ENVIRONMENT_FILE, collect_environment
from kangnn.train.metrics import make_metrics
from kangnn.train.module import MoleculeModule
from kangnn.train.rundir import (
    BEST_CKPT,
    CONFIG_FILE,
    LAST_CKPT,
    LOG_BEFORE_RESUME,
    LOG_CSV,
    METRICS_FILE,
    PARTIAL,
    PREDICTIONS_FILE,
    SCALER_FILE,
    SPLITS_FILE,
    RunDirError,
    check_checkpoint,
    drop_if_empty,
    find_resumable,
    load_checkpoint,
    load_run_config,
    merge_metrics_csv,
    new_run_name,
    remove_tree,
    retarget_checkpoint,
    set_aside_metrics_csv,
    staging_dir,
)

__all__ = ["RunResult", "build_module", "evaluate", "load_run", "quiet_lightning", "train"]

# Set by the launching process so that DDP worker processes (which re-run the command) write into
# the same staging directory instead of making their own.
_STAGING_ENV = "KANGNN_RUN_STAGING"


@dataclass
class RunResult:
    """A finished run: its directory and the contents of its ``metrics.json``."""

    run_dir: Path
    metrics: dict[str, Any]


def quiet_lightning() -> None:
    """Silence Lightning's informational chatter and warnings that do not apply here."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (
        ".*does not have many workers.*",
        ".*smaller than the logging interval.*",
        ".*exists and is not empty.*",
        ".*Checkpoint directory .* exists and is not empty.*",
        ".*`isinstance\\(treespec, LeafSpec\\)` is deprecated.*",
        ".*LeafSpec.*",
        ".*sync_dist=True.*",
        ".*The dirpath has changed.*",
        ".*torch.utils._pytree.*",
        ".*GPU available but not used.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


def _local_rank() -> int:
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


def resolve_model(cfg: DictConfig, data: PreparedData) -> tuple[dict[str, Any], ParamMatch]:
    """The model's keyword arguments (function width resolved) and its parameter-match record.

    The model's ``compare.model_overrides`` are applied first, so the MLP twin of a tuned config
    is matched to the KAN built from the MLP's own (tuned) config.
    """
    cfg = for_model(cfg)
    atom_dims, bond_dims = data.dataset.atom_feature_dims, data.dataset.bond_feature_dims
    kwargs = model_kwargs(cfg.model)
    # The reference is the KAN of this config: with the MLP's width set by hand (as `compare`
    # does), model_kwargs of an MLP config would carry that width instead of the KAN's.
    kan_kwargs = model_kwargs(OmegaConf.merge(cfg.model, {"function": "kan"}))
    kwargs["num_descriptors"] = kan_kwargs["num_descriptors"] = num_descriptors(cfg)
    match = match_mlp(
        kan_kwargs,
        atom_dims,
        bond_dims,
        data.num_tasks,
        tolerance=cfg.model.match_tolerance,
        mlp_hidden_channels=cfg.model.mlp_hidden_channels,
    )
    if kwargs["function"] == "mlp":
        kwargs["function_hidden_channels"] = match.mlp_hidden_channels
    return kwargs, match


def build_module(cfg: DictConfig, data: PreparedData, kwargs: dict[str, Any]) -> MoleculeModule:
    """The LightningModule for ``cfg`` on ``data`` with model keyword arguments ``kwargs``."""
    scaler = data.scaler
    return MoleculeModule(
        kwargs,
        data.dataset.atom_feature_dims,
        data.dataset.bond_feature_dims,
        data.num_tasks,
        data.task,
        target_mean=None if scaler is None else scaler.mean,
        target_std=None if scaler is None else scaler.std,
        lr=cfg.train.lr,
        weight_decay=cfg.train.weight_decay,
        kan_reg_weight=cfg.train.kan_reg_weight,
        optimizer=cfg.train.optimizer,
        decay_exclude=list(cfg.train.decay_exclude),
        spline_lr_scale=cfg.train.spline_lr_scale,
        scheduler=cfg.train.scheduler,
        warmup_epochs=cfg.train.warmup_epochs,
        min_lr_ratio=cfg.train.min_lr_ratio,
        compile=cfg.model.compile,
    )


def grid_fit_callback(cfg: DictConfig, data: PreparedData) -> GridFit:
    """The KAN grid fit of a run (``model.grid_*`` keys): before training on a seeded sample of
    training molecules (not again on resume), refreshed every ``grid_refresh_every`` epochs."""
    m = cfg.model
    return GridFit(
        data.part("train"),
        num_molecules=m.grid_fit_molecules,
        seed=cfg.seed,
        sample=m.grid_fit_sample,
        initial=m.grid_init == "data",
        refresh_every=m.grid_refresh_every,
        refresh_until=m.grid_refresh_until,
    )


def _accelerator(cfg: DictConfig) -> str:
    acc = cfg.train.accelerator
    if acc == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if acc == "cuda" else acc


def _trainer(
    cfg: DictConfig, run_dir: Path, task: str, extra_callbacks: Sequence[L.Callback] = ()
) -> tuple[L.Trainer, ModelCheckpoint, EpochTimer, PeakMemory]:
    metric, mode = primary_metric(task)
    monitor = f"val/{metric}"
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    last = every_epoch_checkpoint(run_dir / "checkpoints")
    timer, memory = EpochTimer(), PeakMemory()
    # RandomState: a run resumed from last.ckpt draws the dropout masks of the uninterrupted run
    callbacks: list[L.Callback] = [checkpoint, last, timer, memory, RandomState(), *extra_callbacks]
    if cfg.train.ema_decay is not None:
        # validation, the best checkpoint's state_dict and so the test see the averaged weights
        callbacks.append(EMAWeightAveraging(decay=cfg.train.ema_decay))
    if cfg.train.patience > 0:
        callbacks.append(
            EarlyStopping(
                monitor=monitor, mode=mode, patience=cfg.train.patience, check_finite=False
            )
        )
    accelerator = _accelerator(cfg)
    deterministic: bool | str = bool(cfg.train.deterministic)
    if deterministic and accelerator == "gpu":
        deterministic = "warn"  # some CUDA scatter kernels have no deterministic variant
    devices = cfg.train.devices
    if OmegaConf.is_list(devices):
        devices = list(devices)
    try:
        trainer = L.Trainer(
            max_epochs=cfg.train.epochs,
            accelerator=accelerator,
            devices=devices,
            strategy=cfg.train.strategy,
            deterministic=deterministic,
            logger=CSVLogger(save_dir=str(run_dir), name="logs", version=""),
            callbacks=callbacks,
            enable_progress_bar=cfg.train.progress_bar,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            log_every_n_steps=1,
            gradient_clip_val=cfg.train.grad_clip,
            precision=str(cfg.train.precision),
            gradient_clip_algorithm=cfg.train.grad_clip_algorithm,
            default_root_dir=str(run_dir),
        )
    except (MisconfigurationException, ValueError) as err:
        # e.g. devices=2 with accelerator=gpu on a machine without GPUs, an unknown strategy
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"train.accelerator={cfg.train.accelerator}, train.devices={devices}, "
            f"train.strategy={cfg.train.strategy}: {first}"
        ) from None
    return trainer, checkpoint, timer, memory


@torch.no_grad()
def evaluate(
    module: MoleculeModule, loader: Any, device: torch.device | str = "cpu"
) -> tuple[dict[str, float], torch.Tensor]:
    """Metrics and predictions (original units / probabilities) of ``module`` over ``loader``."""
    module = module.to(device).eval()
    # Only this process evaluates (rank 0 after DDP training): no cross-process sync.
    metrics = make_metrics(module.task, module.hparams.num_tasks, sync_on_compute=False).to(device)
    preds = []
    for batch in loader:
        batch = batch.to(device)
        out = module(batch)
        y = batch.y.view(batch.num_graphs, -1).float()
        if module.task == "regression":
            metrics.update(out * module.target_std + module.target_mean, y)
        else:
            metrics.update(out, y)
        preds.append(module.predict_batch(batch).cpu())
    values = {k: float(v) for k, v in metrics.compute().items()}
    if "auc_tasks" in values:
        values["auc_tasks"] = int(values["auc_tasks"])
    empty = torch.empty(0, module.hparams.num_tasks)
    return values, torch.cat(preds) if preds else empty


def _write_predictions(path: Path, data: PreparedData, preds: torch.Tensor) -> None:
    part = data.split["test"]
    names = data.dataset.target_names
    smiles = data.dataset.smiles
    y = data.dataset.y
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "smiles", *names, *(f"{n}_pred" for n in names)])
        for row, i in enumerate(part):
            truth = ["" if math.isnan(v) else f"{v:.6g}" for v in y[i].tolist()]
            w.writerow([i, smiles[i], *truth, *(f"{v:.6g}" for v in preds[row].tolist())])
    os.replace(tmp, path)


def _clean(values: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}


def _finalize(
    cfg: DictConfig,
    staging: Path,
    data: PreparedData,
    module: MoleculeModule,
    trainer: L.Trainer,
    checkpoint: ModelCheckpoint,
    timer: EpochTimer,
    memory: PeakMemory,
    match: ParamMatch,
) -> dict[str, Any]:
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else staging / LAST_CKPT
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    module.load_state_dict(ckpt["state_dict"])
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if _accelerator(cfg) == "gpu"
        else torch.device("cpu")
    )
    dm = MoleculeDataModule(data, batch_size=cfg.train.batch_size)
    val, _ = evaluate(module, dm.val_dataloader(), device)
    test, preds = evaluate(module, dm.test_dataloader(), device)
    _write_predictions(staging / PREDICTIONS_FILE, data, preds)
    metric, mode = primary_metric(data.task)
    epoch_time = timer.epoch_time()
    metrics: dict[str, Any] = {
        "task": data.task,
        "metric": metric,
        "mode": mode,
        "val": _clean(val),
        "test": _clean(test),
        "params": sum(p.numel() for p in module.model.parameters() if p.requires_grad),
        "param_match": match.as_dict(),
        "epoch_time_s": epoch_time,
        "epoch_times_s": list(timer.times),
        "best_epoch": int(ckpt["epoch"]) + 1,
        "epochs_run": int(trainer.current_epoch),
        "peak_memory_mb": memory.peak_bytes / 2**20,
        "memory_kind": memory.kind,
        "seed": int(cfg.seed),
        "split_seed": data.split_seed,
        "function": cfg.model.function,
        "conv": cfg.model.conv,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "num_devices": int(trainer.world_size),
        "num_molecules": {k: len(v) for k, v in data.split.items()},
        "target_names": list(data.dataset.target_names),
    }
    atomic_write_json(staging / METRICS_FILE, metrics)
    if (staging / ENVIRONMENT_FILE).is_file():  # copied from the run a resume continues
        os.replace(staging / ENVIRONMENT_FILE, staging / f"before-resume-{ENVIRONMENT_FILE}")
    atomic_write_json(staging / ENVIRONMENT_FILE, collect_environment(cfg, data, device))
    module.cpu()
    return metrics


def _write_inputs(cfg: DictConfig, staging: Path, data: PreparedData) -> None:
    save_config(cfg, staging / CONFIG_FILE)
    atomic_write_json(
        staging / SPLITS_FILE,
        {**{k: list(map(int, v)) for k, v in data.split.items()}, "n": len(data.dataset)},
    )
    if data.scaler is not None:
        atomic_write_json(staging / SCALER_FILE, data.scaler.state_dict())
    if data.dataset.invalid_rows:  # skipped with dataset.skip_invalid: say which
        write_invalid_rows(data.dataset.invalid_rows, staging / "invalid_rows.csv")


@dataclass
class _Stage:
    """Where a run is written meanwhile (``staging``) and where it ends up (``final``)."""

    staging: Path
    final: Path
    created: list[Path]  # folders made for the staging directory (removed on failure)
    worker: bool  # a DDP worker process (rank > 0): writes nothing of its own


def _resume_source(
    cfg: DictConfig,
    resume: str | Path | None,
    overrides: Sequence[str],
    split: dict[str, list[int]] | None,
) -> tuple[DictConfig, Path | None, dict[str, list[int]] | None]:
    """The config, the run directory to continue (or ``None``) and the split to use."""
    old_dir = None
    if resume is None and cfg.train.resume:
        # `train.resume=true`: the latest run of this experiment, continued with this config.
        old_dir = find_resumable(cfg)
        cfg = cfg.copy()
        cfg.train.resume = False
    elif resume is not None:
        old_dir = Path(resume)
        cfg = load_run_config(old_dir, overrides)
    if old_dir is not None:
        if not (old_dir / LAST_CKPT).is_file():
            raise RunDirError(f"cannot resume {old_dir}: no {LAST_CKPT}")
        split = load_split(old_dir / SPLITS_FILE)
    return cfg, old_dir, split


def _record_resolved(cfg: DictConfig, match: ParamMatch, data: PreparedData) -> DictConfig:
    """``cfg`` with the resolved widths and split seed, so the run can be rebuilt as it was."""
    cfg = cfg.copy()
    cfg.model.function_hidden_channels = match.kan_hidden_channels
    if cfg.model.function == "mlp":
        cfg.model.mlp_hidden_channels = match.mlp_hidden_channels
    cfg.dataset.split_seed = data.split_seed
    return cfg


def _stage_resume(cfg: DictConfig, old_dir: Path, module: MoleculeModule, data: PreparedData):
    """Stage a resumed run: continue in place inside ``.partial``, else work on a copy."""
    check_checkpoint(old_dir / LAST_CKPT, module)
    in_partial = old_dir.parent.name == PARTIAL
    final = old_dir.parent.parent / old_dir.name if in_partial else old_dir
    staging = old_dir if in_partial else staging_dir(final).with_name(f"{final.name}.resume")
    created: list[Path] = []
    if not in_partial:
        if staging.exists():
            shutil.rmtree(staging)
        created = make_dirs(staging.parent)
        shutil.copytree(old_dir, staging)
    done = retarget_checkpoint(staging / LAST_CKPT, staging / "checkpoints")
    set_aside_metrics_csv(staging, done)
    _write_inputs(cfg, staging, data)
    return _Stage(staging, final, created, worker=False)


def _stage(
    cfg: DictConfig,
    old_dir: Path | None,
    run_dir: str | Path | None,
    module: MoleculeModule,
    data: PreparedData,
) -> _Stage:
    """Make (or, for a DDP worker, find) the staging directory and write the run's inputs."""
    if _local_rank() > 0 and _STAGING_ENV in os.environ:
        staging = Path(os.environ[_STAGING_ENV])  # the launching process made it
        return _Stage(staging, staging, [], worker=True)
    if old_dir is not None:
        return _stage_resume(cfg, old_dir, module, data)
    final = Path(run_dir) if run_dir is not None else Path(cfg.output_dir) / new_run_name(cfg)
    if final.exists():
        raise RunDirError(f"run directory already exists: {final}")
    staging = staging_dir(final)
    created = make_dirs(staging)
    _write_inputs(cfg, staging, data)
    return _Stage(staging, final, created, worker=False)


def _publish(stage: _Stage, resumed: bool) -> None:
    """Move the finished run from its staging directory to its final place."""
    staging, final = stage.staging, stage.final
    if resumed and final.exists() and final != staging:
        trash = staging.with_name(f"{final.name}.old")
        os.replace(final, trash)
        os.replace(staging, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, final)
    drop_if_empty(staging.parent)


def _fit(
    cfg: DictConfig,
    stage: _Stage,
    data: PreparedData,
    module: MoleculeModule,
    match: ParamMatch,
    old_dir: Path | None,
    callbacks: Sequence[L.Callback],
    log: Callable[[str], None],
) -> RunResult | None:
    """Fit, evaluate the best checkpoint and publish the run; clean up on failure."""
    staging = stage.staging
    keep_partial = False
    try:
        if not stage.worker:
            os.environ[_STAGING_ENV] = str(staging.absolute())
        trainer, checkpoint, timer, memory = _trainer(cfg, staging, data.task, callbacks)
        dm = MoleculeDataModule(data, cfg.train.batch_size, cfg.train.num_workers, seed=cfg.seed)
        ckpt_path = str(staging / LAST_CKPT) if old_dir is not None else None
        try:
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        except (KeyboardInterrupt, SystemExit):
            keep_partial = (staging / LAST_CKPT).is_file()
            raise
        if trainer.interrupted:
            keep_partial = (staging / LAST_CKPT).is_file()
            raise KeyboardInterrupt
        if trainer.global_rank != 0:
            return None
        if (staging / LOG_BEFORE_RESUME).is_file():
            merge_metrics_csv(staging / LOG_BEFORE_RESUME, staging / LOG_CSV)
        metrics = _finalize(cfg, staging, data, module, trainer, checkpoint, timer, memory, match)
        _publish(stage, resumed=old_dir is not None)
        return RunResult(stage.final, metrics)
    except BaseException:
        if not stage.worker:
            if keep_partial and old_dir is None:
                log(f"interrupted: resume with `kangnn train --resume {staging}`")
            elif old_dir is None or staging != old_dir:
                remove_tree(staging, stage.created)
        raise
    finally:
        if not stage.worker:
            os.environ.pop(_STAGING_ENV, None)


def train(
    cfg: DictConfig,
    *,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    overrides: Sequence[str] = (),
    split: dict[str, list[int]] | None = None,
    data: PreparedData | None = None,
    callbacks: Sequence[L.Callback] = (),
    log: Callable[[str], None] | None = None,
) -> RunResult | None:
    """Train the model ``cfg`` describes and write its run directory.

    Parameters
    ----------
    cfg:
        The experiment config (:func:`kangnn.config.load_config`). Ignored with ``resume``.
        Its ``compare.model_overrides`` for ``model.function`` are applied first.
    run_dir:
        Where the finished run goes (default ``<output_dir>/<stem>-<time>-<tag>``); it must not
        exist yet.
    resume:
        A run directory to continue from its ``last.ckpt`` (its own config plus ``overrides``,
        e.g. more epochs). With ``cfg.train.resume`` the latest run of the same experiment is
        resumed instead. The run is updated in place once the continued training completes.
    overrides:
        Dotlist overrides applied to the resumed run's config.
    split:
        A ready ``{"train", "val", "test"}`` split to use instead of making one (``compare``
        computes each seed's split once and hands it to both models).
    data:
        Data already prepared for ``cfg`` (dataset, split, scaler; ``kangnn tune`` prepares them
        once for all its trials); not with ``split`` or a resume.
    callbacks:
        Extra Lightning callbacks for the fit (``kangnn tune`` reports to its pruner).
    log:
        Where progress lines go (default: nowhere).

    Returns
    -------
    RunResult or None
        ``None`` in DDP worker processes (rank > 0), which write nothing.

    Raises
    ------
    kangnn.data.DataError, kangnn.config.ConfigError, RunDirError, CheckpointError, ValueError
        For bad input; nothing is left behind in ``output_dir`` then.
    """
    quiet_lightning()
    log = log or (lambda s: None)
    cfg, old_dir, split = _resume_source(cfg, resume, overrides, split)
    if data is not None and (split is not None or old_dir is not None):
        raise ValueError("train: give either prepared data or a split/resume, not both")
    cfg = for_model(cfg)
    validate_config(cfg)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)

    data = prepare_data(cfg, split) if data is None else data
    kwargs, match = resolve_model(cfg, data)
    if match.matched and cfg.model.function == "mlp":
        log(
            f"MLP baseline: function width {match.mlp_hidden_channels}, {match.mlp_params} "
            f"parameters vs KAN {match.kan_params} ({match.rel_diff:+.2%})"
        )
    cfg = _record_resolved(cfg, match, data)

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = build_module(cfg, data, kwargs)
    if module.model.descriptor_norm is not None:
        train_descriptors = data.descriptors("train")
        if train_descriptors is None:
            raise ValueError("dataset.descriptors is set but the prepared data have none")
        module.model.fit_descriptors(train_descriptors)
    stage = _stage(cfg, old_dir, run_dir, module, data)
    callbacks = [grid_fit_callback(cfg, data), *callbacks]
    return _fit(cfg, stage, data, module, match, old_dir, callbacks, log)


def load_run(
    run_dir: str | Path, checkpoint: str = "best"
) -> tuple[DictConfig, MoleculeModule, dict[str, Any]]:
    """Load a finished run: its config, its module with the ``best`` (or ``last``) weights, and
    its ``metrics.json`` (empty dict if absent). The data are not loaded.

    Raises
    ------
    RunDirError
        Missing run directory, config or checkpoint.
    CheckpointError
        A checkpoint of a different model than the config describes.
    """
    run = Path(run_dir)
    cfg = load_run_config(run)
    ckpt_file = run / (BEST_CKPT if checkpoint == "best" else LAST_CKPT)
    if not ckpt_file.is_file():
        raise RunDirError(f"{run}: no {ckpt_file.relative_to(run)} (was the run completed?)")
    ckpt = load_checkpoint(ckpt_file)
    metrics_path = run / METRICS_FILE
    if not metrics_path.is_file():
        raise RunDirError(f"{run}: no {METRICS_FILE} (was the run completed?)")
    metrics = json.loads(metrics_path.read_text())
    num_tasks, task = len(metrics["target_names"]), metrics["task"]

    atom_dims, bond_dims = feature_dims(cfg.dataset.features)
    kwargs = model_kwargs(cfg.model)
    kwargs["num_descriptors"] = num_descriptors(cfg)
    if kwargs["function"] == "mlp" and kwargs["function_hidden_channels"] is None:
        kwargs["function_hidden_channels"] = match_mlp(
            kwargs, atom_dims, bond_dims, num_tasks, cfg.model.match_tolerance
        ).mlp_hidden_channels
    module = MoleculeModule(kwargs, atom_dims, bond_dims, num_tasks, task)
    check_checkpoint(ckpt_file, module, ckpt)
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    return cfg, module, metrics
