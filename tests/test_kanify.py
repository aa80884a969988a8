"""KANs inside PyG: PyG convs with a kangnn KAN ``nn``, :class:`KANMLP`, :func:`kanify`."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch_geometric.nn import MLP, EdgeConv, GINConv, GINEConv, NNConv, PointNetConv
from torch_geometric.nn.models import GIN, PNA, AttentiveFP
from torch_geometric.utils import degree

import kangnn
from kangnn import KAN, KANMLP, KANLinear, kanify
from kangnn.models import ParameterMatchError
from kangnn.nn import KANGatedConv, KANGINConv, KANGINEConv, KANMPNNConv, MLPFunction
from kangnn.utils import count_parameters

C, D = 8, 4


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def graph():
    """Two small graphs (nodes 0-3 and 4-6), edges both ways."""
    src = torch.tensor([0, 1, 1, 2, 2, 3, 4, 5, 5, 6])
    dst = torch.tensor([1, 0, 2, 1, 3, 2, 5, 4, 6, 5])
    edge_index = torch.stack([src, dst])
    x = torch.rand(7, C) * 2 - 1
    edge_attr = torch.rand(10, D) * 2 - 1
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    return x, edge_index, edge_attr, batch


def assert_trains(module: nn.Module, out: torch.Tensor) -> None:
    """``out`` is finite and every parameter of ``module`` gets a finite gradient."""
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in module.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


# ------------------------------------------------------------------------------------------------
# 1. PyG convs with a KAN nn


def test_pyg_convs_take_a_kan() -> None:
    x, edge_index, edge_attr, _ = graph()
    pos = torch.rand(7, 3)
    aggregated = torch.zeros_like(x).index_add_(0, edge_index[1], x[edge_index[0]])
    for kan in (KAN([C, 16, 16]), KANMLP([C, 16, 16], norm=None)):
        conv = GINConv(kan, eps=0.5, train_eps=True)
        out = conv(x, edge_index)
        torch.testing.assert_close(out, kan(1.5 * x + aggregated))  # GIN's formula
        assert_trains(conv, out)
    # GINEConv reads the width of its nn to size the edge-feature map.
    for kan in (KAN([C, 16, 16]), KANMLP([C, 16, 16])):
        conv = GINEConv(kan, edge_dim=D)
        assert conv.lin.in_channels == D and conv.lin.out_channels == C
        assert_trains(conv, conv(x, edge_index, edge_attr))
    conv = NNConv(C, 16, KAN([D, 32, C * 16]), aggr="mean")
    assert_trains(conv, conv(x, edge_index, edge_attr))
    conv = EdgeConv(KAN([2 * C, 16, 16]), aggr="max")
    assert_trains(conv, conv(x, edge_index))
    conv = PointNetConv(local_nn=KAN([C + 3, 16]), global_nn=KAN([16, 16]))
    assert_trains(conv, conv(x, pos, edge_index))


def test_kan_widths_as_pyg_reads_them() -> None:
    for module in (KANLinear(3, 5), KAN([3, 7, 5]), KANMLP([3, 7, 5])):
        assert (module.in_channels, module.out_channels) == (3, 5)
    for module in (KANLinear(3, 5), KAN([3, 7, 5])):
        assert (module.in_features, module.out_features) == (3, 5)


# ------------------------------------------------------------------------------------------------
# 2. KANMLP


def test_kanmlp_built_both_ways() -> None:
    a = KANMLP([C, 16, 16, 3])
    b = KANMLP(in_channels=C, hidden_channels=16, out_channels=3, num_layers=3)
    c = KANMLP(C, hidden_channels=16, out_channels=3, num_layers=3)
    assert a.channel_list == b.channel_list == c.channel_list == [C, 16, 16, 3]
    assert (b.in_channels, b.out_channels, b.num_layers) == (C, 3, 3)
    assert repr(a) == "KANMLP(8, 16, 16, 3)"
    # No bias by default: every parameter is a KAN layer's or a batch norm's.
    kan = sum(9 * i * o for i, o in [(C, 16), (16, 16), (16, 3)])  # (G + k + 1) per edge
    assert count_parameters(a) == kan + 2 * (16 + 16)
    assert count_parameters(KANMLP([C, 16, 3], norm=None, bias=True)) == 9 * (C + 3) * 16 + 19
    assert KANMLP([C, 3], num_layers=None).num_layers == 1


def test_kanmlp_mirrors_pyg_mlp() -> None:
    """Same norms, dropout rates, plain last layer and embedding as PyG's MLP."""
    for kw in (
        dict(dropout=0.3, norm="layer_norm", act="gelu"),
        dict(dropout=[0.1, 0.2, 0.3], norm="batch_norm", plain_last=False, act="relu"),
        dict(norm=None, act="relu", act_first=True),
    ):
        ours, pyg = KANMLP([C, 16, 16, 3], **kw), MLP([C, 16, 16, 3], **kw)
        assert ours.dropout == pyg.dropout
        assert [type(n) for n in ours.norms] == [type(n) for n in pyg.norms]
        assert type(ours.act) is type(pyg.act)
    assert KANMLP([C, 16, 3]).act is None  # a KAN layer has its own non-linearity


def test_kanmlp_forward_is_its_layers() -> None:
    x, _, _, batch = graph()
    m = KANMLP([C, 16, 16, 3], act="tanh", bias=True, norm="graph_norm").eval()
    with torch.no_grad():
        for b in m.biases:
            b.bias.normal_()
    h = x
    for i in range(2):
        h = torch.tanh(m.norms[i](m.biases[i](m.lins[i](h)), batch))
    out, emb = m(x, batch, return_emb=True)
    torch.testing.assert_close(emb, h)
    torch.testing.assert_close(out, m.biases[2](m.lins[2](h)))
    assert m.supports_norm_batch and m(x, batch).shape == (7, 3)
    assert_trains(m.train(), m(x, batch))
    reg = m.regularization_loss()
    torch.testing.assert_close(reg, sum(lin.regularization_loss() for lin in m.lins))


def test_kanmlp_update_grid_layer_by_layer() -> None:
    x = torch.randn(64, C) * 3
    m = KANMLP([C, 16, 3], norm=None)
    ref = copy.deepcopy(m)
    m.update_grid(x)
    ref.lins[0].update_grid(x)
    ref.lins[1].update_grid(ref.lins[0](x))
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x))
    assert not torch.equal(m.lins[0].basis.lo, KANMLP([C, 16, 3]).lins[0].basis.lo)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(in_channels=C, out_channels=3), "num_layers must be given"),
        (dict(in_channels=C, out_channels=3, num_layers=2), "hidden_channels must be given"),
        (dict(in_channels=C, hidden_channels=4, num_layers=2), "out_channels must be given"),
        (dict(channel_list=[C]), "at least input and output"),
        (dict(channel_list=[C, 0, 3]), "int >= 1"),
        (dict(channel_list=[C, 4, 3], dropout=[0.1]), "1 dropout values for 2 layers"),
        (dict(channel_list=[C, 4, 3], bias=[True]), "1 bias values for 2 layers"),
        (dict(channel_list=[C, 4, 3], norm=nn.LayerNorm(4)), "not the module LayerNorm"),
    ],
)
def test_kanmlp_bad_input(kwargs, match) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        KANMLP(**kwargs)


# ------------------------------------------------------------------------------------------------
# 3. kanify


def linear_names(model: nn.Module) -> set[str]:
    """Names of the torch and PyG ``Linear`` layers (both classes are called so)."""
    return {n for n, m in model.named_modules() if type(m).__name__ == "Linear"}


def test_kanify_gin() -> None:
    x, edge_index, _, _ = graph()
    gin = GIN(C, 32, num_layers=3, out_channels=1, norm="batch_norm")
    twin = kanify(gin)
    assert any(isinstance(m, MLP) for m in gin.modules())  # the original is untouched
    assert not any(isinstance(m, MLP) for m in twin.modules())
    report = twin.kanified_
    assert [r.name for r in report.replacements] == ["convs.0.nn", "convs.1.nn", "convs.2.nn"]
    assert [r.kan_widths for r in report.replacements] == [(C, 32, 32), (32, 32, 32), (32, 1, 1)]
    assert report.kan_params == count_parameters(twin) > report.params == count_parameters(gin)
    assert "convs.0.nn: MLP [8, 32, 32]" in str(report)
    mlp = twin.convs[0].nn
    assert isinstance(mlp, KANMLP) and mlp.act is None and mlp.dropout == gin.convs[0].nn.dropout
    assert [type(n) for n in mlp.norms] == [type(n) for n in gin.convs[0].nn.norms]
    assert_trains(twin, twin(x, edge_index))


def test_kanify_gin_matched_within_5_percent() -> None:
    x, edge_index, _, _ = graph()
    gin = GIN(C, 64, num_layers=3, out_channels=1)
    twin = kanify(gin, match_params=True, grid_size=4)
    report = twin.kanified_
    assert report.matched and abs(report.rel_diff) <= 0.05
    assert abs(count_parameters(twin) - count_parameters(gin)) <= 0.05 * count_parameters(gin)
    # One common scale: the 64-wide hidden layers shrink alike, the last conv's width-1 stays.
    hidden = [r.kan_widths[1] for r in report.replacements]
    assert hidden[0] == hidden[1] < 64 and hidden[2] == 1
    assert twin.convs[0].nn.lins[0].basis.grid_size == 4
    assert_trains(twin, twin(x, edge_index))
    # A tolerance no width can meet gets the error, not a silent near miss.
    with pytest.raises(ParameterMatchError, match="within 0% of the original"):
        kanify(gin, match_params=True, tolerance=1e-9)


def test_kanify_pna_and_attentive_fp() -> None:
    x, edge_index, edge_attr, batch = graph()
    deg = torch.bincount(degree(edge_index[1], 7, dtype=torch.long))
    pna = PNA(
        C,
        16,
        num_layers=2,
        out_channels=4,
        aggregators=["mean", "max"],
        scalers=["identity", "amplification"],
        deg=deg,
        edge_dim=D,
        towers=2,
    )
    afp = AttentiveFP(C, 16, 3, edge_dim=D, num_layers=2, num_timesteps=2)
    for model, args in (
        (pna, (x, edge_index, None, edge_attr)),
        (afp, (x, edge_index, edge_attr, batch)),
    ):
        twin = kanify(model)
        assert {r.name for r in twin.kanified_.replacements} == linear_names(model)
        assert not linear_names(twin) and not any(isinstance(m, MLP) for m in twin.modules())
        assert_trains(twin, twin(*args))
    # PNA's pre/post networks and edge encoders are single linear layers: nothing to scale.
    with pytest.raises(ParameterMatchError, match=r"\(Linear \d+->\d+, .*no hidden width"):
        kanify(pna, match_params=True)


def test_kanify_single_linear_cannot_match() -> None:
    with pytest.raises(
        ParameterMatchError,
        match=r"original's 65 parameters \(closest 576, \+786\.2%\): '<model>' \(Linear 64->1, "
        r"65 parameters\) has no hidden width to choose: as a KAN layer it has 576",
    ):
        kanify(nn.Linear(64, 1), match_params=True)
    twin = kanify(nn.Linear(64, 1))  # without matching: the model itself is replaced
    assert isinstance(twin, KANLinear) and twin.kanified_.replacements[0].name == ""


def test_kanify_options() -> None:
    model = nn.Sequential(MLP([C, 16, 4]), nn.ReLU(), nn.Linear(4, 2))
    only_mlp = kanify(model, include=("mlp",))
    assert isinstance(only_mlp[0], KANMLP) and type(only_mlp[2]) is nn.Linear
    kept = kanify(model, exclude=["0"])
    assert type(kept[0]) is MLP and isinstance(kept[2], KANLinear)
    same = kanify(model, inplace=True, basis="rbf")
    assert same is model and isinstance(model[0], KANMLP)
    assert model[0].lins[0].basis.__class__.__name__ == "RBFBasis"
    # One module under two names gets one twin.
    shared = MLP([C, 4, 4])
    pair = kanify(nn.ModuleDict({"a": shared, "b": shared}))
    assert pair["a"] is pair["b"] and isinstance(pair["a"], KANMLP)
    assert len(pair.kanified_.replacements) == 1
    with pytest.warns(UserWarning, match="nothing to replace"):
        kanify(nn.ReLU())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(include=("mlp", "conv")), "include must be a sequence of mlp, linear"),
        (dict(include="mlp"), "include must be a sequence"),
        (dict(grid_size=0), "bad KAN option"),
        (dict(colour="red"), "bad KAN option"),
        (dict(tolerance=0), "tolerance must be > 0"),
    ],
)
def test_kanify_bad_input(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        kanify(MLP([C, 4, 1]), **kwargs)


def test_kanify_lazy_module() -> None:
    with pytest.raises(ValueError, match=r"'0' \(MLP\) has uninitialised lazy parameters"):
        kanify(nn.Sequential(MLP([-1, 4, 1])))


def test_kanify_kangnn_convs_become_their_kan_version() -> None:
    """A kangnn conv built with function="mlp" becomes the function="kan" conv, exactly."""
    x, edge_index, edge_attr, _ = graph()
    convs = {
        "gin": lambda **kw: KANGINConv(C, C, **kw),
        "gine": lambda **kw: KANGINEConv(C, C, edge_dim=D, **kw),
        "mpnn": lambda **kw: KANMPNNConv(C, C, edge_dim=D, **kw),
        "gated": lambda **kw: KANGatedConv(C, C, edge_dim=D, **kw),
    }
    for name, make in convs.items():
        twin = kanify(make(function="mlp"), include=("mlp",), grid_size=3)
        assert twin.function == "kan", name
        assert not any(isinstance(m, MLPFunction) for m in twin.modules())
        kan = make(function="kan", grid_size=3)
        kan.load_state_dict(twin.state_dict())
        args = (x, edge_index) if name == "gin" else (x, edge_index, edge_attr)
        torch.testing.assert_close(twin(*args), kan(*args))
        assert_trains(twin, twin(*args))
    # Matched: the MPNN's functions have a hidden width; the one-layer gated message has none.
    mpnn = KANMPNNConv(C, 64, edge_dim=D, function="mlp")
    twin = kanify(mpnn, match_params=True)
    assert abs(twin.kanified_.rel_diff) <= 0.05
    with pytest.raises(ParameterMatchError, match=r"'message_fn' \(MLPFunction 20->16"):
        kanify(KANGatedConv(C, 8, edge_dim=D, function="mlp"), match_params=True, include=("mlp",))


def test_exports() -> None:
    assert kangnn.KANMLP is KANMLP and kangnn.kanify is kanify
