"""Grid fitting: in-place update_grid by column blocks, fit_grids over a model, spline init."""

import copy

import pytest
import torch

from kangnn.kan import BASES, KAN, KANLinear, fit_grids
from kangnn.nn import KANMPNNConv


def test_update_grid_is_in_place_and_keeps_optimizer_state():
    torch.manual_seed(0)
    layer = KANLinear(4, 3).double()
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    x = torch.randn(512, 4, dtype=torch.float64)
    layer(x).square().sum().backward()
    opt.step()
    ids = {name: id(p) for name, p in layer.named_parameters()}
    state = {id(p): copy.deepcopy(opt.state[p]) for p in layer.parameters()}
    data = 0.3 * x  # a narrower range: the refit keeps the function there (least squares)
    before = layer(data)
    layer.update_grid(data)
    assert layer.basis.hi.max() < 1.0
    assert {name: id(p) for name, p in layer.named_parameters()} == ids
    for p in layer.parameters():  # optimizer state untouched
        torch.testing.assert_close(opt.state[p]["exp_avg"], state[id(p)]["exp_avg"])
    assert (layer(data) - before).abs().max() < 0.1 * before.abs().max()
    layer.zero_grad()
    layer(x).square().sum().backward()
    opt.step()  # the optimizer still drives the same parameters


def test_update_grid_by_columns_fits_only_those_inputs():
    torch.manual_seed(0)
    layer = KANLinear(6, 2).double()
    x = torch.randn(400, 6, dtype=torch.float64)
    untouched = [layer.partial(x[:, :2], 0), layer.partial(x[:, 4:], 4)]
    coef = layer.spline_weight.detach().clone()
    lo = layer.basis.lo.clone()
    layer.update_grid(3 * x[:, 2:4], slice(2, 4))  # grids of inputs 2 and 3 only
    assert torch.equal(layer.basis.lo[[0, 1, 4, 5]], lo[[0, 1, 4, 5]])
    assert (layer.basis.lo[2:4] < -2).all()
    assert layer.basis.grid_ids[0] == layer.basis.grid_ids[1] != layer.basis.grid_ids[2]
    assert torch.equal(layer.spline_weight[:, [0, 1, 4, 5]], coef[:, [0, 1, 4, 5]])
    torch.testing.assert_close(layer.partial(x[:, :2], 0), untouched[0], atol=0, rtol=0)
    torch.testing.assert_close(layer.partial(x[:, 4:], 4), untouched[1], atol=0, rtol=0)
    with pytest.raises(ValueError, match="outside the layer's 6 inputs"):
        layer.update_grid(x[:, :3], slice(5, 8))


def test_update_grid_without_refit_keeps_coefficients():
    layer = KANLinear(3, 2)
    coef = layer.spline_weight.detach().clone()
    layer.update_grid(torch.randn(100, 3) * 4, refit=False)
    assert torch.equal(layer.spline_weight, coef) and layer.basis.lo.min() < -3


def test_grid_ids_follow_load_state_dict():
    a, b = KANLinear(4, 2), KANLinear(4, 2)
    a.update_grid(torch.randn(50, 4) * torch.arange(1.0, 5.0))
    assert len(set(a.basis.grid_ids)) == 4 and len(set(b.basis.grid_ids)) == 1
    b.load_state_dict(a.state_dict())
    assert b.basis.grid_ids == a.basis.grid_ids


def test_fit_grids_covers_decomposed_first_layers_and_restores_batch_norm():
    torch.manual_seed(0)
    conv = KANMPNNConv(8, 8, edge_dim=4)
    model = torch.nn.ModuleDict({"norm": torch.nn.BatchNorm1d(8), "conv": conv})
    x = 3 * torch.randn(30, 8)
    edge_index = torch.randint(0, 30, (2, 80))
    edge_attr = 0.2 * torch.randn(80, 4)

    def run():
        return model["conv"](model["norm"](x), edge_index, edge_attr)

    run()  # running statistics away from their initial values
    stats = {k: v.clone() for k, v in model.named_buffers() if "running" in k}
    first = conv.message_fn.layers[0]
    ids = {id(p) for p in model.parameters()}
    fitted = fit_grids(model, run)
    assert fitted == sum(isinstance(m, KANLinear) for m in model.modules())
    assert {id(p) for p in model.parameters()} == ids
    for k, v in model.named_buffers():
        if k in stats:
            torch.testing.assert_close(v, stats[k])
    # Node columns (target, source) fitted on normalised node features, the edge columns on
    # the much narrower edge features; target and source share one grid (same data).
    lo, hi = first.basis.lo, first.basis.hi
    assert first._same_grids([slice(0, 8), slice(8, 16)])
    assert (hi[16:] - lo[16:]).max() < 0.5 * (hi[:8] - lo[:8]).min()


@pytest.mark.parametrize("basis", list(BASES))
def test_spline_init_gives_the_spline_branch_its_share(basis):
    """On standardised input the spline branch carries ``spline_scale`` of the output variance."""
    torch.manual_seed(0)
    shares = []
    for _ in range(8):
        layer = KANLinear(64, 64, basis=basis, spline_scale=0.5)
        x = torch.randn(4096, 64)
        with torch.no_grad():
            base = torch.nn.functional.silu(x) @ layer.base_weight.t()
            total = layer(x)
        shares.append(((total - base).var() / total.var()).item())
    share = sum(shares) / len(shares)
    assert 0.4 < share < 0.6, share


def test_kan_fit_grids_on_a_plain_stack():
    torch.manual_seed(0)
    model = KAN([3, 5, 1])
    x = 4 * torch.randn(256, 3)
    assert fit_grids(model, lambda: model(x)) == 2
    assert model.layers[0].basis.lo.min() < -3


def test_refit_on_a_small_discrete_sample_keeps_coefficients_bounded():
    """Functions the sample hardly touches keep their coefficients (ridge towards the current
    ones) instead of being blown up by a ridge to zero alone."""
    torch.manual_seed(0)
    layer = KANLinear(6, 4).double()
    x = torch.randint(0, 3, (40, 6)).double() * 0.7 - 0.7  # three values per input
    before = layer.spline_weight.detach().abs().max()
    out = layer(x)
    layer.update_grid(x)
    assert layer.spline_weight.abs().max() < 5 * before
    assert (layer(x) - out).abs().max() < 0.05 * out.abs().max()
