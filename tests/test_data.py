"""Tests for kangnn.data: featurisation, datasets, bad input, splits, scaling, data root."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest
import torch
from torch_geometric.loader import DataLoader

import kangnn.data.download as download_mod
import kangnn.data.registry as registry_mod
from kangnn.data import (
    ATOM_FEATURE_DIMS,
    BOND_FEATURE_DIMS,
    DataError,
    InvalidSmilesError,
    MoleculeDataset,
    TargetScaler,
    feature_dims,
    feature_names,
    list_datasets,
    load_dataset,
    load_split,
    make_split,
    resolve_data_root,
    save_split,
    scaffold,
    smiles_to_graph,
)

REPO = Path(__file__).resolve().parents[1]
# Column positions in the "ogb" atom / bond features.
ATOMIC_NUM, CHIRALITY, DEGREE, CHARGE, NUM_H, RADICAL, HYBRID, AROMATIC, IN_RING = range(9)
BOND_TYPE, STEREO, CONJUGATED = range(3)


def listing(folder: Path) -> list[str]:
    """All paths under ``folder`` (relative), to check that nothing was left behind."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def write(path: Path, text: str) -> Path:
    """Write ``text`` byte for byte (no newline translation)."""
    path.write_bytes(text.encode("utf-8"))
    return path


# A small CSV the tests own: multi-task labels with a missing one, a salt, a charged species, a
# single atom, stereo, and a split column.
SMALL_CSV = (
    "smiles,logS,active,split\n"
    "CCO,-0.77,0,train\n"
    "c1ccccc1,-1.64,1,train\n"
    "CC(=O)[O-].[Na+],0.5,,train\n"
    "[NH4+],1.0,1,val\n"
    "C,-0.5,0,train\n"
    "C[C@@H](N)C(=O)O,0.2,1,test\n"
    "C/C=C/C,-1.0,0,train\n"
    "c1ccc2ccccc2c1,-3.6,1,valid\n"
)


@pytest.fixture
def small_csv(tmp_path: Path) -> Path:
    return write(tmp_path / "small.csv", SMALL_CSV)


def load_small(path: Path, **kw) -> MoleculeDataset:
    kw.setdefault("target_columns", ["logS", "active"])
    kw.setdefault("task", "regression")
    return load_dataset(path=path, **kw)


@pytest.fixture(scope="module")
def esol(tmp_path_factory: pytest.TempPathFactory, copy_moleculenet) -> MoleculeDataset:
    root = copy_moleculenet(tmp_path_factory.mktemp("esol_root"), "esol")
    return load_dataset("esol", root=root)


# ------------------------------------------------------------------------------------------
# Featurisation


def test_feature_dims() -> None:
    atom, bond = feature_dims("ogb")
    assert atom == ATOM_FEATURE_DIMS and len(atom) == 9
    assert bond == BOND_FEATURE_DIMS and len(bond) == 3
    # OGB's cardinalities, plus an "other" slot where OGB has none.
    assert atom == [119, 5, 12, 12, 10, 6, 6, 3, 3]
    assert bond == [5, 7, 3]
    rich_atom, rich_bond = feature_dims("rich")
    assert rich_atom[:9] == atom and len(rich_atom) > 9
    assert rich_bond[:3] == bond and len(rich_bond) > 3
    assert [len(n) for n in feature_names("rich")] == [len(rich_atom), len(rich_bond)]
    with pytest.raises(DataError, match="unknown feature set 'fancy'.*ogb, rich"):
        feature_dims("fancy")


def test_ethanol_graph() -> None:
    g = smiles_to_graph("CCO")
    assert g.x.dtype == g.edge_index.dtype == g.edge_attr.dtype == torch.long
    assert g.x.shape == (3, 9) and g.edge_index.shape == (2, 4) and g.edge_attr.shape == (4, 3)
    assert g.x[:, ATOMIC_NUM].tolist() == [5, 5, 7]  # C, C, O (atomic number - 1)
    assert g.x[:, NUM_H].tolist() == [3, 2, 1]
    edges = set(map(tuple, g.edge_index.t().tolist()))
    assert edges == {(0, 1), (1, 0), (1, 2), (2, 1)}
    assert g.edge_attr[:, BOND_TYPE].tolist() == [0, 0, 0, 0]  # single
    assert g.smiles == "CCO"


def test_aromatic_bonds_and_ring_flags() -> None:
    g = smiles_to_graph("c1ccccc1")
    assert g.num_nodes == 6 and g.edge_index.size(1) == 12
    assert g.edge_attr[:, BOND_TYPE].eq(3).all()  # aromatic
    assert g.edge_attr[:, CONJUGATED].eq(1).all()
    assert g.x[:, AROMATIC].eq(1).all() and g.x[:, IN_RING].eq(1).all()
    assert g.x[:, HYBRID].eq(1).all()  # SP2


def test_single_atom() -> None:
    g = smiles_to_graph("C")
    assert g.x.shape == (1, 9)
    assert g.edge_index.shape == (2, 0) and g.edge_attr.shape == (0, 3)
    assert g.x[0, NUM_H] == 4 and g.x[0, DEGREE] == 4
    rich = smiles_to_graph("[Na+]", features="rich")
    assert rich.edge_index.shape == (2, 0) and rich.edge_attr.shape == (0, 5)


def test_charged_species() -> None:
    g = smiles_to_graph("[NH4+]")
    assert g.x[0, ATOMIC_NUM] == 6  # N
    assert g.x[0, CHARGE] == 6  # formal charge +1 -> index 1 + 5
    assert g.x[0, NUM_H] == 4 and g.x[0, DEGREE] == 4


def test_salt_is_one_graph_with_two_components() -> None:
    g = smiles_to_graph("CC(=O)[O-].[Na+]")
    assert g.num_nodes == 5 and g.edge_index.size(1) == 6  # 3 bonds, both directions
    assert g.x[:, CHARGE].tolist() == [5, 5, 5, 4, 6]  # 0, 0, 0, -1, +1
    na = 4
    assert not (g.edge_index == na).any()  # the sodium ion has no bond


def test_stereo() -> None:
    r = smiles_to_graph("C[C@@H](N)O")
    s = smiles_to_graph("C[C@H](N)O")
    flat = smiles_to_graph("CC(N)O")
    assert r.x[1, CHIRALITY] in (1, 2) and s.x[1, CHIRALITY] in (1, 2)
    assert r.x[1, CHIRALITY] != s.x[1, CHIRALITY]
    assert flat.x[:, CHIRALITY].eq(0).all()
    e = smiles_to_graph("C/C=C/C")
    z = smiles_to_graph("C/C=C\\C")
    double = e.edge_attr[:, BOND_TYPE] == 1
    assert e.edge_attr[double, STEREO].eq(2).all()  # STEREOE
    assert z.edge_attr[double, STEREO].eq(1).all()  # STEREOZ
    rich = smiles_to_graph("C[C@@H](N)C(=O)O", features="rich")
    cip = feature_names("rich")[0].index("cip_code")
    assert rich.x[1, cip] in (1, 2) and rich.x[0, cip] == 0


def ogb_reference(mol) -> tuple[list[list[int]], list[list[int]]]:
    """OGB's ``atom_to_feature_vector`` / ``bond_to_feature_vector`` (ogb 1.3), transcribed."""

    def idx(values: list, v) -> int:
        return values.index(v) if v in values else len(values) - 1

    chir = ["CHI_UNSPECIFIED", "CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW", "CHI_OTHER", "misc"]
    hyb = ["SP", "SP2", "SP3", "SP3D", "SP3D2", "misc"]
    btype = ["SINGLE", "DOUBLE", "TRIPLE", "AROMATIC", "misc"]
    stereo = ["STEREONONE", "STEREOZ", "STEREOE", "STEREOCIS", "STEREOTRANS", "STEREOANY"]
    atoms = [
        [
            idx([*range(1, 119), "misc"], a.GetAtomicNum()),
            chir.index(str(a.GetChiralTag())),
            idx([*range(11), "misc"], a.GetTotalDegree()),
            idx([*range(-5, 6), "misc"], a.GetFormalCharge()),
            idx([*range(9), "misc"], a.GetTotalNumHs()),
            idx([*range(5), "misc"], a.GetNumRadicalElectrons()),
            idx(hyb, str(a.GetHybridization())),
            int(a.GetIsAromatic()),
            int(a.IsInRing()),
        ]
        for a in mol.GetAtoms()
    ]
    bonds = []
    for b in mol.GetBonds():
        f = [
            idx(btype, str(b.GetBondType())),
            stereo.index(str(b.GetStereo())),
            int(b.GetIsConjugated()),
        ]
        bonds += [f, f]
    return atoms, bonds


def test_same_indices_as_ogb(esol: MoleculeDataset) -> None:
    from rdkit import Chem

    for i in range(0, len(esol), 7):
        g = esol[i]
        atoms, bonds = ogb_reference(Chem.MolFromSmiles(g.smiles))
        assert g.x.tolist() == atoms, g.smiles
        assert g.edge_attr.tolist() == bonds, g.smiles


@pytest.mark.parametrize("features", ["ogb", "rich"])
def test_every_index_in_range(features: str) -> None:
    atom_dims, bond_dims = feature_dims(features)
    odd = [
        "*C",  # dummy atom: atomic number 0 -> "other"
        "[U+6]",
        "[Pt]",
        "C[S@@](=O)c1ccccc1",
        "F[Xe]F",
        "[2H]C([2H])([2H])[2H]",
        "C1CCCCCCCCCCC1",
        "[O-][N+](=O)c1ccccc1",
        "[CH2]",  # radical
        "Cl[Co](Cl)(Cl)(Cl)(Cl)Cl",  # high degree
    ]
    for smi in odd:
        g = smiles_to_graph(smi, features=features)
        assert g.x.size(1) == len(atom_dims) and g.edge_attr.size(1) == len(bond_dims)
        for col, dim in enumerate(atom_dims):
            assert 0 <= int(g.x[:, col].min()) and int(g.x[:, col].max()) < dim, (smi, col)
        for col, dim in enumerate(bond_dims):
            if g.edge_attr.numel():
                assert int(g.edge_attr[:, col].max()) < dim, (smi, col)
    assert smiles_to_graph("*C").x[0, ATOMIC_NUM] == 118


def test_rich_ring_features() -> None:
    g = smiles_to_graph("c1ccccc1CC", features="rich")
    names = feature_names("rich")
    size = names[0].index("min_ring_size")
    assert g.x[:6, size].eq(4).all()  # six-membered ring -> index 6 - 2
    assert g.x[6:, size].eq(0).all()
    bond_ring = names[1].index("is_in_ring")
    assert sorted(g.edge_attr[:, bond_ring].tolist()) == [0] * 4 + [1] * 12


@pytest.mark.parametrize(
    ("smiles", "reason"),
    [
        ("C1CC", "unclosed ring"),
        ("CN(C)(C)(C)C", "valence"),
        ("c1cccc1", "kekulize"),
        ("Xx", "syntax error"),
        ("   ", "empty SMILES"),
    ],
)
def test_invalid_smiles_reason(smiles: str, reason: str) -> None:
    with pytest.raises(InvalidSmilesError, match=reason) as info:
        smiles_to_graph(smiles)
    assert isinstance(info.value, DataError)
    assert "\n" not in str(info.value)
    assert info.value.smiles == smiles


# ------------------------------------------------------------------------------------------
# User CSV


def test_csv_dataset(small_csv: Path) -> None:
    ds = load_small(small_csv)
    assert len(ds) == 8 and ds.num_tasks == 2
    assert ds.task == "regression" and ds.name == "small"
    assert ds.target_names == ["logS", "active"]
    assert ds.source_rows == list(range(2, 10))
    assert ds.smiles[2] == "CC(=O)[O-].[Na+]"
    assert ds.invalid_rows == []
    assert ds.atom_feature_dims == ATOM_FEATURE_DIMS
    assert ds.bond_feature_dims == BOND_FEATURE_DIMS
    item = ds[2]
    assert item.y.shape == (1, 2) and item.y.dtype == torch.float
    assert item.y[0, 0] == pytest.approx(0.5) and math.isnan(item.y[0, 1])  # empty cell
    assert ds.y.shape == (8, 2) and int(torch.isnan(ds.y).sum()) == 1
    assert ds[4].edge_index.shape == (2, 0)  # single atom "C"


def test_csv_classification_and_rich(small_csv: Path) -> None:
    ds = load_dataset(
        path=small_csv,
        smiles_column="smiles",
        target_columns="active",
        task="classification",
        features="rich",
    )
    assert ds.task == "classification" and ds.target_names == ["active"]
    assert ds[0].x.size(1) == len(feature_dims("rich")[0])
    assert ds.atom_feature_dims == feature_dims("rich")[0]


def test_subset_and_dataloader(small_csv: Path) -> None:
    ds = load_small(small_csv)
    idx = [6, 0, 3]
    for sub in (ds[idx], ds[torch.tensor(idx)]):
        assert isinstance(sub, MoleculeDataset) and len(sub) == 3
        assert sub.smiles == [ds.smiles[i] for i in idx]
        assert sub.source_rows == [ds.source_rows[i] for i in idx]
        assert torch.equal(torch.nan_to_num(sub.y), torch.nan_to_num(ds.y[idx]))
        batch = next(iter(DataLoader(sub, batch_size=3)))
        assert batch.num_graphs == 3 and batch.y.shape == (3, 2)
        assert batch.x.size(0) == sum(ds[i].num_nodes for i in idx)
        assert batch.smiles == sub.smiles
    batch = next(iter(DataLoader([ds[i] for i in idx], batch_size=3)))
    assert batch.num_graphs == 3
    copied = ds.copy(idx)
    assert copied.smiles == [ds.smiles[i] for i in idx] and len(copied) == 3
    assert torch.equal(copied[0].x, ds[6].x) and copied.source_rows == [8, 2, 5]


def test_from_smiles() -> None:
    ds = MoleculeDataset.from_smiles(["CCO", "c1ccccc1"], y=[[1.0], [2.0]])
    assert len(ds) == 2 and ds.y.tolist() == [[1.0], [2.0]] and ds.target_names == ["target_0"]
    unlabelled = MoleculeDataset.from_smiles(["C"])
    assert torch.isnan(unlabelled.y).all()
    with pytest.raises(InvalidSmilesError, match=r"item 1"):
        MoleculeDataset.from_smiles(["C", "C1CC"])


def test_line_numbers_crlf_bom_quotes_blank_lines(tmp_path: Path) -> None:
    text = (
        "\ufeffname,smiles,y\r\n"
        '"ethanol, absolute",CCO,1\r\n'
        "\r\n"
        "benzene,c1ccccc1,2\r\n"
        '"a ""quoted"" name",CC,3\r\n'
        "broken,CN(C)(C)(C)C,4\r\n"
    )
    path = write(tmp_path / "mixed.csv", text)
    with pytest.raises(InvalidSmilesError, match=r"mixed\.csv line 6: invalid SMILES 'CN\(C\)"):
        load_dataset(path=path, target_columns=["y"], task="regression")
    ds = load_dataset(path=path, target_columns=["y"], task="regression", skip_invalid=True)
    assert ds.source_rows == [2, 4, 5]
    assert ds.smiles == ["CCO", "c1ccccc1", "CC"]
    assert [r["line"] for r in ds.invalid_rows] == [6]


def test_invalid_smiles_stops_by_default(tmp_path: Path, small_csv: Path) -> None:
    lines = SMALL_CSV.splitlines(keepends=True)
    lines.insert(3, "CN(C)(C)(C)C,1.0,0,train\n")  # becomes line 4
    path = write(tmp_path / "bad.csv", "".join(lines))
    before = listing(tmp_path)
    with pytest.raises(InvalidSmilesError) as info:
        load_small(path, invalid_rows_path=tmp_path / "run" / "invalid.csv")
    msg = str(info.value)
    assert str(path) in msg and "line 4" in msg and "'CN(C)(C)(C)C'" in msg
    assert "column 'smiles'" in msg and "valence" in msg and "skip_invalid" in msg
    assert info.value.line == 4 and info.value.path == str(path)
    assert listing(tmp_path) == before  # nothing written


def test_skip_invalid_writes_rows(tmp_path: Path) -> None:
    lines = SMALL_CSV.splitlines(keepends=True)
    lines.insert(3, "CN(C)(C)(C)C,1.0,0,train\n")  # line 4
    lines.insert(6, "C1CC,2.0,1,train\n")  # line 7
    path = write(tmp_path / "bad.csv", "".join(lines))
    out = tmp_path / "run" / "invalid_rows.csv"
    ds = load_small(path, skip_invalid=True, invalid_rows_path=out)
    assert len(ds) == 8 and len(ds.invalid_rows) == 2
    assert 4 not in ds.source_rows and 7 not in ds.source_rows
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["line"], r["smiles"]) for r in rows] == [("4", "CN(C)(C)(C)C"), ("7", "C1CC")]
    assert "valence" in rows[0]["reason"] and "unclosed ring" in rows[1]["reason"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["invalid_rows.csv"]  # no temp file


def test_skip_invalid_then_error_leaves_nothing(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.csv", "smiles,y\nC1CC,1\nCCO,abc\n")
    out = tmp_path / "run" / "invalid_rows.csv"
    before = listing(tmp_path)
    with pytest.raises(DataError, match=r"line 3: non-numeric target 'abc' in column 'y'"):
        load_dataset(
            path=path,
            target_columns=["y"],
            task="regression",
            skip_invalid=True,
            invalid_rows_path=out,
        )
    assert listing(tmp_path) == before


@pytest.mark.parametrize(
    ("text", "kwargs", "pattern"),
    [
        ("", {}, r"bad\.csv: the file is empty"),
        ("\n\n", {}, r"bad\.csv: the file is empty"),
        ("smiles,y\n", {}, r"bad\.csv: the file has a header but no data rows"),
        ("smiles,y\n\n\n", {}, r"header but no data rows"),
        (
            "mol,y\nCCO,1\n",
            {},
            r"line 1: no SMILES column 'smiles' in the header \(columns: 'mol', 'y'\)",
        ),
        ("smiles,y\nCCO,1\n", {"target_columns": ["z"]}, r"line 1: no target column 'z'"),
        ("smiles,y\nCCO,1\nCC,x1\n", {}, r"line 3: non-numeric target 'x1' in column 'y'"),
        ("smiles,y\nCCO,inf\n", {}, r"line 2: infinite target 'inf'"),
        ("smiles,y\nCCO,1\nCC,1,2\n", {}, r"line 3: 3 fields, but the header has 2"),
        ("smiles,y,y\nCCO,1,2\n", {}, r"target column 'y' appears 2 times"),
        ("smiles,y\nCCO,1\n", {"target_columns": []}, r"no target columns given"),
        ("smiles,y\nCCO,1\n", {"task": None}, r"no task type given"),
        ("smiles,y\nCCO,1\n", {"task": "ranking"}, r"unknown task 'ranking'"),
        ("smiles,y\nCCO,1\n", {"target_columns": ["smiles"]}, r"both the SMILES and a target"),
        ("smiles,y\nC1CC,1\nXx,2\n", {"skip_invalid": True}, r"no valid molecules: all 2 rows"),
        ("smiles,y\nCCO,0.5\n", {"task": "classification"}, r"line 2: classification target '0.5'"),
        ("smiles,y\nCCO,1\n", {"features": "fancy"}, r"unknown feature set 'fancy'"),
    ],
)
def test_bad_csv(tmp_path: Path, text: str, kwargs: dict, pattern: str) -> None:
    path = write(tmp_path / "bad.csv", text)
    kw = {"target_columns": ["y"], "task": "regression", **kwargs}
    before = listing(tmp_path)
    with pytest.raises(DataError, match=pattern) as info:
        load_dataset(path=path, **kw)
    assert "\n" not in str(info.value)
    assert listing(tmp_path) == before


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("smiles,y\nCCO,1\nC\u00e9,2\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.csv: not UTF-8 text"):
        load_dataset(path=path, target_columns=["y"], task="regression")


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        load_dataset(path=tmp_path / "nope.csv", target_columns=["y"], task="regression")
    with pytest.raises(DataError, match="not a regular file"):
        load_dataset(path=tmp_path, target_columns=["y"], task="regression")
    with pytest.raises(DataError, match="either a dataset name or a CSV path"):
        load_dataset("esol", path=tmp_path / "x.csv")
    with pytest.raises(DataError, match="no dataset given"):
        load_dataset()
    with pytest.raises(
        DataError,
        match=r"unknown dataset 'esoll'; valid names: bace, bbbp, "
        r"clintox, esol, freesolv, hiv, lipo, muv, pcba, sider, tox21, toxcast",
    ):
        load_dataset("esoll", root=tmp_path)
    with pytest.raises(DataError, match="CSV files"):
        load_dataset("esol", root=tmp_path, smiles_column="smiles")
    assert listing(tmp_path) == []


def test_split_column(tmp_path: Path, small_csv: Path) -> None:
    ds = load_small(small_csv, split_column="split")
    assert ds.split_column == "split"
    assert ds.split_values[-1] == "val"  # "valid" normalised
    split = make_split(ds, "column")
    assert split == {"train": [0, 1, 2, 4, 6], "val": [3, 7], "test": [5]}
    assert make_split(ds, "column", column="split") == split
    with pytest.raises(DataError, match="loaded with split column 'split', not 'fold'"):
        make_split(ds, "column", column="fold")
    with pytest.raises(DataError, match="no split column"):
        make_split(load_small(small_csv), "column")
    bad = write(tmp_path / "badsplit.csv", "smiles,y,split\nCCO,1,train\nCC,2,holdout\n")
    with pytest.raises(DataError, match=r"line 3: split value 'holdout' in column 'split'"):
        load_dataset(path=bad, target_columns=["y"], task="regression", split_column="split")
    no_test = write(tmp_path / "notest.csv", "smiles,y,split\nCCO,1,train\nCC,2,val\n")
    ds2 = load_dataset(path=no_test, target_columns=["y"], task="regression", split_column="split")
    with pytest.raises(DataError, match="column split .* leaves the test part empty"):
        make_split(ds2, "column")


# ------------------------------------------------------------------------------------------
# MoleculeNet sets, data root, cache, download


def test_list_datasets() -> None:
    names = "esol freesolv lipo bace bbbp clintox hiv tox21 toxcast sider muv pcba".split()
    assert list_datasets() == sorted(names)


def test_esol(esol: MoleculeDataset) -> None:
    assert len(esol) == 1128 and esol.task == "regression" and esol.num_tasks == 1
    assert esol.name == "esol"
    assert esol.target_names == ["measured log solubility in mols per litre"]
    assert esol.source_rows[0] == 2 and esol.source_rows[-1] == 1129
    assert not torch.isnan(esol.y).any()
    batch = next(iter(DataLoader(esol, batch_size=64)))
    assert batch.num_graphs == 64 and batch.y.shape == (64, 1)


def test_moleculenet_cache(moleculenet_root) -> None:
    root = moleculenet_root("esol")
    first = load_dataset("ESOL", root=root)  # display names are accepted
    cache = root / "esol" / "processed" / "kangnn_ogb.pt"
    assert cache.is_file()
    again = load_dataset("esol", root=root)
    assert again.smiles == first.smiles and torch.equal(again.y, first.y)
    assert torch.equal(again[10].x, first[10].x) and again[10].x.dtype == torch.long
    assert torch.equal(again[10].edge_index, first[10].edge_index)
    # A changed raw file is not served from the stale cache.
    raw = root / "esol" / "raw" / "delaney-processed.csv"
    lines = raw.read_bytes().splitlines(keepends=True)
    raw.write_bytes(b"".join(lines[:-1]))
    assert len(load_dataset("esol", root=root)) == 1127
    # Another feature set gets its own cache file.
    rich = load_dataset("esol", root=root, features="rich")
    assert rich[0].x.size(1) == len(feature_dims("rich")[0])
    assert (root / "esol" / "processed" / "kangnn_rich.pt").is_file()
    assert sorted(p.name for p in (root / "esol" / "processed").iterdir()) == [
        "kangnn_ogb.pt",
        "kangnn_rich.pt",
    ]


def test_moleculenet_task_check(moleculenet_root) -> None:
    root = moleculenet_root("esol")
    with pytest.raises(DataError, match="esol is a regression task, not 'classification'"):
        load_dataset("esol", root=root, task="classification")
    assert len(load_dataset("esol", root=root, task="regression")) == 1128


def test_bbbp_invalid_rows(moleculenet_root, tmp_path: Path) -> None:
    root = moleculenet_root("bbbp")
    before = listing(root)
    with pytest.raises(InvalidSmilesError, match=r"BBBP\.csv line 61: invalid SMILES") as info:
        load_dataset("bbbp", root=root)
    assert "valence" in info.value.reason
    assert listing(root) == before  # no cache, no temp file
    out = tmp_path / "run" / "invalid_rows.csv"
    ds = load_dataset("bbbp", root=root, skip_invalid=True, invalid_rows_path=out)
    assert len(ds) == 2039 and ds.task == "classification"
    assert len(ds.invalid_rows) == 11
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 11 and rows[0]["line"] == "61"
    assert all(r["reason"] for r in rows)
    # Served from the cache, a run without skip_invalid still stops on the same row.
    with pytest.raises(InvalidSmilesError, match=r"line 61"):
        load_dataset("bbbp", root=root)


def test_target_subset(moleculenet_root) -> None:
    root = moleculenet_root("clintox")
    ds = load_dataset("clintox", root=root, skip_invalid=True)
    assert ds.target_names == ["FDA_APPROVED", "CT_TOX"] and len(ds) == 1480
    sub = load_dataset("clintox", root=root, skip_invalid=True, target_columns=["CT_TOX"])
    assert sub.target_names == ["CT_TOX"] and torch.equal(sub.y[:, 0], ds.y[:, 1])
    with pytest.raises(DataError, match="unknown target column 'tox'.*'CT_TOX'"):
        load_dataset("clintox", root=root, skip_invalid=True, target_columns=["tox"])


def test_download_failure_is_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, folder: str, log: bool = True) -> str:
        Path(folder, "partial.csv").write_text("half")
        raise OSError("network unreachable")

    monkeypatch.setattr(download_mod, "download_url", offline)
    root = tmp_path / "data"
    with pytest.raises(
        DataError,
        match=r"delaney-processed\.csv: raw file for ESOL is missing "
        r"and downloading https://\S+ failed .*offline",
    ):
        load_dataset("esol", root=root)
    assert not root.exists()  # the folders it made are gone too


def test_download_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy_moleculenet
) -> None:
    src = copy_moleculenet(tmp_path / "src", "esol") / "esol" / "raw" / "delaney-processed.csv"
    calls = []

    def fake(url: str, folder: str, log: bool = True) -> str:
        calls.append(url)
        dest = Path(folder, url.rsplit("/", 1)[1])
        dest.write_bytes(src.read_bytes())
        return str(dest)

    monkeypatch.setattr(download_mod, "download_url", fake)
    root = tmp_path / "data"
    assert len(load_dataset("esol", root=root)) == 1128
    assert calls == [registry_mod.KNOWN_DATASETS["esol"].url]
    assert sorted(p.name for p in (root / "esol" / "raw").iterdir()) == ["delaney-processed.csv"]
    load_dataset("esol", root=root)  # present now: no second download
    assert len(calls) == 1


def test_data_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KANGNN_DATA", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.setenv("KANGNN_DATA", "")
    default = resolve_data_root(None)
    monkeypatch.delenv("KANGNN_DATA")
    assert resolve_data_root(None) == default
    if (REPO / "data").is_dir() and os.access(REPO / "data", os.W_OK):
        assert default == REPO / "data"
    # An installed package (no checkout around it) falls back to the user cache.
    monkeypatch.setattr(
        registry_mod, "__file__", str(tmp_path / "site" / "kangnn" / "data" / "x.py")
    )
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_root(None) == tmp_path / "cache" / "kangnn" / "data"


def test_env_root_is_used(moleculenet_root, monkeypatch: pytest.MonkeyPatch) -> None:
    root = moleculenet_root("esol")
    monkeypatch.setenv("KANGNN_DATA", str(root))
    assert len(load_dataset("esol")) == 1128


# ------------------------------------------------------------------------------------------
# Splits


def test_scaffold_helper() -> None:
    assert scaffold("Cc1ccccc1O") == "c1ccccc1"
    assert scaffold("CCO") == "" and scaffold("CC(=O)[O-].[Na+]") == ""
    assert scaffold("c1ccccc1CCC1CC1") == "c1ccc(CCC2CC2)cc1"


def test_scaffold_split_follows_ogb_procedure() -> None:
    smiles = ["c1ccccc1C", "C1CCCCC1O", "c1ccccc1O", "C1CCCCC1N", "CCO", "C1CC1"]
    # Groups: benzene [0, 2], cyclohexane [1, 3], cyclopropane [5], acyclic "" [4]. Sorted by
    # (size, first index) descending: cyclohexane, benzene, cyclopropane, "". Cut-offs 3, 4.5.
    split = make_split(smiles, "scaffold", sizes=(0.5, 0.25, 0.25))
    assert split == {"train": [1, 3, 5], "val": [0, 2], "test": [4]}


def assert_leak_free(smiles: list[str], split: dict[str, list[int]]) -> None:
    parts = [set(split[p]) for p in ("train", "val", "test")]
    assert sum(len(p) for p in parts) == len(smiles)
    assert set().union(*parts) == set(range(len(smiles)))
    owner: dict[str, str] = {}
    for name in ("train", "val", "test"):
        for i in split[name]:
            s = scaffold(smiles[i])
            assert owner.setdefault(s, name) == name, f"scaffold {s!r} in {owner[s]} and {name}"


def test_scaffold_split_esol(esol: MoleculeDataset) -> None:
    split = make_split(esol, "scaffold")
    n = len(esol)
    sizes = [len(split[p]) / n for p in ("train", "val", "test")]
    assert sizes[0] == pytest.approx(0.8, abs=0.02)
    assert sizes[1] == pytest.approx(0.1, abs=0.02)
    assert sizes[2] == pytest.approx(0.1, abs=0.02)
    assert len(split["train"]) <= 0.8 * n
    assert_leak_free(esol.smiles, split)
    assert make_split(esol, "scaffold", seed=123) == split  # deterministic, seed ignored


def test_balanced_scaffold_split(esol: MoleculeDataset) -> None:
    a = make_split(esol, "balanced_scaffold", seed=0)
    assert make_split(esol, "balanced_scaffold", seed=0) == a
    b = make_split(esol, "balanced_scaffold", seed=1)
    assert a != b
    for split in (a, b):
        assert_leak_free(esol.smiles, split)
        assert len(split["train"]) / len(esol) == pytest.approx(0.8, abs=0.03)


def test_random_split(esol: MoleculeDataset) -> None:
    a = make_split(esol, "random", seed=0)
    assert make_split(esol, "random", seed=0) == a
    assert make_split(esol, "random", seed=1) != a
    # Cuts at floor(0.8 n) and floor(0.9 n).
    assert [len(a[p]) for p in ("train", "val", "test")] == [902, 113, 113]
    assert sorted(a["train"] + a["val"] + a["test"]) == list(range(len(esol)))
    c = make_split(list("C" * 10), "random", sizes=(0.7, 0.2, 0.1))
    assert [len(c[p]) for p in ("train", "val", "test")] == [7, 2, 1]


def test_split_errors() -> None:
    # One scaffold group larger than the train cut-off goes to test (OGB/DeepChem behaviour).
    same_scaffold = ["c1ccccc1C", "c1ccccc1O", "c1ccccc1N"]
    with pytest.raises(
        DataError,
        match=r"scaffold split with sizes \[0\.8, 0\.1, 0\.1\] of 3 "
        r"molecules leaves the train part empty",
    ):
        make_split(same_scaffold, "scaffold")
    with pytest.raises(DataError, match="random split .* leaves the val part empty"):
        make_split(["C", "CC", "CCC"], "random", sizes=(0.9, 0.05, 0.05))
    with pytest.raises(DataError, match=r"sizes \[0\.8, 0\.1, 0\.2\] must sum to 1"):
        make_split(same_scaffold, "random", sizes=(0.8, 0.1, 0.2))
    with pytest.raises(DataError, match="three non-negative fractions"):
        make_split(same_scaffold, "random", sizes=(0.9, 0.1))
    with pytest.raises(DataError, match="unknown split method 'kfold'; valid: scaffold"):
        make_split(same_scaffold, "kfold")


def test_split_save_load(tmp_path: Path, esol: MoleculeDataset) -> None:
    split = make_split(esol, "scaffold")
    path = save_split(split, tmp_path / "split.json", n=len(esol), meta={"method": "scaffold"})
    assert load_split(path, n=len(esol)) == split
    assert load_split(path) == split
    assert json.loads(path.read_text())["meta"] == {"method": "scaffold"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split.json"]
    with pytest.raises(DataError, match=r"split\.json: split was made for 1128 molecules"):
        load_split(path, n=100)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("{not json", r"line 1: not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"train": [0], "val": [1]}', "split has no 'test' list"),
        ('{"train": [0], "val": [1], "test": []}', "the test part is empty"),
        ('{"train": [0, 1], "val": [1], "test": [2]}', "index 1 is in both 'train' and 'val'"),
        ('{"train": [0, 0], "val": [1], "test": [2]}', "index 0 is twice in 'train'"),
        ('{"train": [0], "val": [1], "test": [9]}', "'test' index 9 is out of range"),
        ('{"train": [0], "val": [-1], "test": [2]}', "'val' index -1 is out of range"),
        ('{"train": [0], "val": ["1"], "test": [2]}', "non-integer index '1'"),
    ],
)
def test_load_split_errors(tmp_path: Path, content: str, pattern: str) -> None:
    path = write(tmp_path / "split.json", content)
    with pytest.raises(DataError, match=r"split\.json.*" + pattern):
        load_split(path, n=5)


def test_load_split_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"none\.json: split file not found"):
        load_split(tmp_path / "none.json")


# ------------------------------------------------------------------------------------------
# Target scaling


def test_scaler_fit_on_train_only(esol: MoleculeDataset) -> None:
    split = make_split(esol, "scaffold")
    y = esol.y
    scaler = TargetScaler().fit(y[split["train"]])
    train = y[split["train"]].double()
    assert scaler.mean[0] == pytest.approx(float(train.mean()))
    assert scaler.std[0] == pytest.approx(float(train.std(unbiased=False)))
    assert scaler.mean[0] != pytest.approx(float(y.double().mean()), abs=1e-6)
    z = scaler.transform(y[split["train"]])
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(z.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    assert torch.allclose(scaler.inverse_transform(scaler.transform(y)), y, atol=1e-5)


def test_scaler_nan_and_state() -> None:
    y = torch.tensor(
        [[1.0, 5.0, float("nan")], [3.0, 5.0, float("nan")], [float("nan"), 5.0, float("nan")]]
    )
    scaler = TargetScaler().fit(y)
    assert scaler.mean == [2.0, 5.0, 0.0] and scaler.std == [1.0, 1.0, 1.0]
    z = scaler.transform(y)
    assert torch.isnan(z[2, 0]) and z[0, 0] == -1.0 and z[1, 0] == 1.0
    state = json.loads(json.dumps(scaler.state_dict()))
    again = TargetScaler.from_state_dict(state)
    assert again.mean == scaler.mean and again.std == scaler.std
    pred = torch.tensor([[0.5, -1.0, 2.0]])
    assert torch.allclose(again.inverse_transform(pred), torch.tensor([[2.5, 4.0, 2.0]]))
    with pytest.raises(RuntimeError, match="not fitted"):
        TargetScaler().transform(y)
    with pytest.raises(ValueError, match="fitted on 3 tasks"):
        scaler.transform(torch.zeros(2, 2))
