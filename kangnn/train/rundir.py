"""Run directories: naming, atomic creation, loading a finished run and checkpoint checks.

A run is written in ``<output_dir>/.partial/<name>`` and renamed to ``<output_dir>/<name>`` only
when complete, so a failed run never leaves a half-written run directory behind.
"""

from __future__ import annotations

import csv
import os
import secrets
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from kangnn.config import _merge, apply_overrides, default_config, validate_config

__all__ = [
    "CheckpointError",
    "RunDirError",
    "check_checkpoint",
    "experiment_name",
    "find_resumable",
    "load_run_config",
    "new_run_name",
    "read_metrics_csv",
    "remove_tree",
    "resumable_epochs",
    "run_stem",
    "staging_dir",
    "timestamp",
]

PARTIAL = ".partial"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
SPLITS_FILE = "splits.json"
SCALER_FILE = "scaler.json"
PREDICTIONS_FILE = "predictions.csv"
BEST_CKPT = Path("checkpoints") / "best.ckpt"
LAST_CKPT = Path("checkpoints") / "last.ckpt"
LOG_CSV = Path("logs") / "metrics.csv"
#: Where a resumed run keeps the log rows of the epochs before it continued.
LOG_BEFORE_RESUME = Path("logs") / "metrics-before-resume.csv"


class RunDirError(ValueError):
    """A missing or incomplete run directory (one line)."""


class CheckpointError(ValueError):
    """A checkpoint that does not belong to the model a run's config describes (one line)."""


def experiment_name(cfg: DictConfig) -> str:
    """What a run, comparison or study is named after: ``name``, else the dataset's name, else
    the stem of the dataset file."""
    return cfg.name or cfg.dataset.name or Path(cfg.dataset.path or "data").stem


def timestamp() -> str:
    """``YYYYmmdd-HHMMSS`` (local time), the time part of run and comparison names."""
    return time.strftime("%Y%m%d-%H%M%S")


def run_stem(cfg: DictConfig) -> str:
    """``<name>-<conv>-<function>-s<seed>``: the part of a run's name that identifies it."""
    return f"{experiment_name(cfg)}-{cfg.model.conv}-{cfg.model.function}-s{cfg.seed}"


def new_run_name(cfg: DictConfig) -> str:
    """A fresh, unique run name: the stem, a timestamp and a short random tag."""
    return f"{run_stem(cfg)}-{timestamp()}-{secrets.token_hex(2)}"


def staging_dir(final: Path) -> Path:
    """Where the run that ends up in ``final`` is written meanwhile."""
    return final.parent / PARTIAL / final.name


def remove_tree(path: Path, created: list[Path] = ()) -> None:
    """Remove ``path`` and then those of ``created`` that are left empty (innermost first)."""
    shutil.rmtree(path, ignore_errors=True)
    for d in reversed(list(created)):
        if not d.exists():
            continue
        try:
            d.rmdir()
        except OSError:
            break
    drop_if_empty(path.parent)


def drop_if_empty(partial: Path) -> None:
    """Remove a ``.partial`` staging folder once nothing is left in it."""
    if partial.name == PARTIAL:
        try:
            partial.rmdir()
        except OSError:
            pass


def find_resumable(cfg: DictConfig) -> Path:
    """The most recent run of this experiment (same stem) under ``output_dir`` with a last.ckpt.

    Interrupted runs left in ``<output_dir>/.partial`` count too.
    """
    out = Path(cfg.output_dir)
    stem = run_stem(cfg)
    candidates = [
        p
        for base in (out, out / PARTIAL)
        if base.is_dir()
        for p in base.glob(f"{stem}-*")
        if (p / LAST_CKPT).is_file()
    ]
    if not candidates:
        raise RunDirError(f"train.resume=true: no run of {stem} with a last.ckpt under {out}")
    return max(candidates, key=lambda p: (p / LAST_CKPT).stat().st_mtime)


def resumable_epochs(run_dir: Path) -> int | None:
    """Epochs done by the interrupted run in ``run_dir``, if it can be continued exactly: its
    ``last.ckpt`` holds the global random state (:class:`~kangnn.train.callbacks.RandomState`;
    checkpoints written before it existed would continue with other dropout masks)."""
    path = run_dir / LAST_CKPT
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a checkpoint cut short by the interruption
        return None
    if not any(key.startswith("RandomState") for key in ckpt.get("callbacks", {})):
        return None
    return int(ckpt.get("epoch", 0)) + 1


def load_run_config(run_dir: str | Path, overrides: Any = None) -> DictConfig:
    """The config of a run directory, checked against the schema (plus optional overrides)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise RunDirError(f"run directory not found: {run}")
    path = run / CONFIG_FILE
    if not path.is_file():
        raise RunDirError(f"{run} is not a kangnn run directory (no {CONFIG_FILE})")
    try:
        loaded = OmegaConf.load(path)
    except Exception as err:
        raise RunDirError(f"{path}: cannot read: {str(err).splitlines()[0]}") from None
    cfg = _merge(default_config(), loaded, str(path))
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    validate_config(cfg)
    return cfg


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a Lightning checkpoint (our own files: full unpickling is needed for its state)."""
    if not path.is_file():
        raise RunDirError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__})") from None


def check_checkpoint(
    path: Path, module: torch.nn.Module, ckpt: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Check that a checkpoint holds exactly the parameters of ``module``; return it.

    Raises
    ------
    CheckpointError
        Naming the first missing, unexpected or differently shaped tensor.
    """
    ckpt = dict(ckpt) if ckpt is not None else load_checkpoint(path)
    state = ckpt.get("state_dict")
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: not a kangnn checkpoint (no state_dict)")
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    problem = None
    if shape:
        k = shape[0]
        problem = f"{k} has shape {tuple(state[k].shape)}, the model expects {tuple(own[k].shape)}"
    elif missing:
        problem = f"it lacks {missing[0]}" + (
            f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        )
    elif extra:
        problem = f"it has an unexpected {extra[0]}" + (
            f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        )
    if problem:
        raise CheckpointError(
            f"checkpoint {path} is of a different model than the run's config describes: {problem}"
        )
    return ckpt


def read_metrics_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSVLogger ``metrics.csv`` (empty list if absent)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_metrics_csv(path: Path, rows: list[dict[str, str]]) -> None:
    keys = sorted({k for row in rows for k in row})
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def merge_metrics_csv(old: Path, new: Path) -> None:
    """Prepend the rows of ``old`` (logs before a resume) to ``new``, union of columns."""
    _write_metrics_csv(new, read_metrics_csv(old) + read_metrics_csv(new))
    old.unlink()


def set_aside_metrics_csv(run_dir: Path, epochs_done: int) -> None:
    """Before an interrupted run continues from its checkpoint after ``epochs_done`` epochs:
    move its CSV log to :data:`LOG_BEFORE_RESUME`, after what an earlier interruption set aside
    there, keeping only the rows of those epochs (an epoch cut short is trained and logged
    again). :func:`merge_metrics_csv` puts them back in front of the continued run's log."""
    rows = read_metrics_csv(run_dir / LOG_BEFORE_RESUME) + read_metrics_csv(run_dir / LOG_CSV)
    kept = [r for r in rows if not r.get("epoch") or int(float(r["epoch"])) < epochs_done]
    _write_metrics_csv(run_dir / LOG_BEFORE_RESUME, kept)
    (run_dir / LOG_CSV).unlink(missing_ok=True)


def retarget_checkpoint(path: Path, new_dir: Path) -> int:
    """Point the ModelCheckpoint paths saved in checkpoint ``path`` into folder ``new_dir``;
    the number of epochs the checkpoint holds.

    Lightning restores the best score only when the checkpoint folder is unchanged, and a resumed
    run lives in a new (staging) folder: without this the first resumed epoch would count as best.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    for key, state in ckpt.get("callbacks", {}).items():
        if not key.startswith("ModelCheckpoint") or not isinstance(state, dict):
            continue

        def move(p: Any) -> Any:
            if isinstance(p, str) and p:
                return str(new_dir / Path(p).name)
            return p

        state["dirpath"] = str(new_dir)
        for k in ("best_model_path", "kth_best_model_path", "last_model_path"):
            if k in state:
                state[k] = move(state[k])
        if isinstance(state.get("best_k_models"), dict):
            state["best_k_models"] = {move(k): v for k, v in state["best_k_models"].items()}
    torch.save(ckpt, path)
    return int(ckpt.get("epoch", 0)) + 1
