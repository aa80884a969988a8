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

import logging
from pathlib import Path

from kangnn.data.dataset import MoleculeDataset
from kangnn.data.errors import DataError
from kangnn.data.featurize import _check_features
from kangnn.data.io import write_invalid_rows
from kangnn.data.moleculenet import load_moleculenet
from kangnn.data.registry import list_datasets, resolve_data_root
from kangnn.data.user_csv import load_csv

__all__ = ["load_dataset"]

log = logging.getLogger(__name__)


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
        dataset = load_moleculenet(
            name,
            root=resolve_data_root(root),
            target_columns=target_columns,
            task=task,
            skip_invalid=skip_invalid,
            features=features,
            cache=cache,
        )
    else:
        dataset = load_csv(
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
