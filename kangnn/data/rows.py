"""Row parsing shared by both sources: labels, split values and SMILES of every CSV row.

Line numbers are physical line numbers of the file as a text editor shows them: the header is
line 1, the first data row line 2.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from rdkit import rdBase
from torch_geometric.data import Data

from kangnn.data.errors import DataError, InvalidSmilesError
from kangnn.data.featurize import mol_from_smiles, mol_to_graph
from kangnn.data.io import CsvTable

__all__ = ["SKIP_HINT", "SPLIT_VALUES", "parse_rows"]

SPLIT_VALUES: dict[str, str] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
SKIP_HINT = "to drop such rows, use skip_invalid=True, i.e. dataset.skip_invalid=true"


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


def parse_rows(
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
                        hint=SKIP_HINT,
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
