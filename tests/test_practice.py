"""KAN practice: the grid-fit callback (seeded sample, refresh in place, resume, DDP sync), the
LayerNorm option of KAN functions, the spline variance share, and their config keys."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from kangnn.config import ConfigError, apply_overrides, default_config, validate_config
from kangnn.data import feature_dims, smiles_to_graph
from kangnn.kan import KANLinear, fused
from kangnn.kan.grids import fit_grids
from kangnn.models import MoleculeGNN
from kangnn.nn import KANGatedConv, KANMPNNConv, build_function
from kangnn.train.callbacks import GridFit, grid_fit_sample, sync_kan_layers
from kangnn.train.module import MoleculeModule
from kangnn.train.spline_share import naive_messages, spline_variance_share

SMILES = [
    "CCO", "CC(=O)O", "c1ccccc1", "CCN(CC)CC", "OC1CCCCC1", "CC(C)Cl", "c1ccncc1", "CCOC(=O)C",
    "C1=CC=CN=C1O", "CC(C)(C)O", "ClC(Cl)Cl", "CCCCCCO", "c1ccc2ccccc2c1", "OCC(O)CO", "CC#N",
    "CNC(=O)c1ccccc1", "CCS", "FC(F)(F)c1ccccc1", "CC(=O)Nc1ccc(O)cc1", "O=C1CCCCC1",
    "CCCBr", "COc1ccccc1", "CC=CC", "NC(=O)N", "C1CCOC1", "CCOCC", "Oc1ccccc1Cl", "CCC(=O)CC",
]  # fmt: skip
DIMS = feature_dims("ogb")
SMALL = dict(conv="mpnn", hidden_channels=8, num_layers=2, function_hidden_channels=8, grid_size=4)


@pytest.fixture(autouse=True, scope="module")
def _eager():
    # The eager KAN path: these tests are about grids and training, not the fused kernels,
    # whose first compilation would cost more than the tests themselves.
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(fused._state, "enabled", False)
        yield


@pytest.fixture(scope="module")
def molecules():
    g = torch.Generator().manual_seed(0)
    out = []
    for s in SMILES:
        d = smiles_to_graph(s)
        d.y = torch.randn(1, 1, generator=g)
        out.append(d)
    return out


def make_module(seed: int = 0, lr: float = 1e-2, **kw) -> MoleculeModule:
    torch.manual_seed(seed)
    return MoleculeModule({**SMALL, **kw}, *DIMS, num_tasks=1, task="regression", lr=lr)


def grids(module) -> list[torch.Tensor]:
    return [
        t.clone() for m in module.modules() if isinstance(m, KANLinear) for t in m.basis.buffers()
    ]


def trainer(tmp_path, epochs: int, *callbacks, **kw) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, callbacks=list(callbacks),
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        default_root_dir=str(tmp_path), **kw,
    )  # fmt: skip


# ----------------------------------------------------------------------------- the sample


def test_grid_fit_sample_is_seeded():
    a, b = grid_fit_sample(100, 10, seed=3), grid_fit_sample(100, 10, seed=3)
    assert a == b and len(set(a)) == 10 and all(0 <= i < 100 for i in a)
    assert grid_fit_sample(100, 10, seed=4) != a
    assert sorted(grid_fit_sample(7, 10, seed=0)) == list(range(7))
    assert a != list(range(10))  # not the file order
    assert GridFit(list(range(100)), 10, sample="first").sample_indices() == list(range(10))


def test_grid_fit_fits_on_the_seeded_molecules(molecules):
    """Same seed → the grids fit_grids gives on exactly those molecules; other seed → others."""
    fitted = {}
    for seed in (1, 1, 2):
        module = make_module()
        cb = GridFit(molecules, num_molecules=8, seed=seed)
        assert cb.fit(module) > 0
        fitted.setdefault(seed, []).append(grids(module))
    assert all(torch.equal(x, y) for x, y in zip(*fitted[1], strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(fitted[1][0], fitted[2][0], strict=True))
    ref = make_module()
    batch = Batch.from_data_list([molecules[i] for i in grid_fit_sample(len(molecules), 8, 1)])
    fit_grids(ref, lambda: ref(batch))
    assert all(torch.equal(x, y) for x, y in zip(grids(ref), fitted[1][0], strict=True))


def test_grid_fit_leaves_the_global_rng_alone(molecules):
    module = make_module(dropout=0.3)
    torch.manual_seed(5)
    GridFit(molecules, num_molecules=8).fit(module)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(3), after)


# ----------------------------------------------------------------------------- refresh


class GridOnly(GridFit):
    """The control: refreshes move the grids but keep the coefficients."""

    def fit(self, pl_module, refit=True):
        return super().fit(pl_module, refit=False)


def refresh_run(molecules, tmp_path, cls=GridFit):
    """Train a GINE KAN 3 epochs with a grid refresh at the start of epoch 2; what the model
    gives on the fitting molecules just before and just after the refresh, and the optimizer."""
    module = make_module(conv="gine", lr=1e-3)
    cb = cls(molecules, num_molecules=16, seed=0, refresh_every=2)
    batch = Batch.from_data_list([molecules[i] for i in cb.sample_indices()])
    seen: dict = {}

    class Snapshot(L.Callback):
        def __init__(self, key):
            self.key = key

        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 2:
                with torch.no_grad():  # train mode, as in the fit: batch norm on the sample
                    seen[self.key] = (pl_module(batch), grids(pl_module))
                opt = trainer.optimizers[0]
                seen[self.key + "_opt"] = (
                    [id(p) for g in opt.param_groups for p in g["params"]],
                    [p for p in pl_module.parameters() if "exp_avg" in opt.state[p]],
                )

    loader = DataLoader(molecules, batch_size=7, shuffle=True)
    trainer(tmp_path, 3, Snapshot("before"), cb, Snapshot("after")).fit(module, loader)
    return module, cb, seen


def test_refresh_keeps_function_and_optimizer_state(molecules, tmp_path):
    """A refresh keeps what the model computes on the fitting molecules (far better than
    moving the grids alone does), in place: the optimizer holds the model's own Parameter
    objects, with Adam's moments for every one of them."""
    module, cb, seen = refresh_run(molecules, tmp_path)
    assert cb.fitted_at == [-1, 2]
    (out0, grids0), (out1, grids1) = seen["before"], seen["after"]
    assert not all(torch.equal(a, b) for a, b in zip(grids0, grids1, strict=True))
    change = (torch.linalg.norm(out1 - out0) / torch.linalg.norm(out0)).item()
    _, _, control = refresh_run(molecules, tmp_path / "control", GridOnly)
    (c0, _), (c1, _) = control["before"], control["after"]
    control_change = (torch.linalg.norm(c1 - c0) / torch.linalg.norm(c0)).item()
    assert change < 0.1 and change < control_change / 2, (change, control_change)
    params = list(module.parameters())
    opt_ids, with_state = seen["after_opt"]
    assert sorted(opt_ids) == sorted(id(p) for p in params)
    assert len(with_state) == len(params)
    assert seen["before_opt"][0] == opt_ids


def test_refresh_schedule():
    cb = GridFit([], refresh_every=3, refresh_until=9)
    assert [e for e in range(12) if cb.refresh_due(e)] == [3, 6]
    assert not any(GridFit([]).refresh_due(e) for e in range(5))


def test_resumed_run_is_not_fitted_again(molecules, tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import ModelCheckpoint

    loader = DataLoader(molecules, batch_size=7)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = GridFit(molecules, num_molecules=8, refresh_every=2)
    trainer(tmp_path, 1, first, ckpt).fit(make_module(), loader)
    assert first.fitted_at == [-1]

    calls = []
    monkeypatch.setattr(GridFit, "fit", lambda self, m, refit: calls.append(m.current_epoch) or 1)
    resumed = GridFit(molecules, num_molecules=8, refresh_every=2)
    t = trainer(tmp_path, 3, resumed, ModelCheckpoint(dirpath=tmp_path / "ckpt2"))
    t.fit(make_module(seed=1), loader, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert calls == [2]  # no fit at the start of the resumed fit; the refresh at epoch 2 only
    assert resumed.fitted_at == [-1, 2]


# ----------------------------------------------------------------------------- DDP


def test_sync_kan_layers_copies_in_place():
    a, b = make_module(seed=0), make_module(seed=1)
    ids = {k: id(v) for k, v in a.state_dict(keep_vars=True).items()}
    a_state = {k: v.clone() for k, v in a.state_dict().items()}
    b_state = {k: v.clone() for k, v in b.state_dict().items()}

    def broadcast(obj, src=0):  # process 0 holds `b`
        assert src == 0
        return {k: b_state[k] for k in obj}

    sync_kan_layers(a, broadcast)
    kan = [n for n, m in a.named_modules() if isinstance(m, KANLinear)]
    for key, value in a.state_dict(keep_vars=True).items():
        assert id(value) == ids[key]
        if any(key.startswith(n + ".") for n in kan):
            assert torch.equal(value, b_state[key]), key
        else:
            assert torch.equal(value, a_state[key]), key  # only KAN layers are synced
    assert any(not torch.equal(a_state[k], b_state[k]) for k in a_state if ".layers." in k)


# ----------------------------------------------------------------------------- LayerNorm


@pytest.mark.parametrize("cls", [KANMPNNConv, KANGatedConv])
def test_layer_norm_keeps_decomposed_equal_to_naive(cls):
    torch.manual_seed(0)
    layers = {"message_layers": 2} if cls is KANMPNNConv else {"num_layers": 2}
    conv = cls(6, 6, edge_dim=3, hidden_channels=5, layer_norm=True, **layers).double()
    assert any(isinstance(m, torch.nn.LayerNorm) for m in conv.modules())
    x = torch.randn(9, 6, dtype=torch.float64, requires_grad=True)
    edge_index = torch.randint(0, 9, (2, 20))
    edge_attr = torch.randn(20, 3, dtype=torch.float64)
    out = conv(x, edge_index, edge_attr)
    (gx,) = torch.autograd.grad(out.square().sum(), x)
    conv.decompose = False
    ref = conv(x, edge_index, edge_attr)
    (gx_ref,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-10, atol=1e-10)


def test_layer_norm_normalises_every_layer_input_but_the_first():
    torch.manual_seed(0)
    f = build_function("kan", 4, 2, hidden_channels=6, num_layers=3, layer_norm=True)
    seen = []
    hooks = [layer.register_forward_hook(lambda m, a, o: seen.append(a[0])) for layer in f.layers]
    f(5 + 3 * torch.randn(32, 4))
    for h in hooks:
        h.remove()
    assert len(seen) == 3 and seen[0].mean().item() > 2  # the first input as given
    for x in seen[1:]:
        torch.testing.assert_close(x.mean(-1), torch.zeros(32), atol=1e-5, rtol=0)
    assert len(build_function("kan", 4, 2, num_layers=3).norms) == 0  # off by default
    with pytest.raises(ValueError, match="layer_norm only apply to function='kan'"):
        build_function("mlp", 4, 2, layer_norm=True)


def test_model_threads_kan_options_and_the_mlp_ignores_them():
    kan = MoleculeGNN(*DIMS, 1, layer_norm=True, grid_range=(-2.0, 3.0), **SMALL)
    layers = [m for m in kan.modules() if isinstance(m, KANLinear)]
    assert layers and all(torch.allclose(m.basis.lo, torch.tensor(-2.0)) for m in layers)
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in kan.modules()) > 0
    mlp = MoleculeGNN(*DIMS, 1, **{**SMALL, "function": "mlp"}, layer_norm=True)
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in mlp.modules())


# ----------------------------------------------------------------------------- spline share


def test_spline_share_oracles():
    torch.manual_seed(0)
    layer = KANLinear(5, 3)
    x = torch.randn(400, 5)
    (s,) = spline_variance_share(layer, [x])
    base = torch.nn.functional.silu(x) @ layer.base_weight.T
    spline = layer(x) - base
    var = lambda t: t.double().var(0, unbiased=False).sum().item()  # noqa: E731
    assert s.rows == 400
    assert s.var_base == pytest.approx(var(base), rel=1e-5)
    assert s.var_spline == pytest.approx(var(spline), rel=1e-5)
    assert s.share == pytest.approx(var(spline) / (var(spline) + var(base)), rel=1e-5)
    assert s.std_ratio == pytest.approx(math.sqrt(var(spline) / var(base)), rel=1e-5)
    with torch.no_grad():
        layer.spline_weight.zero_()
    assert spline_variance_share(layer, [x])[0].share == pytest.approx(0.0, abs=1e-12)
    with torch.no_grad():
        layer.spline_weight.normal_()
        layer.base_weight.zero_()
    assert spline_variance_share(layer, [x])[0].share == pytest.approx(1.0, abs=1e-12)


def test_spline_share_sees_every_layer_per_edge(molecules):
    model = make_module().model
    batch = Batch.from_data_list(molecules[:10])
    shares = {s.layer: s for s in spline_variance_share(model, [batch])}
    kan = [n for n, m in model.named_modules() if isinstance(m, KANLinear)]
    assert list(shares) == kan  # the decomposed first message layers included
    assert shares["convs.0.message_fn.layers.0"].rows == batch.num_edges
    assert shares["convs.0.update_fn.layers.0"].rows == batch.num_nodes
    assert shares["head.layers.0"].rows == 10
    assert all(0 < s.share < 1 for s in shares.values())
    assert all(conv.decompose for conv in model.convs)  # switched back
    with naive_messages(model):
        assert not any(conv.decompose for conv in model.convs)
    assert spline_variance_share(make_module(function="mlp").model, [batch]) == []


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.grid_range=[1.0,-1.0]", "model.grid_range"),
        ("model.grid_range=[0.0]", "model.grid_range"),
        ("model.grid_fit_sample=sorted", "model.grid_fit_sample"),
        ("model.grid_fit_molecules=0", "model.grid_fit_molecules"),
        ("model.grid_refresh_every=-1", "model.grid_refresh_every"),
        ("model.grid_refresh_until=-2", "model.grid_refresh_until"),
        ("model.kan_layer_norm=maybe", "model.kan_layer_norm"),
    ],
)
def test_config_errors(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        validate_config(apply_overrides(default_config(), ["dataset.name=esol", override]))
    assert "\n" not in str(err.value)


def test_train_fits_once_and_refreshes_across_a_resume(tmp_path, copy_moleculenet):
    """Through ``kangnn train``: the fit at the start and the refreshes are recorded in the
    checkpoint; the resumed run carries on refreshing and does not fit again at its start."""
    from kangnn.config import load_config
    from kangnn.train.run import train

    root = copy_moleculenet(tmp_path / "data", "esol")
    raw = root / "esol" / "raw" / "delaney-processed.csv"
    raw.write_text("".join(raw.read_text().splitlines(keepends=True)[:121]))
    cfg = load_config(
        None,
        [
            "dataset.name=esol", f"dataset.root={root}", f"output_dir={tmp_path / 'runs'}",
            "dataset.split=random", "model.hidden_channels=8", "model.num_layers=1",
            "model.grid_size=3", "model.grid_fit_molecules=32", "model.grid_refresh_every=1",
            "train.epochs=2", "train.batch_size=32", "train.threads=1",
            "train.progress_bar=false", "train.patience=0",
        ],
    )  # fmt: skip

    def fitted_at(run):
        ckpt = torch.load(run.run_dir / "checkpoints" / "last.ckpt", weights_only=False)
        return ckpt["callbacks"]["GridFit"]["fitted_at"]

    first = train(cfg)
    assert fitted_at(first) == [-1, 1]
    resumed = train(None, resume=first.run_dir, overrides=["train.epochs=3"])
    assert fitted_at(resumed) == [-1, 1, 2]
