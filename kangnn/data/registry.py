"""The MoleculeNet names kangnn knows, the task types, and where the data root is."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch_geometric.datasets import MoleculeNet

from kangnn.data.errors import DataError

__all__ = [
    "KNOWN_DATASETS",
    "TASKS",
    "DatasetInfo",
    "default_data_root",
    "list_datasets",
    "lookup_dataset",
    "resolve_data_root",
]

TASKS: tuple[str, ...] = ("regression", "classification")


@dataclass(frozen=True)
class DatasetInfo:
    """How to read one MoleculeNet dataset (derived from ``MoleculeNet.names``).

    Attributes
    ----------
    name : str
        Lower-case key, e.g. ``"esol"``.
    display_name : str
        PyG's display name, e.g. ``"ESOL"``.
    raw_file : str
        File name under ``<root>/<name>/raw/``.
    url : str
        Download URL (DeepChem's bucket, as in PyG); ``.gz`` files are extracted.
    smiles_index : int
        Column index of the SMILES (may be negative).
    target_index : int or slice
        Column index or slice of the label column(s).
    task : str
        ``"regression"`` or ``"classification"`` (binary, possibly multi-task).
    metric : str
        The metric MoleculeNet recommends: ``"rmse"``, ``"roc_auc"`` or ``"prc_auc"``.
    """

    name: str
    display_name: str
    raw_file: str
    url: str
    smiles_index: int
    target_index: int | slice
    task: str
    metric: str


_REGRESSION = {"esol", "freesolv", "lipo"}
_PRC = {"pcba", "muv"}  # very imbalanced: MoleculeNet reports PRC-AUC


def _known_datasets() -> dict[str, DatasetInfo]:
    out: dict[str, DatasetInfo] = {}
    for key, (display, url_name, csv_name, s_idx, y_idx) in MoleculeNet.names.items():
        task = "regression" if key in _REGRESSION else "classification"
        metric = "rmse" if task == "regression" else ("prc_auc" if key in _PRC else "roc_auc")
        out[key] = DatasetInfo(
            name=key,
            display_name=display,
            raw_file=f"{csv_name}.csv",
            url=MoleculeNet.url.format(url_name),
            smiles_index=s_idx,
            target_index=y_idx,
            task=task,
            metric=metric,
        )
    return out


KNOWN_DATASETS: dict[str, DatasetInfo] = _known_datasets()
_ALIASES: dict[str, str] = {
    **{info.display_name.lower(): key for key, info in KNOWN_DATASETS.items()},
    **{key: key for key in KNOWN_DATASETS},
}


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset` (sorted), e.g. ``["bace", "bbbp", ...]``."""
    return sorted(KNOWN_DATASETS)


def lookup_dataset(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a name (case-insensitive; PyG display names work too)."""
    key = _ALIASES.get(name.strip().lower())
    if key is None:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(list_datasets())}")
    return KNOWN_DATASETS[key]


def default_data_root() -> Path:
    """The data root used when neither an argument nor ``KANGNN_DATA`` is given.

    Returns the top-level ``data/`` folder of a source checkout (the folder beside the
    ``kangnn`` package, recognised by a ``pyproject.toml`` next to it) when it exists and is
    writable; otherwise ``$XDG_CACHE_HOME/kangnn/data`` (``~/.cache/kangnn/data``), which is
    what an installed package uses.
    """
    top = Path(__file__).resolve().parents[2]
    candidate = top / "data"
    if (top / "pyproject.toml").is_file() and candidate.is_dir() and os.access(candidate, os.W_OK):
        return candidate
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "kangnn" / "data"


def resolve_data_root(root: str | Path | None = None) -> Path:
    """Pick the data root: explicit argument > ``KANGNN_DATA`` > :func:`default_data_root`.

    Parameters
    ----------
    root : str or Path, optional
        Explicit root (e.g. from ``--data-root``); empty string counts as not given.

    Returns
    -------
    Path
        The root folder (not created here; ``~`` is expanded).
    """
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get("KANGNN_DATA", "")
    if env:
        return Path(env).expanduser()
    return default_data_root()
