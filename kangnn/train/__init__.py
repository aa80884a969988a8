"""Training on PyTorch Lightning, run directories, the KAN-vs-MLP comparison and prediction.

Imports are lazy so that ``import kangnn.train.metrics`` does not pull in Lightning.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CheckpointError",
    "CompareResult",
    "MaskedAUROC",
    "MaskedRegressionMetrics",
    "MoleculeDataModule",
    "MoleculeModule",
    "RunDirError",
    "RunFailedError",
    "RunResult",
    "compare",
    "evaluate",
    "load_run",
    "predict_csv",
    "prepare_data",
    "train",
    "wilcoxon_test",
]

_WHERE = {
    "CheckpointError": "rundir",
    "RunDirError": "rundir",
    "CompareResult": "compare",
    "RunFailedError": "compare",
    "compare": "compare",
    "wilcoxon_test": "compare",
    "MaskedAUROC": "metrics",
    "MaskedRegressionMetrics": "metrics",
    "MoleculeDataModule": "data",
    "prepare_data": "data",
    "MoleculeModule": "module",
    "RunResult": "run",
    "evaluate": "run",
    "load_run": "run",
    "train": "run",
    "predict_csv": "predict",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"kangnn.train.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'kangnn.train' has no attribute {name!r}")
