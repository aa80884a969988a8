"""Whole-molecule descriptors: RDKit values, the quantile normalisation, the model head input,
training and prediction end to end, and chemprop seeing the same inputs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import Descriptors
from scipy.stats import norm
from tiny import tiny_config
from torch_geometric.data import Batch

from kangnn.config import ConfigError
from kangnn.data import smiles_to_graph
from kangnn.data.descriptors import (
    add_descriptors,
    cached_descriptors,
    compute_descriptors,
    descriptor_names,
)
from kangnn.models import MoleculeGNN, match_mlp
from kangnn.models.descriptors import QuantileNormal
from kangnn.train.data import PreparedData, prepare_data
from kangnn.train.predict import predict_csv
from kangnn.train.run import load_run, train

ESOL_ROWS = 80


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KANGNN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def esol_root(esol_subset) -> Path:
    return esol_subset(ESOL_ROWS)


def _config(root: Path, out: Path, *extra: str):
    return tiny_config(root, out, "dataset.descriptors=rdkit2d", *extra)


# ----------------------------------------------------------------------------- values


def test_descriptors_are_rdkits_values_in_descList_order():
    smiles = ["CCO", "c1ccccc1O", "[Na+].[Cl-]"]
    x = compute_descriptors(smiles)
    names = descriptor_names()
    assert x.shape == (3, len(Descriptors.descList)) and x.dtype == torch.float32
    assert names == [n for n, _ in Descriptors.descList]
    for row, s in zip(x, smiles, strict=True):
        mol = Chem.MolFromSmiles(s)
        for key in ("MolLogP", "MolWt", "TPSA", "NumHDonors", "RingCount"):
            want = getattr(Descriptors, key)(mol)
            assert row[names.index(key)].item() == pytest.approx(want, rel=1e-6, abs=1e-6)


def test_unparsable_smiles_and_unknown_set():
    x = compute_descriptors(["CCO", "C1CC"])  # an unclosed ring: RDKit returns None
    assert torch.isfinite(x[0]).any() and torch.isnan(x[1]).all()
    with pytest.raises(ValueError, match="unknown descriptor set 'morgan'.*rdkit2d"):
        compute_descriptors(["CCO"], "morgan")


def test_cache_round_trip_and_key(tmp_path):
    a = cached_descriptors(["CCO", "CCN"])
    files = list((tmp_path / "cache" / "descriptors").glob("rdkit2d-*.pt"))
    assert len(files) == 1
    torch.testing.assert_close(cached_descriptors(["CCO", "CCN"]), a, equal_nan=True)
    cached_descriptors(["CCN", "CCO"])  # another molecule order is another key
    assert len(list(files[0].parent.glob("*.pt"))) == 2
    files[0].write_bytes(b"not a tensor")  # unreadable: computed again
    torch.testing.assert_close(cached_descriptors(["CCO", "CCN"]), a, equal_nan=True)


# ----------------------------------------------------------------------------- normalisation


def _reference(train: np.ndarray, x: np.ndarray, probs: np.ndarray, p_min: float) -> np.ndarray:
    """Element by element: the mean probability of the quantiles equal to x (a tied run), else
    the linear interpolation between the quantiles around x; then the normal quantile."""
    out = np.empty_like(x)
    for d in range(x.shape[1]):
        q = np.nanquantile(train[:, d], probs)
        for n, v in enumerate(x[:, d]):
            if (q == v).any():
                p = probs[q == v].mean()
            elif v < q[0] or v > q[-1]:
                p = float(v > q[-1])
            else:
                i = np.nonzero(q < v)[0][-1]
                p = probs[i] + (v - q[i]) / (q[i + 1] - q[i]) * (probs[i + 1] - probs[i])
            out[n, d] = norm.ppf(np.clip(p, p_min, 1 - p_min))
    return out


def test_quantile_normal_matches_a_numpy_oracle():
    g = torch.Generator().manual_seed(0)
    train = torch.cat(
        [
            torch.randn(500, 1, generator=g).exp() * 1e6,  # heavy-tailed
            torch.randint(0, 4, (500, 1), generator=g).double(),  # discrete: tied quantiles
            torch.rand(500, 1, generator=g),
        ],
        dim=1,
    ).double()
    x = torch.cat([train[:50], torch.tensor([[-1.0, -1.0, -1.0], [1e9, 9.0, 2.0]])]).double()
    qn = QuantileNormal(3).double().fit(train)
    got = qn(x).numpy()
    want = _reference(train.numpy(), x.numpy(), qn.probs.double().numpy(), qn.p_min)
    np.testing.assert_allclose(got, want, atol=1e-6)
    # a tied value lands in the middle of its run: the discrete column's median class near 0
    assert np.abs(got[:, 1]).max() < 2.6 and abs(got[-1, 0] - norm.ppf(0.995)) < 1e-9


def test_quantile_normal_missing_values_state_dict_and_errors():
    train = torch.tensor([[1.0, float("nan")], [2.0, float("nan")], [3.0, float("nan")]])
    qn = QuantileNormal(2)
    with pytest.raises(RuntimeError, match="not fitted"):
        qn(train)
    qn.fit(train)
    out = qn(torch.tensor([[float("nan"), 5.0], [2.0, float("nan")]]))
    assert out[0, 0] == 0 and out[1, 1] == 0 and out[1, 0] == pytest.approx(0.0, abs=1e-6)
    assert out[0, 1] == 0  # an all-missing training column carries no information
    const = QuantileNormal(1).fit(torch.zeros(5, 1))
    assert torch.equal(const(torch.tensor([[0.0], [3.0]])), torch.zeros(2, 1))
    other = QuantileNormal(2)
    other.load_state_dict(qn.state_dict())
    torch.testing.assert_close(other(train), qn(train))
    with pytest.raises(ValueError, match=r"shape \[N, 2\], got \(3, 3\)"):
        qn(torch.zeros(3, 3))


# ----------------------------------------------------------------------------- model


def _graphs(smiles: list[str]) -> list:
    x = compute_descriptors(smiles)
    graphs = []
    for s, row in zip(smiles, x, strict=True):
        g = smiles_to_graph(s, "ogb")
        g.descriptors = row.unsqueeze(0)
        graphs.append(g)
    return graphs


@pytest.mark.parametrize("function", ["kan", "mlp"])
def test_the_head_sees_the_descriptors_and_batches_equal_one_by_one(function):
    from kangnn.data import feature_dims

    smiles = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "C"]
    graphs = _graphs(smiles)
    atom, bond = feature_dims("ogb")
    d = len(descriptor_names())
    torch.manual_seed(0)
    model = MoleculeGNN(
        atom,
        bond,
        1,
        conv="gine",
        function=function,
        hidden_channels=16,
        num_layers=2,
        grid_size=3,
        num_descriptors=d,
    )
    model.fit_descriptors(torch.cat([g.descriptors for g in graphs]))
    model.eval()
    batch = Batch.from_data_list(graphs)
    out = model(batch)
    one = torch.cat([model(Batch.from_data_list([g])) for g in graphs])
    torch.testing.assert_close(out, one, atol=1e-5, rtol=1e-5)
    changed = batch.clone()
    changed.descriptors = changed.descriptors.flip(0)
    assert not torch.allclose(model(changed), out)
    del batch.descriptors
    with pytest.raises(ValueError, match="num_descriptors=.* has no `descriptors`"):
        model(batch)


def test_parameter_matching_counts_the_descriptor_input():
    from kangnn.data import feature_dims

    atom, bond = feature_dims("chemprop")
    kwargs = dict(
        conv="dmpnn",
        function="kan",
        hidden_channels=32,
        num_layers=3,
        grid_size=5,
        num_descriptors=len(descriptor_names()),
    )
    match = match_mlp(kwargs, atom, bond, 1)
    plain = match_mlp({**kwargs, "num_descriptors": 0}, atom, bond, 1)
    assert abs(match.rel_diff) <= 0.05 and match.kan_params > plain.kan_params


# ----------------------------------------------------------------------------- runs


def test_train_and_predict_with_descriptors(esol_root, tmp_path):
    cfg = _config(esol_root, tmp_path / "runs")
    result = train(cfg)
    _, module, _ = load_run(result.run_dir)
    qn = module.model.descriptor_norm
    assert qn is not None and bool(qn.fitted)
    # fitted on the training molecules only, and carried by the checkpoint
    data = prepare_data(cfg)
    want = QuantileNormal(qn.num_features).fit(data.descriptors("train"))
    torch.testing.assert_close(qn.quantiles, want.quantiles)
    assert not torch.equal(
        qn.quantiles, QuantileNormal(qn.num_features).fit(data.descriptors()).quantiles
    )
    # predicting the test molecules from a CSV gives the run's own test predictions
    with open(result.run_dir / "predictions.csv", newline="") as f:
        rows = list(csv.reader(f))
    src = tmp_path / "in.csv"
    src.write_text("smiles\n" + "".join(f"{r[1]}\n" for r in rows[1:]))
    predict_csv(result.run_dir, src, tmp_path / "out.csv")
    with open(tmp_path / "out.csv", newline="") as f:
        got = [float(r[-1]) for r in list(csv.reader(f))[1:]]
    np.testing.assert_allclose(got, [float(r[-1]) for r in rows[1:]], rtol=1e-4, atol=1e-4)


def test_a_subset_view_gets_the_descriptors_of_its_molecules(esol_root, tmp_path):
    data = prepare_data(_config(esol_root, tmp_path))
    sub = data.dataset[[5, 2, 7]]
    add_descriptors(sub)  # attached to the whole storage, so the view stays consistent
    torch.testing.assert_close(
        sub[0].descriptors, compute_descriptors([data.dataset.smiles[5]]), equal_nan=True
    )
    # a prepared subset: parts index the view, descriptors follow
    view = PreparedData(sub, {"train": [1, 2], "val": [0], "test": []}, None, 0)
    want = compute_descriptors([data.dataset.smiles[i] for i in (5, 2, 7)])
    torch.testing.assert_close(view.descriptors(), want, equal_nan=True)
    torch.testing.assert_close(view.descriptors("train"), want[1:], equal_nan=True)


def test_unknown_descriptor_set_is_a_config_error(esol_root, tmp_path):
    with pytest.raises(ConfigError, match="dataset.descriptors.*'morgan' is not one of rdkit2d"):
        from kangnn.config import validate_config

        validate_config(_config(esol_root, tmp_path, "dataset.descriptors=morgan"))


def test_chemprop_gets_the_same_descriptor_inputs(esol_root, tmp_path):
    pytest.importorskip("chemprop", exc_type=ImportError)
    from kangnn.train.chemprop import _descriptor_inputs, train_chemprop

    small = [
        "dataset.features=chemprop",
        "chemprop.epochs=2",
        "chemprop.message_hidden_dim=16",
        "chemprop.ffn_hidden_dim=16",
    ]
    cfg = _config(esol_root, tmp_path, *small)
    data = prepare_data(cfg)
    x_d = _descriptor_inputs(data)
    model = MoleculeGNN([2], [2], 1, num_descriptors=x_d.shape[1])
    model.fit_descriptors(data.descriptors("train"))
    full = data.descriptors()
    np.testing.assert_allclose(x_d, model.descriptor_norm(full).double().numpy(), atol=1e-6)
    with_d = train_chemprop(cfg, tmp_path / "cp1", data=data)
    without = train_chemprop(tiny_config(esol_root, tmp_path, *small), tmp_path / "cp2")
    # chemprop's FFN takes the D extra inputs: D x ffn_hidden_dim more weights
    assert with_d["params"] - without["params"] == x_d.shape[1] * 16
