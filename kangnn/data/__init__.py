"""Molecular data for kangnn: RDKit featurisation, MoleculeNet and CSV datasets, splits, scaling.

See ``data/README.md`` for the data root and :mod:`kangnn.data.featurize` for the features.
"""

from kangnn.data.dataset import MoleculeDataset
from kangnn.data.errors import DataError, InvalidSmilesError
from kangnn.data.featurize import (
    ATOM_FEATURE_DIMS,
    ATOM_FEATURE_NAMES,
    BOND_FEATURE_DIMS,
    BOND_FEATURE_NAMES,
    FEATURE_SETS,
    feature_dims,
    feature_names,
    mol_from_smiles,
    mol_to_graph,
    smiles_to_graph,
)
from kangnn.data.io import write_invalid_rows
from kangnn.data.loader import load_dataset
from kangnn.data.registry import (
    KNOWN_DATASETS,
    TASKS,
    DatasetInfo,
    default_data_root,
    list_datasets,
    resolve_data_root,
)
from kangnn.data.scaling import TargetScaler
from kangnn.data.splits import (
    SPLIT_METHODS,
    load_split,
    make_split,
    save_split,
    scaffold,
)

__all__ = [
    "ATOM_FEATURE_DIMS",
    "ATOM_FEATURE_NAMES",
    "BOND_FEATURE_DIMS",
    "BOND_FEATURE_NAMES",
    "FEATURE_SETS",
    "KNOWN_DATASETS",
    "SPLIT_METHODS",
    "TASKS",
    "DataError",
    "DatasetInfo",
    "InvalidSmilesError",
    "MoleculeDataset",
    "TargetScaler",
    "default_data_root",
    "feature_dims",
    "feature_names",
    "list_datasets",
    "load_dataset",
    "load_split",
    "make_split",
    "mol_from_smiles",
    "mol_to_graph",
    "resolve_data_root",
    "save_split",
    "scaffold",
    "smiles_to_graph",
    "write_invalid_rows",
]
