"""RDKit featurisation of molecules into PyG graphs with categorical atom and bond features.

Three feature sets are available, all made only of categorical *indices* (``torch.long``), so
the same embedding encoder (one ``nn.Embedding`` per column, sized by
:func:`feature_dims`) serves all of them:

``"ogb"`` (default): the 9 atom and 3 bond features of OGB / PyG's MoleculeNet, with the same
index as ``ogb.utils.features.atom_to_feature_vector`` / ``bond_to_feature_vector`` for every
value OGB can represent (hybridisation S and UNSPECIFIED, e.g. of ions and H, fall in OGB's
"misc" slot, as in OGB):

====  ======================  ===============================================  ====
col   atom feature            values (index order)                             dim
====  ======================  ===============================================  ====
0     atomic number           1..118, other (incl. dummy atom ``*``)           119
1     chirality tag           unspecified, CW, CCW, CHI_OTHER, other           5
2     total degree (with H)   0..10, other                                     12
3     formal charge           -5..5, other                                     12
4     total number of H       0..8, other                                      10
5     radical electrons       0..4, other                                      6
6     hybridisation           SP, SP2, SP3, SP3D, SP3D2, other (incl. S)       6
7     is aromatic             no, yes, other                                   3
8     is in ring              no, yes, other                                   3
====  ======================  ===============================================  ====

====  ======================  ===============================================  ====
col   bond feature            values (index order)                             dim
====  ======================  ===============================================  ====
0     bond type               single, double, triple, aromatic, other          5
1     stereo                  none, Z, E, cis, trans, any, other               7
2     is conjugated           no, yes, other                                   3
====  ======================  ===============================================  ====

Every column has a trailing "other" slot so any value RDKit produces maps in range (newer RDKit
versions added chirality tags and atropisomer bond stereo that OGB's lists do not know). The
boolean columns carry the slot only to keep that rule uniform; it is never produced.

``"rich"``: the ``"ogb"`` columns followed by extra atom columns (total valence 0..8;
CIP label none/R/S; number of SSSR rings the atom is in 0..3; smallest ring size none/3..8;
heavy-atom degree 0..6) and extra bond columns (is in ring; smallest ring size none/3..8),
each again with an "other" slot.

``"chemprop"``: everything chemprop v2's default featurisers encode
(``MultiHotAtomFeaturizer.v2`` and ``MultiHotBondFeaturizer``), in their column order, with
finer value ranges where chemprop lumps values into its "unknown" bit:

====  ======================  ===============================================  ====
col   atom feature            values (index order)                             dim
====  ======================  ===============================================  ====
0     atomic number           1..118, other (incl. dummy atom ``*``)           119
1     total degree (with H)   0..10, other                                     12
2     formal charge           -5..5, other                                     12
3     chirality tag           unspecified, CW, CCW, CHI_OTHER, other           5
4     total number of H       0..8, other                                      10
5     hybridisation           S, SP, SP2, SP2D, SP3, SP3D, SP3D2, other        8
6     is aromatic             no, yes, other                                   3
7     isotope (mass)          natural, mass number - most common one's         13
                              -5..+5, other
====  ======================  ===============================================  ====

====  ======================  ===============================================  ====
col   bond feature            values (index order)                             dim
====  ======================  ===============================================  ====
0     bond type               single, double, triple, aromatic, other          5
1     is conjugated           no, yes, other                                   3
2     is in ring              no, yes, other                                   3
3     stereo                  none, any, Z, E, cis, trans, other               7
====  ======================  ===============================================  ====

chemprop's one real-valued feature, the atom mass (``0.01 * GetMass()``), is the element's
standard atomic weight for an atom without an isotope label and the isotope's mass otherwise,
so atomic number and isotope columns together determine it (for labels within 5 mass numbers of
the element's most common isotope: D, T, 13C, 14C, 15N, 18O, 18F, 125I, ...). chemprop keeps
one atomic-number bit for H..Kr and I only, degrees 0..5, charges -2..2 and 0..4 hydrogens;
here each of these has the ranges above, and hybridisation unspecified/OTHER is "other", as
chemprop's unknown bit. chemprop's "null bond" bit (its placeholder for atoms without bonds) has
no column: a graph without bonds simply has no edges.

Hydrogens stay implicit (they are counted in the atom features), multi-fragment SMILES such as
salts become one graph with several connected components, and stereo comes from the SMILES.
"""

from __future__ import annotations

import re

import torch
from rdkit import Chem, rdBase
from torch_geometric.data import Data

from kangnn.data.errors import DataError, InvalidSmilesError

__all__ = [
    "ATOM_FEATURE_DIMS",
    "BOND_FEATURE_DIMS",
    "ATOM_FEATURE_NAMES",
    "BOND_FEATURE_NAMES",
    "FEATURE_SETS",
    "feature_dims",
    "feature_names",
    "mol_from_smiles",
    "mol_to_graph",
    "smiles_to_graph",
]

FEATURE_SETS: tuple[str, ...] = ("ogb", "rich", "chemprop")

_T = Chem.rdchem.ChiralType
_H = Chem.rdchem.HybridizationType
_B = Chem.rdchem.BondType
_S = Chem.rdchem.BondStereo

_CHIRALITY = {
    _T.CHI_UNSPECIFIED: 0,
    _T.CHI_TETRAHEDRAL_CW: 1,
    _T.CHI_TETRAHEDRAL_CCW: 2,
    _T.CHI_OTHER: 3,
}
_HYBRIDISATION = {_H.SP: 0, _H.SP2: 1, _H.SP3: 2, _H.SP3D: 3, _H.SP3D2: 4}
_BOND_TYPE = {_B.SINGLE: 0, _B.DOUBLE: 1, _B.TRIPLE: 2, _B.AROMATIC: 3}
_BOND_STEREO = {
    _S.STEREONONE: 0,
    _S.STEREOZ: 1,
    _S.STEREOE: 2,
    _S.STEREOCIS: 3,
    _S.STEREOTRANS: 4,
    _S.STEREOANY: 5,
}
_CIP = {"R": 1, "S": 2}
# chemprop v2's hybridisation and bond stereo choices, in its order.
_CP_HYBRIDISATION = {_H.S: 0, _H.SP: 1, _H.SP2: 2, _H.SP2D: 3, _H.SP3: 4, _H.SP3D: 5, _H.SP3D2: 6}
_CP_STEREO = {
    _S.STEREONONE: 0,
    _S.STEREOANY: 1,
    _S.STEREOZ: 2,
    _S.STEREOE: 3,
    _S.STEREOCIS: 4,
    _S.STEREOTRANS: 5,
}
_ISOTOPE_SPAN = 5  # isotope labels within +-5 mass numbers of the most common isotope
_PERIODIC_TABLE = Chem.GetPeriodicTable()

ATOM_FEATURE_NAMES: list[str] = [
    "atomic_num",
    "chirality",
    "degree",
    "formal_charge",
    "num_hs",
    "num_radical_electrons",
    "hybridization",
    "is_aromatic",
    "is_in_ring",
]
BOND_FEATURE_NAMES: list[str] = ["bond_type", "stereo", "is_conjugated"]
ATOM_FEATURE_DIMS: list[int] = [119, 5, 12, 12, 10, 6, 6, 3, 3]
BOND_FEATURE_DIMS: list[int] = [5, 7, 3]

_RICH_ATOM_NAMES = ["total_valence", "cip_code", "num_rings", "min_ring_size", "heavy_degree"]
_RICH_ATOM_DIMS = [10, 4, 5, 8, 8]
_RICH_BOND_NAMES = ["is_in_ring", "min_ring_size"]
_RICH_BOND_DIMS = [3, 8]

_CHEMPROP_ATOM_NAMES = [
    "atomic_num",
    "degree",
    "formal_charge",
    "chirality",
    "num_hs",
    "hybridization",
    "is_aromatic",
    "isotope",
]
_CHEMPROP_ATOM_DIMS = [119, 12, 12, 5, 10, 8, 3, 2 * _ISOTOPE_SPAN + 3]
_CHEMPROP_BOND_NAMES = ["bond_type", "is_conjugated", "is_in_ring", "stereo"]
_CHEMPROP_BOND_DIMS = [5, 3, 3, 7]


def _check_features(features: str) -> None:
    if features not in FEATURE_SETS:
        raise DataError(f"unknown feature set {features!r}; valid: {', '.join(FEATURE_SETS)}")


def feature_dims(features: str = "ogb") -> tuple[list[int], list[int]]:
    """Cardinality of every categorical atom and bond feature column.

    Parameters
    ----------
    features : {"ogb", "rich", "chemprop"}
        Feature set.

    Returns
    -------
    tuple of list of int
        ``(atom_dims, bond_dims)``; column ``i`` of ``x`` (``edge_attr``) takes values in
        ``range(atom_dims[i])`` (``range(bond_dims[i])``).
    """
    _check_features(features)
    if features == "ogb":
        return list(ATOM_FEATURE_DIMS), list(BOND_FEATURE_DIMS)
    if features == "chemprop":
        return list(_CHEMPROP_ATOM_DIMS), list(_CHEMPROP_BOND_DIMS)
    return ATOM_FEATURE_DIMS + _RICH_ATOM_DIMS, BOND_FEATURE_DIMS + _RICH_BOND_DIMS


def feature_names(features: str = "ogb") -> tuple[list[str], list[str]]:
    """Names of the atom and bond feature columns, in column order (see :func:`feature_dims`)."""
    _check_features(features)
    if features == "ogb":
        return list(ATOM_FEATURE_NAMES), list(BOND_FEATURE_NAMES)
    if features == "chemprop":
        return list(_CHEMPROP_ATOM_NAMES), list(_CHEMPROP_BOND_NAMES)
    return ATOM_FEATURE_NAMES + _RICH_ATOM_NAMES, BOND_FEATURE_NAMES + _RICH_BOND_NAMES


_TIMESTAMP = re.compile(r"^\[\d\d:\d\d:\d\d\]\s?")


def _clean_rdkit_log(messages: str, smiles: str) -> str:
    """Turn RDKit's multi-line error log into a short one-line reason."""
    parts: list[str] = []
    for raw in messages.splitlines():
        line = " ".join(_TIMESTAMP.sub("", raw).split())
        # RDKit echoes the SMILES and draws a caret under it; neither helps on one line.
        if not line or line == smiles or set(line) <= {"~", "^", " "}:
            continue
        if line.startswith("SMILES Parse Error: Failed parsing SMILES"):
            continue
        if parts and line.startswith("SMILES Parse Error: "):
            line = line[len("SMILES Parse Error: ") :]
        line = line.rstrip(":")
        if line not in parts:
            parts.append(line)
    return "; ".join(parts)


def _fallback_reason(smiles: str) -> str:
    """Reason for a failed parse on RDKit versions without ``rdBase.CaptureErrorLog``."""
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles, sanitize=False)
        if mol is None:
            return "SMILES parse error"
        try:
            Chem.SanitizeMol(mol)
        except Exception as err:  # RDKit raises several sanitisation exception types
            return " ".join(str(err).split()) or type(err).__name__
    return "RDKit could not parse it"


def mol_from_smiles(smiles: str) -> Chem.Mol:
    """Parse and sanitise a SMILES string with RDKit.

    Parameters
    ----------
    smiles : str
        SMILES string (surrounding whitespace is ignored).

    Returns
    -------
    rdkit.Chem.Mol
        The sanitised molecule, with at least one atom.

    Raises
    ------
    InvalidSmilesError
        If the string is empty, does not parse, fails sanitisation (RDKit's reason is in the
        message and in ``err.reason``) or has no atoms.
    """
    text = smiles.strip()
    if not text:
        raise InvalidSmilesError(smiles, "empty SMILES")
    capture = getattr(rdBase, "CaptureErrorLog", None)
    if capture is not None:
        with capture() as log:
            mol = Chem.MolFromSmiles(text)
        if mol is None:
            reason = _clean_rdkit_log(log.messages, text) or _fallback_reason(text)
            raise InvalidSmilesError(smiles, reason)
    else:
        mol = Chem.MolFromSmiles(text)
        if mol is None:
            raise InvalidSmilesError(smiles, _fallback_reason(text))
    if mol.GetNumAtoms() == 0:
        raise InvalidSmilesError(smiles, "the molecule has no atoms")
    return mol


def _ring_size_index(size: int) -> int:
    # 0 = not in a ring, 3..8 -> 1..6, larger rings -> 7 ("other").
    if size == 0:
        return 0
    return size - 2 if 3 <= size <= 8 else 7


def _isotope_index(atom: Chem.Atom) -> int:
    # 0 = no label (natural abundance), 1..2s+1 = mass number offset -s..+s from the element's
    # most common isotope, 2s+2 = other (a label further off, or on a dummy atom).
    isotope, z = atom.GetIsotope(), atom.GetAtomicNum()
    if isotope == 0:
        return 0
    if 1 <= z <= 118:
        offset = isotope - _PERIODIC_TABLE.GetMostCommonIsotope(z)
        if -_ISOTOPE_SPAN <= offset <= _ISOTOPE_SPAN:
            return offset + _ISOTOPE_SPAN + 1
    return 2 * _ISOTOPE_SPAN + 2


def _chemprop_atom_row(atom: Chem.Atom) -> list[int]:
    z = atom.GetAtomicNum()
    degree = atom.GetTotalDegree()
    charge = atom.GetFormalCharge()
    num_h = atom.GetTotalNumHs()
    return [
        z - 1 if 1 <= z <= 118 else 118,
        degree if degree <= 10 else 11,
        charge + 5 if -5 <= charge <= 5 else 11,
        _CHIRALITY.get(atom.GetChiralTag(), 4),
        num_h if num_h <= 8 else 9,
        _CP_HYBRIDISATION.get(atom.GetHybridization(), 7),
        int(atom.GetIsAromatic()),
        _isotope_index(atom),
    ]


def _chemprop_bond_row(bond: Chem.Bond) -> list[int]:
    return [
        _BOND_TYPE.get(bond.GetBondType(), 4),
        int(bond.GetIsConjugated()),
        int(bond.IsInRing()),
        _CP_STEREO.get(bond.GetStereo(), 6),
    ]


def mol_to_graph(mol: Chem.Mol, features: str = "ogb") -> Data:
    """Featurise an RDKit molecule into a graph with categorical features.

    Parameters
    ----------
    mol : rdkit.Chem.Mol
        A sanitised molecule.
    features : {"ogb", "rich", "chemprop"}
        Feature set (see the module docstring).

    Returns
    -------
    torch_geometric.data.Data
        ``x`` long ``[num_atoms, n_atom_feats]``, ``edge_index`` long ``[2, 2 * num_bonds]``
        (each bond in both directions, the two directions adjacent) and ``edge_attr`` long
        ``[2 * num_bonds, n_bond_feats]``.
    """
    _check_features(features)
    rich = features == "rich"
    chemprop = features == "chemprop"
    chir, hyb = _CHIRALITY, _HYBRIDISATION
    ring_info = mol.GetRingInfo() if rich else None

    rows: list[list[int]] = []
    for atom in mol.GetAtoms():
        if chemprop:
            rows.append(_chemprop_atom_row(atom))
            continue
        z = atom.GetAtomicNum()
        degree = atom.GetTotalDegree()
        charge = atom.GetFormalCharge()
        num_h = atom.GetTotalNumHs()
        radicals = atom.GetNumRadicalElectrons()
        row = [
            z - 1 if 1 <= z <= 118 else 118,
            chir.get(atom.GetChiralTag(), 4),
            degree if degree <= 10 else 11,
            charge + 5 if -5 <= charge <= 5 else 11,
            num_h if num_h <= 8 else 9,
            radicals if radicals <= 4 else 5,
            hyb.get(atom.GetHybridization(), 5),
            int(atom.GetIsAromatic()),
            int(atom.IsInRing()),
        ]
        if rich:
            idx = atom.GetIdx()
            valence = atom.GetTotalValence()
            n_rings = ring_info.NumAtomRings(idx)
            heavy = atom.GetDegree()
            cip = _CIP.get(atom.GetProp("_CIPCode"), 3) if atom.HasProp("_CIPCode") else 0
            row += [
                valence if 0 <= valence <= 8 else 9,
                cip,
                n_rings if n_rings <= 3 else 4,
                _ring_size_index(ring_info.MinAtomRingSize(idx)),
                heavy if heavy <= 6 else 7,
            ]
        rows.append(row)

    btype, bstereo = _BOND_TYPE, _BOND_STEREO
    src: list[int] = []
    dst: list[int] = []
    edge_rows: list[list[int]] = []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        if chemprop:
            feat = _chemprop_bond_row(bond)
        else:
            feat = [
                btype.get(bond.GetBondType(), 4),
                bstereo.get(bond.GetStereo(), 6),
                int(bond.GetIsConjugated()),
            ]
        if rich:
            feat += [
                int(bond.IsInRing()),
                _ring_size_index(ring_info.MinBondRingSize(bond.GetIdx())),
            ]
        src += (i, j)
        dst += (j, i)
        edge_rows += (feat, feat)

    n_bond_feats = len(feature_dims(features)[1])
    x = torch.tensor(rows, dtype=torch.long)
    if edge_rows:
        edge_index = torch.tensor([src, dst], dtype=torch.long)
        edge_attr = torch.tensor(edge_rows, dtype=torch.long)
    else:
        edge_index = torch.empty((2, 0), dtype=torch.long)
        edge_attr = torch.empty((0, n_bond_feats), dtype=torch.long)
    return Data(x=x, edge_index=edge_index, edge_attr=edge_attr)


def smiles_to_graph(smiles: str, features: str = "ogb") -> Data:
    """Parse a SMILES string and featurise it into a PyG graph.

    Parameters
    ----------
    smiles : str
        SMILES string; salts and other multi-fragment SMILES (``'.'``), charges and stereo are
        supported.
    features : {"ogb", "rich", "chemprop"}
        Feature set (see the module docstring).

    Returns
    -------
    torch_geometric.data.Data
        See :func:`mol_to_graph`; additionally ``smiles`` holds the input string (stripped).
        A single atom gives ``edge_index`` of shape ``[2, 0]`` and ``edge_attr`` of shape
        ``[0, n_bond_feats]``.

    Raises
    ------
    InvalidSmilesError
        If RDKit rejects the SMILES; the message carries RDKit's reason.
    DataError
        If ``features`` is not a known feature set.
    """
    _check_features(features)
    data = mol_to_graph(mol_from_smiles(smiles), features)
    data.smiles = smiles.strip()
    return data
