"""The D-MPNN layer (KANDMPNNConv), its place in MoleculeGNN, and the chemprop feature set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor
from torch_geometric.data import Batch, Data

from kangnn.config import ConfigError, load_config
from kangnn.data import feature_dims, feature_names, load_dataset, smiles_to_graph
from kangnn.models import MoleculeGNN, match_mlp
from kangnn.nn import KANDMPNNConv, reverse_edge_index
from kangnn.utils import count_parameters

C, D = 6, 3  # atom and bond feature widths of the layer tests


@pytest.fixture(autouse=True, scope="module")
def _eager_kan():
    # The fused B-spline kernels are checked against the eager path in test_kan.py; their first
    # compile in a process takes 10-20 s, so this file runs the eager path and stays fast.
    from kangnn.kan import fused

    saved = fused._state["enabled"]
    fused.set_fused(False)
    yield
    fused.set_fused(saved)


MOLECULES = ["CC(=O)O", "c1ccc(O)cc1", "NC1CC1"]  # chain, aromatic ring, small ring


def layer(function: str, dtype=torch.float64, **kw) -> KANDMPNNConv:
    torch.manual_seed(0)
    kw = {"num_layers": 2, "hidden_channels": 5, "grid_size": 3, **kw}
    if function == "mlp":
        kw.pop("grid_size", None)
    return KANDMPNNConv(C, 4, D, function=function, message_channels=7, **kw).to(dtype)


def inputs(smiles: str, dtype=torch.float64, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """The bond graph of a real molecule with random atom and (per direction) bond features."""
    g = smiles_to_graph(smiles)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(g.num_nodes, C, generator=gen, dtype=dtype) * 2 - 1
    e = torch.rand(g.num_edges, D, generator=gen, dtype=dtype) * 2 - 1
    return x, g.edge_index, e


def reference(conv: KANDMPNNConv, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
    """The D-MPNN written out bond by bond: the message into v -> w sums the states of the
    bonds k -> v with k != w (no reverse index, no scatter, no decomposition)."""
    edges = [tuple(e) for e in edge_index.t().tolist()]
    act = torch.relu
    a = [conv.input_fn(torch.cat([x[v], edge_attr[b]])[None])[0] for b, (v, _) in enumerate(edges)]
    h = [act(ab) for ab in a]
    for _ in range(conv.depth - 1):
        new = []
        for b, (v, w) in enumerate(edges):
            m = x.new_zeros(conv.message_channels)
            for c, (k, target) in enumerate(edges):
                if target == v and k != w:
                    m = m + h[c]
            new.append(act(a[b] + conv.hidden_fn(m[None])[0]))
        h = new
    out = []
    for v in range(x.size(0)):
        m = x.new_zeros(conv.message_channels)
        for c, (_, target) in enumerate(edges):
            if target == v:
                m = m + h[c]
        out.append(act(conv.output_fn(torch.cat([x[v], m])[None])[0]))
    return torch.stack(out)


def grads(conv, out, *tensors):
    w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    params = [p for p in conv.parameters()]
    return torch.autograd.grad((out * w).sum(), [*tensors, *params], allow_unused=True)


# --------------------------------------------------------------------- the reference oracle


@pytest.mark.parametrize("function", ["kan", "mlp"])
@pytest.mark.parametrize("decompose", [True, False])
def test_equals_the_per_bond_reference_loop(function, decompose):
    conv = layer(function, decompose=decompose)
    for smiles in MOLECULES:
        x, edge_index, e = inputs(smiles)
        x.requires_grad_(True)
        e.requires_grad_(True)
        out = conv(x, edge_index, e)
        ref = reference(conv, x, edge_index, e)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
        assert out.abs().sum() > 0
        for g, r in zip(grads(conv, out, x, e), grads(conv, ref, x, e), strict=True):
            torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_every_depth_equals_the_reference(depth):
    conv = layer("kan", depth=depth, num_layers=1)
    x, edge_index, e = inputs("CC(N)C(=O)O")
    torch.testing.assert_close(conv(x, edge_index, e), reference(conv, x, edge_index, e))


def test_bond_states_and_aggregated_messages():
    conv = layer("mlp")
    x, edge_index, e = inputs("c1ccccc1C")
    h = conv.bond_states(x, edge_index, e)
    m = conv.aggregated_messages(x, edge_index, e)
    assert h.shape == (edge_index.size(1), 7) and m.shape == (x.size(0), 7)
    want = torch.zeros_like(m).index_add_(0, edge_index[1], h)
    torch.testing.assert_close(m, want)
    torch.testing.assert_close(
        conv(x, edge_index, e), conv.act(conv.output_fn(torch.cat([x, m], -1)))
    )


# ------------------------------------------------------------------ batches, no bonds, order


@pytest.mark.parametrize("function", ["kan", "mlp"])
def test_batch_equals_one_by_one(function):
    conv = layer(function, dtype=torch.float32).eval()
    smiles = ["CCO", "C", "[Na+].[Cl-]", "CC(=O)[O-].[Na+]", "c1ccccc1", "O=C=O"]
    graphs = []
    for i, s in enumerate(smiles):
        x, edge_index, e = inputs(s, torch.float32, seed=i)
        graphs.append(Data(x=x, edge_index=edge_index, edge_attr=e))
    batch = Batch.from_data_list(graphs)
    out = conv(batch.x, batch.edge_index, batch.edge_attr)
    single = torch.cat([conv(g.x, g.edge_index, g.edge_attr) for g in graphs])
    torch.testing.assert_close(out, single, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("smiles", ["C", "[Na+].[Cl-]"])
def test_molecules_without_bonds(smiles):
    conv = layer("kan")
    x, edge_index, e = inputs(smiles)
    assert edge_index.size(1) == 0 and e.shape == (0, D)
    x.requires_grad_(True)
    out = conv(x, edge_index, e)
    zeros = x.new_zeros(x.size(0), 7)
    torch.testing.assert_close(out, torch.relu(conv.output_fn(torch.cat([x, zeros], -1))))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    # and without edge_attr at all: with no edges there is nothing to miss
    torch.testing.assert_close(conv(x, edge_index), out)


def test_fragments_do_not_interact():
    conv = layer("mlp")
    x, edge_index, e = inputs("CCO.[Na+].c1ccccc1")
    out = conv(x, edge_index, e)
    parts = [("CCO", 0, 3), ("[Na+]", 3, 4), ("c1ccccc1", 4, 10)]
    bonds = 0
    for s, lo, hi in parts:
        n_bonds = smiles_to_graph(s).num_edges
        sub = conv(
            x[lo:hi], edge_index[:, bonds : bonds + n_bonds] - lo, e[bonds : bonds + n_bonds]
        )
        torch.testing.assert_close(out[lo:hi], sub)
        bonds += n_bonds


def test_edge_order_does_not_matter():
    # Shuffled bonds take the sort-based reverse index; the atoms' outputs stay the same.
    conv = layer("kan")
    x, edge_index, e = inputs("CC(=O)Nc1ccc(O)cc1")
    perm = torch.randperm(edge_index.size(1), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(conv(x, edge_index[:, perm], e[perm]), conv(x, edge_index, e))


def test_reverse_edge_index():
    paired = smiles_to_graph("CC(C)O").edge_index
    rev = reverse_edge_index(paired)
    assert torch.equal(rev, torch.tensor([1, 0, 3, 2, 5, 4]))
    perm = torch.tensor([4, 0, 5, 2, 1, 3])
    shuffled = paired[:, perm]
    rev = reverse_edge_index(shuffled)
    assert torch.equal(shuffled[:, rev], shuffled.flip(0))
    loop = torch.tensor([[0, 1, 1], [1, 0, 1]])  # a self-loop is its own reverse
    assert torch.equal(reverse_edge_index(loop), torch.tensor([1, 0, 2]))
    assert reverse_edge_index(torch.empty(2, 0, dtype=torch.long)).numel() == 0


# ----------------------------------------------------------------------------- clear errors


def test_clear_errors():
    conv = layer("kan")
    x, edge_index, e = inputs("CCO")
    with pytest.raises(ValueError, match="edge_dim=3 but edge_attr is missing"):
        conv(x, edge_index)
    with pytest.raises(ValueError, match="has 5 features but the layer was built with in_chan"):
        conv(x[:, :5], edge_index, e)
    with pytest.raises(ValueError, match=r"edge_attr must have shape \[num_edges, edge_dim=3\]"):
        conv(x, edge_index, e[:, :2])
    with pytest.raises(ValueError, match="edge_attr has 3 rows but there are 4 edges"):
        conv(x, edge_index, e[:3])
    one_way = torch.tensor([[0, 1, 1], [1, 0, 2]])
    with pytest.raises(ValueError, match=r"KANDMPNNConv: edge 2 \(1 -> 2\) has no reverse edge"):
        conv(x, one_way, e[:3])
    twice = torch.tensor([[0, 1, 0, 1, 2], [1, 0, 1, 2, 1]])
    with pytest.raises(ValueError, match=r"\(0 -> 1\) occurs more than once"):
        conv(x, twice, torch.cat([e, e[:1]]))
    with pytest.raises(ValueError, match=r"rev_index\[0\] = 0 is not the reverse of edge 0"):
        conv(x, edge_index, e, rev_index=torch.arange(4))
    with pytest.raises(ValueError, match="rev_index must have shape"):
        conv(x, edge_index, e, rev_index=torch.arange(3))
    with pytest.raises(ValueError, match="needs a \\[2, num_edges\\] edge_index tensor"):
        conv(x, torch.sparse_coo_tensor(edge_index, torch.ones(4), (3, 3)), e)
    with pytest.raises(ValueError, match="aggr='mean' is not supported"):
        KANDMPNNConv(C, 4, D, aggr="mean")
    with pytest.raises(ValueError, match="depth must be >= 1"):
        KANDMPNNConv(C, 4, D, depth=0)


# ------------------------------------------------------------------------------ MoleculeGNN

SMALL = dict(hidden_channels=16, num_layers=3, grid_size=3, function_layers=2)


def test_moleculegnn_has_one_dmpnn_of_depth_num_layers_and_matches_parameters():
    atom_dims, bond_dims = feature_dims("chemprop")
    kwargs = dict(conv="dmpnn", **SMALL)
    match = match_mlp(kwargs, atom_dims, bond_dims, num_tasks=1)
    kan = MoleculeGNN(atom_dims, bond_dims, 1, function="kan", **kwargs)
    mlp = MoleculeGNN(
        atom_dims,
        bond_dims,
        1,
        function="mlp",
        **{**kwargs, "function_hidden_channels": match.mlp_hidden_channels},
    )
    assert count_parameters(kan) == match.kan_params
    assert count_parameters(mlp) == match.mlp_params
    assert abs(match.rel_diff) <= 0.05 and match.mlp_hidden_channels > 16
    for model in (kan, mlp):
        (conv,) = model.convs
        assert isinstance(conv, KANDMPNNConv) and conv.depth == 3
    graphs = [smiles_to_graph(s, "chemprop") for s in ["CCO", "C", "[Na+].[Cl-]", "c1ccccc1N"]]
    batch = Batch.from_data_list(graphs)
    kan.eval()
    out = kan(batch)
    assert out.shape == (4, 1) and torch.isfinite(out).all()
    single = torch.cat([kan(Batch.from_data_list([g])) for g in graphs])
    torch.testing.assert_close(out, single, rtol=1e-4, atol=1e-5)
    # One residual block: the atom embedding is kept next to the D-MPNN's output, so no output
    # channel that ReLU zeroes on the training set leaves batch norm a zero variance.
    x = kan.atom_encoder(batch.x)
    e = kan.bond_encoder(batch.edge_attr)
    want = kan.out_norm(x + kan.convs[0](kan.norms[0](x), batch.edge_index, e))
    torch.testing.assert_close(kan.node_embeddings(batch), want)


def test_config_accepts_dmpnn_and_rejects_other_aggregations():
    cfg = load_config(None, ["dataset.name=esol", "model.conv=dmpnn", "dataset.features=chemprop"])
    assert cfg.model.conv == "dmpnn"
    with pytest.raises(ConfigError, match="model.aggr"):
        load_config(None, ["dataset.name=esol", "model.conv=dmpnn", "model.aggr=mean"])


# -------------------------------------------------------------------- the chemprop features

ODD = [
    "[2H]C([2H])([2H])[13CH2]O",  # isotopes
    "[125I]c1ccccc1",
    "C/C=C/C(=O)[O-].[Na+]",  # stereo bond, charges, salt
    "C[C@H](N)C(=O)O",  # chirality
    "F[S](F)(F)(F)(F)F",  # degree 6, SP3D2
    "[Fe+3].[Cl-].[Cl-].[Cl-]",
    "[U]",
    "*C",
    "C1=CC=CC=C1[N+](=O)[O-]",
]


def _esol_smiles(copy_moleculenet, tmp_path, n=300) -> list[str]:
    root = copy_moleculenet(tmp_path / "data", "esol")
    import csv

    raw = root / "esol" / "raw" / "delaney-processed.csv"
    rows = list(csv.DictReader(open(raw)))
    return [r["smiles"] for r in rows[:n]]


def test_chemprop_features_are_in_range_and_named():
    atom_dims, bond_dims = feature_dims("chemprop")
    atom_names, bond_names = feature_names("chemprop")
    assert len(atom_names) == len(atom_dims) == 8 and len(bond_names) == len(bond_dims) == 4
    for s in ODD:
        g = smiles_to_graph(s, "chemprop")
        assert g.x.shape[1] == 8 and g.edge_attr.shape[1] == 4
        assert ((g.x >= 0) & (g.x < torch.tensor(atom_dims))).all(), s
        if g.num_edges:
            assert ((g.edge_attr >= 0) & (g.edge_attr < torch.tensor(bond_dims))).all(), s
        assert torch.equal(g.edge_index, smiles_to_graph(s).edge_index)
    # isotope column: none, D (+1 from 1H), 13C (+1 from 12C), 125I (-2 from 127I)
    iso = atom_names.index("isotope")
    x = smiles_to_graph("[2H]C[13CH3]", "chemprop").x[:, iso].tolist()
    assert x == [7, 0, 7]
    assert smiles_to_graph("[125I]C", "chemprop").x[0, iso] == 4
    assert smiles_to_graph("[99I]C", "chemprop").x[0, iso] == 12  # far off: "other"


def test_chemprop_features_determine_chemprops_own(copy_moleculenet, tmp_path):
    # "At least as informative": chemprop's v2 atom and bond vectors are a function of ours.
    featurizers = pytest.importorskip("chemprop.featurizers")
    from rdkit import Chem

    atom_f = featurizers.MultiHotAtomFeaturizer.v2()
    bond_f = featurizers.MultiHotBondFeaturizer()
    seen_atoms: dict[tuple, tuple] = {}
    seen_bonds: dict[tuple, tuple] = {}
    for s in ODD + _esol_smiles(copy_moleculenet, tmp_path):
        mol = Chem.MolFromSmiles(s)
        g = smiles_to_graph(s, "chemprop")
        for atom, row in zip(mol.GetAtoms(), g.x.tolist(), strict=True):
            theirs = tuple(round(float(v), 6) for v in atom_f(atom))
            assert seen_atoms.setdefault(tuple(row), theirs) == theirs, (s, row)
        for bond, row in zip(mol.GetBonds(), g.edge_attr[0::2].tolist(), strict=True):
            theirs = tuple(int(v) for v in bond_f(bond))
            assert seen_bonds.setdefault(tuple(row), theirs) == theirs, (s, row)
    assert len(seen_atoms) > 30 and len(seen_bonds) > 5


def test_processed_cache_is_kept_per_feature_set(copy_moleculenet, tmp_path):
    root = copy_moleculenet(tmp_path / "data", "esol")
    raw = root / "esol" / "raw" / "delaney-processed.csv"
    raw.write_text("".join(raw.read_text().splitlines(keepends=True)[:101]))
    cp = load_dataset("esol", root=root, features="chemprop")
    ogb = load_dataset("esol", root=root, features="ogb")
    processed = root / "esol" / "processed"
    assert (processed / "kangnn_chemprop.pt").is_file() and (processed / "kangnn_ogb.pt").is_file()
    again = load_dataset("esol", root=root, features="chemprop")
    assert again.atom_feature_dims == feature_dims("chemprop")[0]
    for i in (0, 17, len(cp) - 1):
        a, b = cp[i], again[i]
        assert torch.equal(a.x, b.x) and torch.equal(a.edge_attr, b.edge_attr)
        assert a.x.shape[1] == 8 and ogb[i].x.shape[1] == 9
        assert torch.equal(a.x, smiles_to_graph(a.smiles, "chemprop").x)


# ------------------------------------------------------------------------- end to end (CLI)


def test_train_dmpnn_with_chemprop_features(copy_moleculenet, tmp_path, capsys):
    from kangnn.cli import main

    root = copy_moleculenet(tmp_path / "data", "esol")
    raw = root / "esol" / "raw" / "delaney-processed.csv"
    raw.write_text("".join(raw.read_text().splitlines(keepends=True)[:121]))
    out = tmp_path / "runs"
    config = tmp_path / "esol.yaml"
    config.write_text("dataset:\n  name: esol\n")
    args = [
        "train", str(config), f"dataset.root={root}", f"output_dir={out}",
        "model.conv=dmpnn", "dataset.features=chemprop", "dataset.split=random",
        "model.hidden_channels=16", "model.num_layers=3", "model.grid_size=3",
        "train.epochs=2", "train.batch_size=32", "train.threads=1",
        "train.progress_bar=false", "train.patience=0",
    ]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    (run,) = list(out.iterdir())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["params"] == metrics["param_match"]["kan_params"]
    assert abs(metrics["param_match"]["rel_diff"]) <= 0.05
    assert all(v == v and v > 0 for v in metrics["test"].values())  # finite, not NaN
    assert (Path(run) / "predictions.csv").is_file()
