"""Whole-molecule descriptors, an optional extra input of the model head.

``dataset.descriptors: rdkit2d`` adds every descriptor of RDKit's ``Descriptors.descList``
(logP, molar refractivity, TPSA, ring and atom counts, VSA bins, …; 217 in RDKit 2025) to each
graph as ``data.descriptors`` (float ``[1, D]``, batched to ``[num_graphs, D]``), as chemprop's
``--molecule-featurizers rdkit2d`` does. Values that RDKit cannot compute or that do not fit
a float32 are NaN; the model's :class:`~kangnn.models.QuantileNormal`, fitted on the training
molecules, maps them to 0 and the rest to standard-normal scores.

Computing them costs about 20 ms per molecule, so they are cached under
``$KANGNN_CACHE`` (default ``~/.cache/kangnn``)``/descriptors/``, keyed by the SMILES, the
descriptor set and the RDKit version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import rdkit
import torch
from rdkit import Chem, RDLogger
from rdkit.Chem import Descriptors

from kangnn.data.cache import load_cache, save_cache
from kangnn.files import cache_root

__all__ = ["DESCRIPTOR_SETS", "add_descriptors", "compute_descriptors", "descriptor_names"]

#: Descriptor sets by name.
DESCRIPTOR_SETS = ("rdkit2d",)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check(kind: str) -> None:
    if kind not in DESCRIPTOR_SETS:
        raise ValueError(f"unknown descriptor set {kind!r}; valid: {', '.join(DESCRIPTOR_SETS)}")


def descriptor_names(kind: str = "rdkit2d") -> list[str]:
    """The names of the descriptors of ``kind``, in column order."""
    _check(kind)
    return [name for name, _ in Descriptors.descList]


def _row(mol: Chem.Mol | None) -> list[float]:
    out = []
    for _, fn in Descriptors.descList:
        try:
            v = float(fn(mol)) if mol is not None else float("nan")
        except Exception:  # RDKit raises on some exotic molecules; the value is missing
            v = float("nan")
        out.append(v if np.isfinite(v) and abs(v) <= _FLOAT32_MAX else float("nan"))
    return out


def compute_descriptors(smiles: Sequence[str], kind: str = "rdkit2d") -> torch.Tensor:
    """Descriptors of each SMILES, float32 ``[len(smiles), D]``; missing values are NaN.

    A SMILES that RDKit cannot parse gets a row of NaN (the datasets have validated them).
    """
    _check(kind)
    RDLogger.DisableLog("rdApp.*")
    try:
        rows = [_row(Chem.MolFromSmiles(s)) for s in smiles]
    finally:
        RDLogger.EnableLog("rdApp.*")
    d = len(Descriptors.descList)
    return torch.tensor(np.asarray(rows, dtype=np.float64).reshape(-1, d), dtype=torch.float32)


def cached_descriptors(smiles: Sequence[str], kind: str = "rdkit2d") -> torch.Tensor:
    """:func:`compute_descriptors` through the on-disk cache (keyed by the SMILES, the set, its
    names and the RDKit version; an unreadable cache is rebuilt, an unwritable one skipped)."""
    _check(kind)
    h = hashlib.sha256()
    for s in smiles:
        h.update(s.encode())
        h.update(b"\n")
    digest = h.hexdigest()
    key = {
        "kind": kind,
        "rdkit": rdkit.__version__,
        "names": descriptor_names(kind),
        "smiles_sha256": digest,
    }
    path = cache_root() / "descriptors" / f"{kind}-{digest[:32]}.pt"
    payload = load_cache(path, key)
    if payload is not None:
        return payload["descriptors"]
    x = compute_descriptors(smiles, kind)
    save_cache(path, {"key": key, "descriptors": x})
    return x


def add_descriptors(dataset: torch.utils.data.Dataset, kind: str = "rdkit2d") -> None:
    """Attach the descriptors of every molecule of a :class:`~kangnn.data.MoleculeDataset` in
    place, as the per-graph attribute ``descriptors`` (``dataset[i].descriptors``: ``[1, D]``).
    """
    # The storage holds every molecule, also when ``dataset`` is a subset view of it.
    x = cached_descriptors(dataset._all_smiles, kind)
    store = dataset._data
    store.descriptors = x
    if dataset.slices is not None:
        dataset.slices["descriptors"] = torch.arange(x.size(0) + 1)
    dataset._data_list = None  # drop graphs cached before the attribute existed
