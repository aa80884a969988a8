"""MoleculeGNN and the parameter matching of its MLP baseline."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.loader import DataLoader

from kangnn.data import feature_dims, smiles_to_graph
from kangnn.kan import KANLinear
from kangnn.models import (
    CONV_REGISTRY,
    MoleculeGNN,
    ParameterMatchError,
    build_model,
    match_mlp,
    model_kwargs,
)
from kangnn.nn import MLPFunction
from kangnn.utils import count_parameters

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "C", "ClC(Cl)(Cl)Cl", "OCC1OC(O)C(O)C(O)C1O"]
ATOM_DIMS, BOND_DIMS = feature_dims("ogb")
SMALL = dict(hidden_channels=16, num_layers=2, grid_size=3, spline_order=3, function_layers=2)


@pytest.fixture(scope="module")
def batch():
    graphs = []
    for i, s in enumerate(SMILES):
        g = smiles_to_graph(s)
        g.y = torch.tensor([[float(i), float("nan")]])
        graphs.append(g)
    return next(iter(DataLoader(graphs, batch_size=len(graphs))))


@pytest.mark.parametrize("conv", sorted(CONV_REGISTRY))
def test_mlp_baseline_matches_kan_parameters_within_5_percent(conv):
    kwargs = dict(conv=conv, **SMALL)
    match = match_mlp(kwargs, ATOM_DIMS, BOND_DIMS, num_tasks=2)
    kan = MoleculeGNN(ATOM_DIMS, BOND_DIMS, 2, function="kan", **kwargs)
    mlp = MoleculeGNN(
        ATOM_DIMS,
        BOND_DIMS,
        2,
        function="mlp",
        **{**kwargs, "function_hidden_channels": match.mlp_hidden_channels},
    )
    assert match.kan_params == count_parameters(kan)
    assert match.mlp_params == count_parameters(mlp)
    assert abs(match.mlp_params - match.kan_params) / match.kan_params <= 0.05
    assert match.matched and match.mlp_hidden_channels > match.kan_hidden_channels
    # Same architecture: only the functions differ, the encoders and norms are identical.
    shared = ("atom_encoder", "bond_encoder", "norms", "out_norm", "graph_norm")
    for name in shared:
        a, b = getattr(kan, name), getattr(mlp, name)
        assert (a is None) == (b is None)
        if a is not None:
            assert count_parameters(a) == count_parameters(b)
    assert any(isinstance(m, KANLinear) for m in kan.modules())
    assert not any(isinstance(m, KANLinear) for m in mlp.modules())
    assert isinstance(mlp.head, MLPFunction)


def test_matching_fails_loudly_without_a_hidden_width():
    with pytest.raises(ParameterMatchError, match="5%"):
        match_mlp(dict(conv="gin", **{**SMALL, "function_layers": 1}), ATOM_DIMS, BOND_DIMS, 1)


def test_fixed_mlp_width_is_not_matched():
    match = match_mlp(dict(conv="gin", **SMALL), ATOM_DIMS, BOND_DIMS, 1, mlp_hidden_channels=7)
    assert not match.matched and match.mlp_hidden_channels == 7


@pytest.mark.parametrize("conv", sorted(CONV_REGISTRY))
@pytest.mark.parametrize("function", ["kan", "mlp"])
def test_forward_on_a_dataloader_batch(batch, conv, function):
    torch.manual_seed(0)
    model = MoleculeGNN(ATOM_DIMS, BOND_DIMS, 2, conv=conv, function=function, dropout=0.1, **SMALL)
    model.train()
    out = model(batch)
    assert out.shape == (batch.num_graphs, 2)
    assert torch.isfinite(out).all()
    out.pow(2).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch), model(batch))  # no dropout in eval


@pytest.mark.parametrize("readout", ["sum", "mean", "max"])
@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_readouts_and_norms(batch, readout, norm):
    model = MoleculeGNN(ATOM_DIMS, BOND_DIMS, 1, conv="gine", readout=readout, norm=norm, **SMALL)
    model.eval()
    out = model(batch)
    assert out.shape == (batch.num_graphs, 1) and torch.isfinite(out).all()


def test_graph_order_does_not_matter(batch):
    # Predictions are per molecule: the same molecule in another batch gets the same output.
    model = MoleculeGNN(ATOM_DIMS, BOND_DIMS, 1, conv="gin", norm="layer", **SMALL).eval()
    graphs = batch.to_data_list()
    single = torch.cat([model(next(iter(DataLoader([g], batch_size=1)))) for g in graphs])
    torch.testing.assert_close(single, model(batch), rtol=1e-4, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown conv"):
        MoleculeGNN(ATOM_DIMS, BOND_DIMS, 1, conv="gcn")
    with pytest.raises(ValueError, match="unknown readout"):
        MoleculeGNN(ATOM_DIMS, BOND_DIMS, 1, readout="attention")
    with pytest.raises(ValueError, match="columns"):
        MoleculeGNN(ATOM_DIMS, BOND_DIMS, 1, **SMALL).atom_encoder(
            torch.zeros(3, 2, dtype=torch.long)
        )


def test_build_model_from_config_section():
    from kangnn.config import default_config

    cfg = default_config().model
    cfg.merge_with(dict(conv="gated", function="mlp", **SMALL))
    model, match = build_model(cfg, ATOM_DIMS, BOND_DIMS, 1)
    assert model.function == "mlp"
    assert model.function_hidden_channels == match.mlp_hidden_channels
    assert count_parameters(model) == match.mlp_params
    assert model_kwargs(cfg)["function_hidden_channels"] is None  # null = to be matched


def test_regularization_loss_is_zero_for_mlp_and_positive_for_kan():
    kan = MoleculeGNN(ATOM_DIMS, BOND_DIMS, 1, function="kan", **SMALL)
    mlp = MoleculeGNN(ATOM_DIMS, BOND_DIMS, 1, function="mlp", **SMALL)
    assert float(kan.regularization_loss().detach()) > 0
    assert float(mlp.regularization_loss().detach()) == 0


def test_init_grids_covers_the_inputs_and_keeps_the_parameters(batch):
    # Ten copies of each molecule: enough rows for the 1% / 99% quantiles to be the extremes.
    batch = next(iter(DataLoader(batch.to_data_list() * 10, batch_size=10 * batch.num_graphs)))
    torch.manual_seed(0)
    model = MoleculeGNN(ATOM_DIMS, BOND_DIMS, 2, conv="gin", function="kan", **SMALL)
    params = {k: v.clone() for k, v in model.named_parameters()}
    stats = {k: v.clone() for k, v in model.named_buffers() if "running" in k}
    updated = model.init_grids(batch)
    for k, v in model.named_parameters():
        torch.testing.assert_close(v, params[k])  # only the grids moved
    for k, v in model.named_buffers():
        if k in stats:
            torch.testing.assert_close(v, stats[k])  # batch-norm statistics restored
    seen = {}

    def record(name):
        def hook(mod, args, out):
            seen[name] = args[0].detach().clone()  # returns None: the output is left alone

        return hook

    hooks = [
        m.register_forward_hook(record(n))
        for n, m in model.named_modules()
        if isinstance(m, KANLinear)
    ]
    model.train()
    model(batch)
    for h in hooks:
        h.remove()
    assert updated == len(seen) > 0
    for name, m in model.named_modules():
        if name in seen:
            x = seen[name]
            lo, hi = m.basis.lo, m.basis.hi
            # Fitted to the data: inside its range, and covering nearly all of it. The head's
            # inputs hold ten copies of each molecule, so a sixth of them sit on an extreme that
            # the fitted bound matches only to round-off (machine-dependent): 1e-5 in both checks.
            assert (lo >= x.min(0).values - 1e-5).all() and (hi <= x.max(0).values + 1e-5).all()
            inside = (x >= lo - 1e-5) & (x <= hi + 1e-5)
            assert inside.float().mean() >= 0.9, name
    mlp = MoleculeGNN(ATOM_DIMS, BOND_DIMS, 2, conv="gin", function="mlp", **SMALL)
    assert mlp.init_grids(batch) == 0
