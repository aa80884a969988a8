""":class:`MoleculeDataset`: featurised molecules with their targets and provenance, in memory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch_geometric.data import Data, InMemoryDataset

from kangnn.data.errors import DataError, InvalidSmilesError
from kangnn.data.featurize import _check_features, feature_dims, mol_from_smiles, mol_to_graph
from kangnn.data.registry import TASKS

__all__ = ["MoleculeDataset"]


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
