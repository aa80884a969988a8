"""Train/validation/test splits of molecular datasets, and their JSON round trip.

Methods (:func:`make_split`):

``"scaffold"``
    Deterministic Bemis-Murcko scaffold split, the procedure of OGB / DeepChem
    (``ogb.graphproppred`` / ``deepchem.splits.ScaffoldSplitter``): molecules are grouped by
    scaffold SMILES (``includeChirality=True``; acyclic molecules share the empty scaffold
    ``""``), groups are sorted by ``(size, first index)`` in decreasing order -- largest group
    first, ties going to the group whose first molecule comes later, exactly as
    ``sorted(..., reverse=True)`` in the references -- and whole groups fill train up to
    ``sizes[0] * n``, then val up to ``(sizes[0] + sizes[1]) * n``, the rest going to test.
    ``seed`` is ignored. No scaffold is ever in two parts.
``"balanced_scaffold"``
    chemprop's seeded balanced scaffold split: groups larger than half the val or test size
    go first in random order, then the other groups in random order; each group goes to train
    if it fits, else to val if it fits, else to test. Also leak-free.
``"random"``
    Seeded random permutation cut at ``floor(sizes[0] * n)`` and
    ``floor((sizes[0] + sizes[1]) * n)``.
``"column"``
    A split column of the CSV (``load_dataset(..., split_column="split")``) with values
    train/val/test (also valid, validation); ``sizes`` and ``seed`` are ignored.

Every method returns ``{"train": [...], "val": [...], "test": [...]}`` with sorted indices
into the dataset, disjoint and covering every molecule; a part left empty raises
:class:`~kangnn.data.errors.DataError`.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from rdkit import rdBase
from rdkit.Chem.Scaffolds import MurckoScaffold

from kangnn.data.errors import DataError
from kangnn.data.featurize import mol_from_smiles
from kangnn.files import atomic_write_json

__all__ = ["PARTS", "SPLIT_METHODS", "load_split", "make_split", "save_split", "scaffold"]

SPLIT_METHODS: tuple[str, ...] = ("scaffold", "balanced_scaffold", "random", "column")
PARTS: tuple[str, ...] = ("train", "val", "test")


@lru_cache(maxsize=1 << 18)
def _scaffold(smiles: str, include_chirality: bool) -> str:
    mol = mol_from_smiles(smiles)
    return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=include_chirality)


def scaffold(smiles: str, include_chirality: bool = True) -> str:
    """Bemis-Murcko scaffold of a molecule as canonical SMILES.

    Parameters
    ----------
    smiles : str
        The molecule.
    include_chirality : bool
        Keep stereo in the scaffold SMILES (OGB/DeepChem use True).

    Returns
    -------
    str
        Scaffold SMILES; ``""`` for a molecule without rings.

    Raises
    ------
    InvalidSmilesError
        If RDKit rejects ``smiles``.
    """
    return _scaffold(smiles.strip(), include_chirality)


def _smiles_of(dataset: Any) -> list[str]:
    if isinstance(dataset, (list, tuple)) and all(isinstance(s, str) for s in dataset):
        return list(dataset)
    smiles = getattr(dataset, "smiles", None)
    if smiles is None:
        raise TypeError("make_split needs a MoleculeDataset (or a list of SMILES strings)")
    return list(smiles)


def _check_sizes(method: str, sizes: Sequence[float]) -> tuple[float, float, float]:
    try:
        fracs = tuple(float(s) for s in sizes)
    except (TypeError, ValueError):
        raise DataError(f"{method} split: sizes must be three numbers, got {sizes!r}") from None
    if len(fracs) != 3 or any(not math.isfinite(f) or f < 0 for f in fracs):
        raise DataError(
            f"{method} split: sizes must be three non-negative fractions (train, val, test), "
            f"got {list(sizes)}"
        )
    if abs(sum(fracs) - 1.0) > 1e-6:
        raise DataError(f"{method} split: sizes {list(fracs)} must sum to 1, not {sum(fracs):g}")
    return fracs  # type: ignore[return-value]


def _scaffold_groups(smiles: list[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    with rdBase.BlockLogs():
        for i, s in enumerate(smiles):
            groups.setdefault(scaffold(s), []).append(i)
    return groups


def _floor(x: float) -> int:
    # Guard against 0.7 + 0.2 = 0.8999999999999999 style cut-offs.
    return math.floor(x + 1e-9)


def _scaffold_split(smiles: list[str], fracs: tuple[float, float, float]) -> list[list[int]]:
    n = len(smiles)
    groups = sorted(_scaffold_groups(smiles).values(), key=lambda g: (len(g), g[0]), reverse=True)
    train_cut = fracs[0] * n
    val_cut = (fracs[0] + fracs[1]) * n
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for group in groups:
        if len(train) + len(group) > train_cut:
            if len(train) + len(val) + len(group) > val_cut:
                test += group
            else:
                val += group
        else:
            train += group
    return [train, val, test]


def _balanced_scaffold_split(
    smiles: list[str], fracs: tuple[float, float, float], seed: int
) -> list[list[int]]:
    n = len(smiles)
    train_size, val_size, test_size = (f * n for f in fracs)
    big: list[list[int]] = []
    small: list[list[int]] = []
    for group in _scaffold_groups(smiles).values():
        if len(group) > val_size / 2 or len(group) > test_size / 2:
            big.append(group)
        else:
            small.append(group)
    rng = random.Random(seed)
    rng.shuffle(big)
    rng.shuffle(small)
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for group in big + small:
        if len(train) + len(group) <= train_size:
            train += group
        elif len(val) + len(group) <= val_size:
            val += group
        else:
            test += group
    return [train, val, test]


def _random_split(n: int, fracs: tuple[float, float, float], seed: int) -> list[list[int]]:
    perm = np.random.default_rng(seed).permutation(n).tolist()
    a = _floor(fracs[0] * n)
    b = _floor((fracs[0] + fracs[1]) * n)
    return [perm[:a], perm[a:b], perm[b:]]


def _column_split(dataset: Any, column: str | None) -> list[list[int]]:
    values = getattr(dataset, "split_values", None)
    have = getattr(dataset, "split_column", None)
    if values is None:
        raise DataError(
            "column split: the dataset has no split column; load the CSV with "
            "split_column=... (dataset.split_column)"
        )
    if column is not None and column != have:
        raise DataError(
            f"column split: the dataset was loaded with split column {have!r}, not {column!r}"
        )
    parts: dict[str, list[int]] = {p: [] for p in PARTS}
    for i, v in enumerate(values):
        parts[v].append(i)
    return [parts[p] for p in PARTS]


def make_split(
    dataset: Any,
    method: str = "scaffold",
    sizes: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    column: str | None = None,
) -> dict[str, list[int]]:
    """Split a dataset into train, validation and test parts.

    Parameters
    ----------
    dataset : MoleculeDataset or list of str
        The molecules (only their SMILES, and for ``"column"`` the split values, are used).
    method : {"scaffold", "balanced_scaffold", "random", "column"}
        Split method (see the module docstring).
    sizes : sequence of 3 floats
        Train/val/test fractions, non-negative, summing to 1.
    seed : int
        Seed for ``"balanced_scaffold"`` and ``"random"``.
    column : str, optional
        For ``"column"``: the split column's name, checked against the one the dataset was
        loaded with (``load_dataset(..., split_column=...)``).

    Returns
    -------
    dict
        ``{"train": [...], "val": [...], "test": [...]}``, sorted indices into ``dataset``.

    Raises
    ------
    DataError
        Unknown method, bad sizes, no split column, or a part left empty (the message names
        the method and the sizes).
    """
    if method not in SPLIT_METHODS:
        raise DataError(f"unknown split method {method!r}; valid: {', '.join(SPLIT_METHODS)}")
    if method == "column":
        parts = _column_split(dataset, column)
        n = sum(len(p) for p in parts)
        what = f"column split ({getattr(dataset, 'split_column', column)!r})"
    else:
        fracs = _check_sizes(method, sizes)
        smiles = _smiles_of(dataset)
        n = len(smiles)
        if method == "scaffold":
            parts = _scaffold_split(smiles, fracs)
        elif method == "balanced_scaffold":
            parts = _balanced_scaffold_split(smiles, fracs, seed)
        else:
            parts = _random_split(n, fracs, seed)
        what = f"{method} split with sizes {list(fracs)}"
    for name, part in zip(PARTS, parts, strict=True):
        if not part:
            raise DataError(f"{what} of {n} molecules leaves the {name} part empty")
    return {name: sorted(part) for name, part in zip(PARTS, parts, strict=True)}


def save_split(
    split: dict[str, Sequence[int]],
    path: str | Path,
    *,
    n: int | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Save a split as JSON, atomically.

    Parameters
    ----------
    split : dict
        ``{"train", "val", "test"}`` index lists.
    path : str or Path
        Destination ``.json``.
    n : int, optional
        Size of the dataset the indices refer to; :func:`load_split` checks it when given.
    meta : dict, optional
        JSON-serialisable extras (method, seed, dataset name...), stored under ``"meta"``.

    Returns
    -------
    Path
        The destination.
    """
    obj: dict[str, Any] = {p: [int(i) for i in split[p]] for p in PARTS}
    if n is not None:
        obj["n"] = int(n)
    if meta:
        obj["meta"] = meta
    return atomic_write_json(path, obj, indent=1)


def load_split(path: str | Path, n: int | None = None) -> dict[str, list[int]]:
    """Load and validate a split saved by :func:`save_split` (or written by hand).

    Parameters
    ----------
    path : str or Path
        JSON file with ``"train"``, ``"val"`` and ``"test"`` lists of integer indices.
    n : int, optional
        Dataset size: indices must lie in ``[0, n)`` and a stored ``"n"`` must match.

    Returns
    -------
    dict
        ``{"train": [...], "val": [...], "test": [...]}``.

    Raises
    ------
    DataError
        Naming the file: missing, not JSON, missing part, non-integer, out-of-range or
        repeated index, an index in two parts, an empty part, or a size mismatch.
    """
    p = Path(path)
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{p}: split file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{p}: cannot read split file: {err}") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{p} line {err.lineno}: not valid JSON: {err.msg}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{p}: a split file must hold a JSON object with train, val and test")
    if n is not None and "n" in obj and obj["n"] != n:
        raise DataError(f"{p}: split was made for {obj['n']} molecules, the dataset has {n}")
    out: dict[str, list[int]] = {}
    owner: dict[int, str] = {}
    for part in PARTS:
        if part not in obj:
            raise DataError(f"{p}: split has no {part!r} list")
        items = obj[part]
        if not isinstance(items, list):
            raise DataError(f"{p}: {part!r} must be a list of indices")
        if not items:
            raise DataError(f"{p}: the {part} part is empty")
        for i in items:
            if isinstance(i, bool) or not isinstance(i, int):
                raise DataError(f"{p}: {part!r} holds a non-integer index {i!r}")
            if i < 0 or (n is not None and i >= n):
                raise DataError(
                    f"{p}: {part!r} index {i} is out of range for a dataset of "
                    f"{n if n is not None else 'unknown'} molecules"
                )
            if i in owner:
                where = "twice in" if owner[i] == part else f"in both {owner[i]!r} and"
                raise DataError(f"{p}: index {i} is {where} {part!r}")
            owner[i] = part
        out[part] = list(items)
    return out
