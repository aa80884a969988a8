"""Loading a MoleculeNet set by name: raw file (downloaded if missing), cache, dataset."""

from __future__ import annotations

from pathlib import Path

from torch_geometric.data import Data, InMemoryDataset

from kangnn.data.cache import cache_key, compact, expand, load_cache, save_cache
from kangnn.data.dataset import MoleculeDataset
from kangnn.data.download import download_raw
from kangnn.data.errors import DataError, InvalidSmilesError
from kangnn.data.io import read_csv
from kangnn.data.registry import DatasetInfo, lookup_dataset
from kangnn.data.rows import SKIP_HINT, parse_rows

__all__ = ["load_moleculenet"]


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


def load_moleculenet(
    name: str,
    *,
    root: Path,
    target_columns: list[str] | None,
    task: str | None,
    skip_invalid: bool,
    features: str,
    cache: bool,
) -> MoleculeDataset:
    """A MoleculeNet set from ``root``, through the cache; see :func:`kangnn.data.load_dataset`."""
    info = lookup_dataset(name)
    if task is not None and task != info.task:
        raise DataError(f"dataset {info.name} is a {info.task} task, not {task!r}")
    raw_path = root / info.name / "raw" / info.raw_file
    if not raw_path.is_file():
        download_raw(info, raw_path)
    cache_path = root / info.name / "processed" / f"kangnn_{features}.pt"
    key = cache_key(raw_path, features) if cache else None
    payload = load_cache(cache_path, key) if cache else None

    if payload is None:
        with read_csv(raw_path) as table:
            width = len(table.header)
            cols = list(range(width))
            s_idx = cols[info.smiles_index]
            t = info.target_index
            t_idx = cols[t] if isinstance(t, slice) else [cols[t]]
            if target_columns:  # fail before featurising thousands of molecules
                _select_targets([table.header[i] for i in t_idx], target_columns, raw_path, info)
            parsed = parse_rows(
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
            save_cache(cache_path, {**payload, "data": compact(data)})
    elif payload["invalid_rows"] and not skip_invalid:
        first = payload["invalid_rows"][0]
        raise InvalidSmilesError(
            first["smiles"],
            first["reason"],
            path=raw_path,
            line=first["line"],
            column=payload["smiles_column"],
            hint=SKIP_HINT,
        )

    data = payload["data"] if isinstance(payload["data"], Data) else expand(payload["data"])
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
