"""Loading a user CSV: a SMILES column and named target columns (chemprop's convention).

An empty target cell is a missing label (NaN). User files are never cached and nothing is ever
written beside them.
"""

from __future__ import annotations

from pathlib import Path

from kangnn.data.dataset import MoleculeDataset
from kangnn.data.errors import DataError
from kangnn.data.io import read_csv
from kangnn.data.registry import TASKS
from kangnn.data.rows import parse_rows

__all__ = ["load_csv"]


def load_csv(
    path: Path,
    *,
    smiles_column: str,
    target_columns: list[str] | None,
    task: str | None,
    skip_invalid: bool,
    features: str,
    split_column: str | None,
) -> MoleculeDataset:
    """A user CSV as a dataset; see :func:`kangnn.data.load_dataset` for the rules."""
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
        parsed = parse_rows(
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
