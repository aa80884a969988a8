"""Molecular datasets: MoleculeNet sets by name and user CSV files, featurised with RDKit.

Two sources, one result type (:class:`MoleculeDataset`):

- ``load_dataset("esol")``: a MoleculeNet set, read from ``<root>/<name>/raw/<file>`` in the
  file layout of :class:`torch_geometric.datasets.MoleculeNet` (same file names, SMILES and
  label columns, same download URL). The raw file is downloaded only when it is missing.
  Featurised graphs are cached in ``<root>/<name>/processed/kangnn_<features>.pt``, keyed by
  the raw file's SHA-256, the feature set, the RDKit version and a format version.
- ``load_dataset(path="my.csv", target_columns=[...], task=...)``: any CSV with a SMILES column
  and named target columns (chemprop's convention). An empty target cell is a missing label
  (NaN). User files are never cached and nothing is ever written beside them.

Line numbers in messages and in ``source_rows`` / ``invalid_rows`` are physical line numbers
of the file as a text editor shows them: the header is line 1, the first data row line 2.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rdkit
import torch
from rdkit import rdBase
from torch_geometric.data import Data, InMemoryDataset, download_url, extract_gz
from torch_geometric.datasets import MoleculeNet

from kangnn.data.errors import DataError, InvalidSmilesError
from kangnn.data.featurize import _check_features, feature_dims, mol_from_smiles, mol_to_graph
from kangnn.data.io import CsvTable, atomic_write, make_dirs, read_csv, write_invalid_rows

__all__ = [
    "KNOWN_DATASETS",
    "TASKS",
    "DatasetInfo",
    "MoleculeDataset",
    "default_data_root",
    "list_datasets",
    "load_dataset",
    "resolve_data_root",
]

log = logging.getLogger(__name__)

TASKS: tuple[str, ...] = ("regression", "classification")
SPLIT_VALUES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
# Bump when the featurisation or the cache layout changes, so old caches are rebuilt.
CACHE_VERSION = 1
_SKIP_HINT = "to drop such rows, use skip_invalid=True, i.e. dataset.skip_invalid=true"


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


class MoleculeDataset(InMemoryDataset):
    """Featurised molecules with targets, in memory.

    Items are :class:`~torch_geometric.data.Data` with ``x`` (long ``[atoms, n_atom_feats]``),
    ``edge_index``, ``edge_attr`` (long), ``y`` (float ``[1, num_tasks]``, NaN = missing label)
    and ``smiles``. Indexing with a list, slice, or index/bool tensor returns a subset of the
    same class that :class:`torch_geometric.loader.DataLoader` accepts; the per-molecule
    attributes (``smiles``, ``source_rows``, ``split_values``, ``y``) follow the subset.

    Use :func:`load_dataset` or :meth:`from_smiles` rather than the constructor.

    Parameters
    ----------
    data_list : list of Data
        Featurised graphs, each with ``y`` and ``smiles``.
    name : str
        Dataset name (MoleculeNet key or the CSV file's stem).
    task : {"regression", "classification"}
        Task type.
    target_names : list of str
        One name per target column.
    features : str
        Feature set used (``"ogb"`` or ``"rich"``).
    source_rows : list of int, optional
        Line number of each molecule in the source file.
    invalid_rows : list of dict, optional
        Rows dropped for an invalid SMILES: ``{"line", "smiles", "reason"}``.
    source : str, optional
        Path of the source file.
    split_column : str, optional
        Name of the split column read from the source, if any.
    split_values : list of str, optional
        ``"train"``/``"val"``/``"test"`` per molecule, from ``split_column``.
    """

    def __init__(
        self,
        data_list: Sequence[Data],
        *,
        name: str,
        task: str,
        target_names: list[str],
        features: str = "ogb",
        source_rows: list[int] | None = None,
        invalid_rows: list[dict[str, Any]] | None = None,
        source: str | None = None,
        split_column: str | None = None,
        split_values: list[str] | None = None,
    ) -> None:
        super().__init__(None)
        if len(data_list) == 0:
            raise DataError(f"{source or name}: no molecules to build a dataset from")
        data, slices = self.collate(list(data_list))
        self._setup(
            data,
            slices,
            name=name,
            task=task,
            target_names=target_names,
            features=features,
            smiles=[str(d.smiles) for d in data_list],
            source_rows=source_rows,
            invalid_rows=invalid_rows,
            source=source,
            split_column=split_column,
            split_values=split_values,
        )

    def _setup(
        self,
        data: Data,
        slices: dict[str, torch.Tensor],
        *,
        name: str,
        task: str,
        target_names: list[str],
        features: str,
        smiles: list[str],
        source_rows: list[int] | None,
        invalid_rows: list[dict[str, Any]] | None,
        source: str | None,
        split_column: str | None,
        split_values: list[str] | None,
    ) -> None:
        if task not in TASKS:
            raise DataError(f"unknown task {task!r}; valid: {', '.join(TASKS)}")
        n = len(smiles)
        self._data, self.slices = data, slices
        self.name = name
        self.task = task
        self.target_names = list(target_names)
        self.features = features
        self.source = source
        self.invalid_rows = list(invalid_rows or [])
        self.split_column = split_column
        self._all_smiles = list(smiles)
        self._all_source_rows = list(source_rows) if source_rows is not None else list(range(n))
        self._all_split_values = list(split_values) if split_values is not None else None
        self.atom_feature_dims, self.bond_feature_dims = feature_dims(features)

    @classmethod
    def _from_storage(cls, data: Data, slices: dict[str, torch.Tensor], **meta: Any) -> Any:
        obj = cls.__new__(cls)
        InMemoryDataset.__init__(obj, None)
        obj._setup(data, slices, **meta)
        return obj

    @classmethod
    def from_smiles(
        cls,
        smiles: Sequence[str],
        y: Sequence[Sequence[float]] | torch.Tensor | None = None,
        *,
        task: str = "regression",
        target_names: list[str] | None = None,
        features: str = "ogb",
        name: str = "smiles",
    ) -> MoleculeDataset:
        """Build a dataset from SMILES strings (e.g. molecules to predict).

        Parameters
        ----------
        smiles : sequence of str
            Molecules.
        y : array-like ``[N, T]``, optional
            Targets; NaN for missing. Without it ``y`` is all NaN with ``len(target_names)``
            (default 1) columns.
        task : {"regression", "classification"}
            Task type.
        target_names : list of str, optional
            Target names; default ``["target_0", ...]``.
        features : {"ogb", "rich"}
            Feature set.
        name : str
            Dataset name.

        Raises
        ------
        InvalidSmilesError
            Naming the (0-based) item of an invalid SMILES.
        """
        _check_features(features)
        smiles = list(smiles)
        if y is None:
            t = len(target_names) if target_names else 1
            y_t = torch.full((len(smiles), t), float("nan"))
        else:
            y_t = torch.as_tensor(y, dtype=torch.float).reshape(len(smiles), -1)
        names = list(target_names) if target_names else [f"target_{i}" for i in range(y_t.size(1))]
        if len(names) != y_t.size(1):
            raise DataError(f"{len(names)} target names for {y_t.size(1)} target columns")
        graphs = []
        for i, s in enumerate(smiles):
            try:
                g = mol_to_graph(mol_from_smiles(s), features)
            except InvalidSmilesError as err:
                raise InvalidSmilesError(s, f"{err.reason} (item {i})") from None
            g.y = y_t[i : i + 1].clone()
            g.smiles = s.strip()
            graphs.append(g)
        return cls(graphs, name=name, task=task, target_names=names, features=features)

    # Per-molecule attributes follow ``self._indices`` so that subsets stay consistent.
    def _take(self, values: list[Any]) -> list[Any]:
        if self._indices is None:
            return list(values)
        return [values[i] for i in self.indices()]

    @property
    def smiles(self) -> list[str]:
        """SMILES of each molecule (as read, stripped)."""
        return self._take(self._all_smiles)

    @property
    def source_rows(self) -> list[int]:
        """Line number of each molecule in the source file (header = line 1)."""
        return self._take(self._all_source_rows)

    @property
    def split_values(self) -> list[str] | None:
        """``"train"``/``"val"``/``"test"`` per molecule from the split column, or None."""
        if self._all_split_values is None:
            return None
        return self._take(self._all_split_values)

    @property
    def y(self) -> torch.Tensor:
        """Targets ``[len(self), num_tasks]`` (float, NaN = missing)."""
        y = self._data.y
        if self._indices is None:
            return y
        return y[torch.as_tensor(list(self.indices()), dtype=torch.long)]

    def copy(self, idx: Any = None) -> MoleculeDataset:
        """Deep copy (of the subset ``idx``), re-collated so that it no longer has indices."""
        sub = self if idx is None else self.index_select(idx)
        out = InMemoryDataset.copy(sub)
        out._all_smiles = sub.smiles
        out._all_source_rows = sub.source_rows
        out._all_split_values = sub.split_values
        return out

    @property
    def num_tasks(self) -> int:
        """Number of target columns."""
        return len(self.target_names)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.name!r}, {len(self)} molecules, {self.task}, "
            f"{self.num_tasks} task{'s' if self.num_tasks != 1 else ''})"
        )


# ---------------------------------------------------------------------------------------------
# Row parsing shared by both sources


def _parse_label(value: str, *, path: Path, line: int, column: str, task: str) -> float:
    text = value.strip()
    if text == "":
        return math.nan
    try:
        v = float(text)
    except ValueError:
        raise DataError(
            f"{path} line {line}: non-numeric target {value!r} in column {column!r}"
        ) from None
    if math.isnan(v):
        return math.nan
    if math.isinf(v):
        raise DataError(f"{path} line {line}: infinite target {value!r} in column {column!r}")
    if task == "classification" and v not in (0.0, 1.0):
        raise DataError(
            f"{path} line {line}: classification target {value!r} in column {column!r} "
            "is not 0 or 1 (leave the cell empty for a missing label)"
        )
    return v


def _parse_rows(
    table: CsvTable,
    *,
    smiles_index: int,
    target_indices: list[int],
    task: str,
    skip_invalid: bool,
    features: str,
    split_index: int | None = None,
) -> dict[str, Any]:
    """Featurise every data row of ``table``; see :func:`load_dataset` for the rules."""
    header, path = table.header, table.path
    smiles_col = header[smiles_index]
    target_cols = [header[i] for i in target_indices]
    graphs: list[Data] = []
    source_rows: list[int] = []
    invalid: list[dict[str, Any]] = []
    split_values: list[str] = []
    n_rows = 0
    # RDKit warnings (e.g. "not removing hydrogen atom without neighbors") would flood the
    # terminal on large sets; errors are still captured per molecule by mol_from_smiles.
    with rdBase.BlockLogs():
        for line, fields in table.rows():
            n_rows += 1
            labels = [
                _parse_label(fields[i], path=path, line=line, column=c, task=task)
                for i, c in zip(target_indices, target_cols, strict=True)
            ]
            split = None
            if split_index is not None:
                raw = fields[split_index].strip()
                split = SPLIT_VALUES.get(raw.lower())
                if split is None:
                    raise DataError(
                        f"{path} line {line}: split value {raw!r} in column "
                        f"{header[split_index]!r} is not one of train, val (valid, "
                        "validation) or test"
                    )
            smiles = fields[smiles_index].strip()
            try:
                graph = mol_to_graph(mol_from_smiles(smiles), features)
            except InvalidSmilesError as err:
                if not skip_invalid:
                    raise InvalidSmilesError(
                        smiles,
                        err.reason,
                        path=path,
                        line=line,
                        column=smiles_col,
                        hint=_SKIP_HINT,
                    ) from None
                invalid.append({"line": line, "smiles": smiles, "reason": err.reason})
                continue
            graph.y = torch.tensor([labels], dtype=torch.float)
            graph.smiles = smiles
            graphs.append(graph)
            source_rows.append(line)
            if split is not None:
                split_values.append(split)
    if n_rows == 0:
        raise DataError(f"{path}: the file has a header but no data rows")
    if not graphs:
        first = invalid[0]
        raise DataError(
            f"{path}: no valid molecules: all {n_rows} rows have an invalid SMILES (first: line "
            f"{first['line']} {first['smiles']!r}: {first['reason']})"
        )
    return {
        "graphs": graphs,
        "target_names": target_cols,
        "source_rows": source_rows,
        "invalid_rows": invalid,
        "split_values": split_values if split_index is not None else None,
    }


# ---------------------------------------------------------------------------------------------
# MoleculeNet


def _lookup(name: str) -> DatasetInfo:
    key = _ALIASES.get(name.strip().lower())
    if key is None:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(list_datasets())}")
    return KNOWN_DATASETS[key]


def _download(info: DatasetInfo, raw_path: Path) -> None:
    """Fetch the raw file into ``raw_path`` atomically; clean up everything on failure."""
    created: list[Path] = []
    tmp: str | None = None
    try:
        created = make_dirs(raw_path.parent)
        tmp = tempfile.mkdtemp(dir=raw_path.parent, prefix=".download-")
        log.info("downloading %s from %s", info.display_name, info.url)
        got = Path(download_url(info.url, tmp, log=False))
        if got.suffix == ".gz":
            extract_gz(str(got), tmp, log=False)
            got = got.with_suffix("")
        if not got.is_file() or got.name != raw_path.name:
            raise OSError(f"unexpected download result {got.name!r}")
        os.replace(got, raw_path)
        created = []  # success: keep the folders
    except Exception as err:
        raise DataError(
            f"{raw_path}: raw file for {info.display_name} is missing and downloading "
            f"{info.url} failed ({type(err).__name__}: {err}); offline? copy the file there "
            "or set --data-root / KANGNN_DATA to a folder that has it"
        ) from err
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(created):
            shutil.rmtree(d, ignore_errors=True)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cache_key(raw_path: Path, features: str) -> dict[str, Any]:
    return {
        "version": CACHE_VERSION,
        "raw_sha256": _file_sha256(raw_path),
        "features": features,
        "rdkit": rdkit.__version__,
    }


def _load_cache(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt or from an incompatible torch: rebuild
        log.warning("ignoring unreadable cache %s (%s)", path, err)
        return None
    if not isinstance(payload, dict) or payload.get("key") != key:
        return None
    return payload


def _compact(data: Data) -> dict[str, Any]:
    """Cache form of collated graphs: small integer dtypes (HIV: ~35 MB instead of ~170 MB)."""
    out = data.to_dict()
    # Every categorical index is < 256 (see feature_dims) and edge_index holds per-molecule
    # atom indices (InMemoryDataset.collate does not increment them).
    out["x"] = data.x.to(torch.uint8)
    out["edge_attr"] = data.edge_attr.to(torch.uint8)
    out["edge_index"] = data.edge_index.to(torch.int32)
    return out


def _expand(stored: dict[str, Any]) -> Data:
    stored = dict(stored)
    for k in ("x", "edge_attr", "edge_index"):
        stored[k] = stored[k].to(torch.long)
    return Data.from_dict(stored)


def _save_cache(path: Path, payload: dict[str, Any]) -> None:
    try:
        atomic_write(path, lambda f: torch.save(payload, f))
    except OSError as err:  # a read-only data root still works, just uncached
        log.warning("could not write cache %s (%s)", path, err)


def _select_targets(
    names: list[str], wanted: list[str], raw_path: Path, info: DatasetInfo
) -> list[int]:
    for c in wanted:
        if c not in names:
            raise DataError(
                f"{raw_path}: unknown target column {c!r} for {info.name} "
                f"(targets: {', '.join(repr(n) for n in names)})"
            )
    return [names.index(c) for c in wanted]


def _load_moleculenet(
    name: str,
    *,
    root: Path,
    target_columns: list[str] | None,
    task: str | None,
    skip_invalid: bool,
    features: str,
    cache: bool,
) -> MoleculeDataset:
    info = _lookup(name)
    if task is not None and task != info.task:
        raise DataError(f"dataset {info.name} is a {info.task} task, not {task!r}")
    raw_path = root / info.name / "raw" / info.raw_file
    if not raw_path.is_file():
        _download(info, raw_path)
    cache_path = root / info.name / "processed" / f"kangnn_{features}.pt"
    key = _cache_key(raw_path, features) if cache else None
    payload = _load_cache(cache_path, key) if cache else None

    if payload is None:
        with read_csv(raw_path) as table:
            width = len(table.header)
            cols = list(range(width))
            s_idx = cols[info.smiles_index]
            t = info.target_index
            t_idx = cols[t] if isinstance(t, slice) else [cols[t]]
            if target_columns:  # fail before featurising thousands of molecules
                _select_targets([table.header[i] for i in t_idx], target_columns, raw_path, info)
            parsed = _parse_rows(
                table,
                smiles_index=s_idx,
                target_indices=t_idx,
                task=info.task,
                skip_invalid=skip_invalid,
                features=features,
            )
        graphs = parsed["graphs"]
        data, slices = InMemoryDataset.collate(graphs)
        payload = {
            "key": key,
            "data": data,
            "slices": slices,
            "smiles": [g.smiles for g in graphs],
            "target_names": parsed["target_names"],
            "smiles_column": table.header[s_idx],
            "source_rows": parsed["source_rows"],
            "invalid_rows": parsed["invalid_rows"],
        }
        if cache:
            _save_cache(cache_path, {**payload, "data": _compact(data)})
    elif payload["invalid_rows"] and not skip_invalid:
        first = payload["invalid_rows"][0]
        raise InvalidSmilesError(
            first["smiles"],
            first["reason"],
            path=raw_path,
            line=first["line"],
            column=payload["smiles_column"],
            hint=_SKIP_HINT,
        )

    data = payload["data"] if isinstance(payload["data"], Data) else _expand(payload["data"])
    names = list(payload["target_names"])
    if target_columns:
        sel = _select_targets(names, target_columns, raw_path, info)
        data.y = data.y[:, sel]
        names = list(target_columns)
    return MoleculeDataset._from_storage(
        data,
        payload["slices"],
        name=info.name,
        task=info.task,
        target_names=names,
        features=features,
        smiles=payload["smiles"],
        source_rows=payload["source_rows"],
        invalid_rows=payload["invalid_rows"],
        source=str(raw_path),
        split_column=None,
        split_values=None,
    )


# ---------------------------------------------------------------------------------------------
# User CSV


def _load_csv(
    path: Path,
    *,
    smiles_column: str,
    target_columns: list[str] | None,
    task: str | None,
    skip_invalid: bool,
    features: str,
    split_column: str | None,
) -> MoleculeDataset:
    if not target_columns:
        raise DataError(f"{path}: no target columns given (dataset.target_columns)")
    if task is None:
        raise DataError(f"{path}: no task type given (dataset.task: {' or '.join(TASKS)})")
    if task not in TASKS:
        raise DataError(f"{path}: unknown task {task!r} (dataset.task: {' or '.join(TASKS)})")
    if len(set(target_columns)) != len(target_columns):
        raise DataError(f"{path}: a target column is listed twice: {target_columns}")
    with read_csv(path) as table:
        s_idx = table.column_index(smiles_column, "SMILES")
        t_idx = [table.column_index(c, "target") for c in target_columns]
        if s_idx in t_idx:
            raise DataError(f"{path}: column {smiles_column!r} is both the SMILES and a target")
        split_idx = None
        if split_column is not None:
            split_idx = table.column_index(split_column, "split")
            if split_idx == s_idx or split_idx in t_idx:
                raise DataError(
                    f"{path}: split column {split_column!r} is also the SMILES or a target column"
                )
        parsed = _parse_rows(
            table,
            smiles_index=s_idx,
            target_indices=t_idx,
            task=task,
            skip_invalid=skip_invalid,
            features=features,
            split_index=split_idx,
        )
    return MoleculeDataset(
        parsed["graphs"],
        name=path.stem,
        task=task,
        target_names=parsed["target_names"],
        features=features,
        source_rows=parsed["source_rows"],
        invalid_rows=parsed["invalid_rows"],
        source=str(path),
        split_column=table.header[split_idx] if split_idx is not None else None,
        split_values=parsed["split_values"],
    )


def load_dataset(
    name: str | None = None,
    *,
    root: str | Path | None = None,
    path: str | Path | None = None,
    smiles_column: str | None = None,
    target_columns: list[str] | str | None = None,
    task: str | None = None,
    skip_invalid: bool = False,
    invalid_rows_path: str | Path | None = None,
    features: str = "ogb",
    split_column: str | None = None,
    cache: bool = True,
) -> MoleculeDataset:
    """Load a MoleculeNet dataset by name, or a user CSV, as a :class:`MoleculeDataset`.

    Parameters
    ----------
    name : str, optional
        MoleculeNet name (:func:`list_datasets`; case-insensitive, PyG display names such as
        ``"Lipophilicity"`` work too). Read from ``<root>/<name>/raw/<file>``; downloaded with
        PyG's URL only when that file is missing. Give ``name`` or ``path``, not both.
    root : str or Path, optional
        Data root (see :func:`resolve_data_root`); used for named datasets only.
    path : str or Path, optional
        A user CSV (comma-separated, header row, UTF-8).
    smiles_column : str, optional
        SMILES column of the CSV (default ``"smiles"``). Not valid with ``name``.
    target_columns : list of str, optional
        Target columns of the CSV (required with ``path``). With ``name``, an optional subset
        of the dataset's targets (e.g. some of ToxCast's).
    task : {"regression", "classification"}, optional
        Required with ``path``. With ``name`` it must match the dataset's own task if given.
        Classification targets must be 0 or 1.
    skip_invalid : bool
        False (default): the first invalid SMILES raises :class:`InvalidSmilesError` naming
        file, line, SMILES and RDKit's reason. True: such rows are dropped and recorded in
        ``dataset.invalid_rows`` (``{"line", "smiles", "reason"}``).
    invalid_rows_path : str or Path, optional
        With ``skip_invalid``, write the dropped rows there as CSV (``line,smiles,reason``;
        header only if none), atomically.
    features : {"ogb", "rich"}
        Atom/bond feature set (see :mod:`kangnn.data.featurize`).
    split_column : str, optional
        CSV column holding ``train``/``val``/``test`` (also ``valid``, ``validation``) per row,
        for ``make_split(dataset, "column")``. CSV only.
    cache : bool
        Read/write the processed cache of a named dataset (CSV files are never cached).

    Returns
    -------
    MoleculeDataset

    Raises
    ------
    DataError
        Unknown dataset name (the message lists the valid ones), missing file, raw file
        missing and download failed, empty or header-only file, missing SMILES, target or
        split column, non-numeric target, invalid split value, invalid SMILES
        (:class:`InvalidSmilesError`), bad option combination. On error nothing is written.
    """
    _check_features(features)
    if isinstance(target_columns, str):
        target_columns = [target_columns]
    if target_columns is not None:
        target_columns = [str(c) for c in target_columns]
    if name is not None and path is not None:
        raise DataError("give either a dataset name or a CSV path (dataset.path), not both")
    if name is None and path is None:
        raise DataError(
            f"no dataset given: a name ({', '.join(list_datasets())}) or a CSV path (dataset.path)"
        )
    if name is not None:
        if smiles_column is not None or split_column is not None:
            raise DataError(
                f"dataset {name!r}: smiles_column and split_column apply to CSV files "
                "(dataset.path) only"
            )
        dataset = _load_moleculenet(
            name,
            root=resolve_data_root(root),
            target_columns=target_columns,
            task=task,
            skip_invalid=skip_invalid,
            features=features,
            cache=cache,
        )
    else:
        dataset = _load_csv(
            Path(path).expanduser(),
            smiles_column=smiles_column or "smiles",
            target_columns=target_columns,
            task=task,
            skip_invalid=skip_invalid,
            features=features,
            split_column=split_column,
        )
    if skip_invalid and invalid_rows_path is not None:
        write_invalid_rows(dataset.invalid_rows, invalid_rows_path)
    if dataset.invalid_rows:
        where = f" (listed in {invalid_rows_path})" if invalid_rows_path is not None else ""
        log.warning(
            "%s: skipped %d row(s) with an invalid SMILES%s",
            dataset.source,
            len(dataset.invalid_rows),
            where,
        )
    return dataset
