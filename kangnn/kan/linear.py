"""The KAN layer :class:`KANLinear` and the stack :class:`KAN`."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from kangnn.kan import fused
from kangnn.kan.basis import Basis, BSplineBasis, make_basis

# E[silu(z)^2] for z ~ N(0, 1), used to keep the base branch variance-preserving at init.
_SILU_SECOND_MOMENT = 0.3557

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "silu": F.silu,
    "identity": lambda x: x,
    "gelu": F.gelu,
    "tanh": torch.tanh,
    "relu": F.relu,
}


# On CPU the layer runs in row blocks whose expansion is about this many values (8 MiB in float32):
# large batches never hold a whole N x P(K+1) expansion, while a molecule batch (a few thousand
# rows) is one block, whose expansion the backward can then reuse (see _SAVE_LIMIT).
_BLOCK = 1 << 21


def _row_blocks(x: Tensor, width: int) -> list[slice]:
    n = x.shape[0]
    rows = n if x.device.type != "cpu" else max(1, _BLOCK // max(width, 1))
    return [slice(i, min(i + rows, n)) for i in range(0, n, rows)]


def _features(
    x: Tensor, basis: Basis, cols: slice, act: str, located=None, buf: Tensor | None = None
) -> Tensor:
    """``[N, P * (K + 1)]``: for each input its base activation, then its ``K`` basis values.

    The result is a view of a buffer with one spare column at the end (see
    :meth:`BSplineBasis.layout`). ``located`` is :meth:`BSplineBasis.locate`'s result for ``x``;
    ``buf`` is an ``[N', P * (K + 1) + 1]`` workspace (``N' >= N``) to reuse.
    """
    N, P = x.shape
    S = basis.num_functions + 1
    buf = x.new_zeros(N, P * S + 1) if buf is None else buf[:N].zero_()
    if isinstance(basis, BSplineBasis):
        if located is None:
            located = basis.locate(x, basis.layout(cols, S, 1))
        basis.scatter_into(buf, *located)
    else:
        buf[:, :-1].view(N, P, S)[..., 1:] = basis.expand(x, cols)
    # Written last: these columns also absorb the values of absent B-splines.
    buf[:, 0 : P * S : S] = _ACTIVATIONS[act](x)
    return buf[:, :-1]


def _function_major(weight: Tensor, P: int, S: int) -> Tensor:
    """``[out, P * S]`` input-major weight (the layer's layout) as ``[out, S * P]``, function
    major: the layout of the fused kernels and the plain-op path."""
    return weight.view(-1, P, S).transpose(1, 2).reshape(weight.shape[0], S * P)


def _input_major(weight: Tensor, P: int, S: int) -> Tensor:
    """The inverse of :func:`_function_major`."""
    return weight.view(-1, S, P).transpose(1, 2).reshape(weight.shape[0], P * S)


def _with_activation(x: Tensor, values: Tensor, act: str) -> Tensor:
    """``[N, (K + 1) * P]`` function-major features from ``[N, K, P]`` basis values."""
    return torch.cat([_ACTIVATIONS[act](x).unsqueeze(1), values], dim=1).flatten(1)


def _plain_product(x: Tensor, weight: Tensor, basis: Basis, cols: slice, act: str) -> Tensor:
    """The layer's output by plain differentiable ops (``weight`` input major, as
    :class:`_KANLinearFn`'s): what ``torch.compile`` traces and fuses, and what double backward
    differentiates. Same values as the other paths to rounding."""
    if isinstance(basis, BSplineBasis):
        order, num = basis.order, basis.num_functions
        return _bspline_product(order, num, act, x, weight, basis.lo[cols], basis.h[cols], None)
    feats = _with_activation(x, basis.expand(x, cols).transpose(1, 2), act)
    return feats @ _function_major(weight, x.shape[1], basis.num_functions + 1).t()


def _bspline_product(
    order: int, num: int, act: str, x: Tensor, weight: Tensor, lo: Tensor, h: Tensor, terms
) -> Tensor:
    """:func:`_plain_product` of a B-spline layer from tensors alone (what the compiled path
    checkpoints: its inputs must all be arguments)."""
    inv_h = 1.0 / h
    values = fused.dense_values(x, order - lo * inv_h, inv_h, num, order, terms)
    return _with_activation(x, values, act) @ _function_major(weight, x.shape[1], num + 1).t()


def _add_weight_grad(grad_w: Tensor, grad_out: Tensor, feats: Tensor) -> None:
    """``grad_w += grad_out^T @ feats``; under mixed precision the product runs in the output's
    dtype and is accumulated in the weight's."""
    if grad_out.dtype == grad_w.dtype:
        grad_w.addmm_(grad_out.t(), feats)
    else:
        grad_w.add_(grad_out.t().mm(feats.to(grad_out.dtype)))


# A forward keeps its expansion for the backward when it is at most this big (molecule-sized
# batches: it then costs about what an MLP twin's hidden activations do, and the backward skips
# rebuilding it); larger ones are rebuilt, so memory stays at the input's size.
_SAVE_LIMIT = [8 << 20]


def set_saved_expansion_limit(nbytes: int) -> None:
    """Keep a KAN layer's basis expansion for its backward when it is at most ``nbytes``
    (default 8 MiB); ``0`` always rebuilds it (least memory)."""
    _SAVE_LIMIT[0] = int(nbytes)


def _keep(ctx, blocks: list[slice], feats: Tensor | None) -> bool:
    return (
        feats is not None
        and len(blocks) == 1
        and ctx.needs_input_grad[1]
        and feats.numel() * feats.element_size() <= _SAVE_LIMIT[0]
    )


def _fused_forward(ctx, x, weight, basis, cols, act, dtype) -> Tensor | None:
    """:class:`_KANLinearFn`'s forward by the fused kernel (function-major features and weight);
    ``None`` where the kernel cannot be compiled."""
    P, S = x.shape[1], basis.num_functions + 1
    layout = basis.layout(cols, S, 1)
    wf = _function_major(weight, P, S)
    wt = wf.t() if wf.dtype == dtype else wf.t().to(dtype)
    blocks = _row_blocks(x, weight.shape[1])
    out = None if len(blocks) == 1 else x.new_empty(x.shape[0], weight.shape[0], dtype=dtype)
    feats = None
    for b in blocks:
        feats = fused.features(x[b], layout.shift, layout.inv_h, S - 1, basis.order, act)
        if feats is None:
            return None
        feats_c = feats if feats.dtype == dtype else feats.to(dtype)
        if out is None:
            out = torch.mm(feats_c, wt)
        else:
            torch.mm(feats_c, wt, out=out[b])
    ctx.save_for_backward(x, weight, *([feats] if _keep(ctx, blocks, feats) else []))
    return out


def _fused_backward(ctx, grad_out: Tensor):
    """:class:`_KANLinearFn`'s backward by the fused kernels; ``None`` (nothing to use) where
    they cannot be compiled."""
    x, weight, *kept = ctx.saved_tensors
    basis, cols, act = ctx.basis, ctx.cols, ctx.act
    need_x, need_w = ctx.needs_input_grad[:2]
    P, S, order = x.shape[1], ctx.basis.num_functions + 1, ctx.basis.order
    layout = basis.layout(cols, S, 1)
    wf = _function_major(weight, P, S)  # rebuilt, not saved: less memory for a small copy
    wc = wf if wf.dtype == grad_out.dtype else wf.to(grad_out.dtype)
    blocks = _row_blocks(x, weight.shape[1])
    single = len(blocks) == 1  # then the kernels' results are the gradients themselves
    grad_x = torch.empty_like(x) if need_x and not single else None
    direct = single and grad_out.dtype == wf.dtype
    grad_wf = torch.zeros_like(wf) if need_w and not direct else None
    feats = kept[0] if kept else None  # only with a single row block
    for b in blocks:
        xb, gb = x[b], grad_out[b]
        if need_w:
            if feats is None:
                feats = fused.features(xb, layout.shift, layout.inv_h, S - 1, order, act)
                if feats is None:
                    return None
            if grad_wf is None:
                grad_wf = gb.t().mm(feats)
            else:
                _add_weight_grad(grad_wf, gb, feats)
            feats = None
        if need_x:
            g = gb.mm(wc)
            g = g if g.dtype == x.dtype else g.to(x.dtype)
            gx = fused.input_grad(xb, g, layout.shift, layout.inv_h, S - 1, order, act)
            if gx is None:
                return None
            if single:
                grad_x = gx
            else:
                grad_x[b] = gx
    grad_w = _input_major(grad_wf, P, S) if need_w else None
    return grad_x, grad_w, None, None, None, None


def input_columns(starts: Sequence[int], width: int, in_features: int) -> list[slice]:
    """The column blocks ``start : start + width`` of a layer's ``in_features`` inputs, one per
    start; a :class:`ValueError` names a block that does not fit."""
    if not starts:
        raise ValueError("partials needs at least one column offset")
    for start in starts:
        if start < 0 or start + width > in_features:
            raise ValueError(
                f"columns {start}:{start + width} are outside the layer's {in_features} inputs"
            )
    return [slice(start, start + width) for start in starts]


class _KANLinearFn(torch.autograd.Function):
    """``y = [act(x) | B(x)] @ W^T`` saving only ``x`` and ``W``; the basis is rebuilt in backward.

    ``weight`` is ``[out, P * (K + 1)]`` laid out input by input: the base weight of input ``p``
    followed by its ``K`` spline coefficients. Keeping the expansion out of the autograd graph is
    what keeps the memory at a layer's input size instead of ``K`` times it. ``dtype`` is the
    dtype of the matrix products and the output (autocast's, under mixed precision); the basis
    is always evaluated in the input's dtype.

    Double backward (``create_graph=True``) recomputes the layer by plain differentiable ops and
    differentiates that, so higher derivatives are exact, for every basis.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, basis: Basis, cols: slice, act: str, dtype):
        ctx.basis, ctx.cols, ctx.act = basis, cols, act
        spline = isinstance(basis, BSplineBasis)
        ctx.fused = spline and fused.fused_enabled(x) and act in fused.ACTIVATIONS
        if ctx.fused:
            out = _fused_forward(ctx, x, weight, basis, cols, act, dtype)
            if out is not None:
                return out
            ctx.fused = False
        out = x.new_empty(x.shape[0], weight.shape[0], dtype=dtype)
        wt = weight.t().to(dtype)
        layout = basis.layout(cols, basis.num_functions + 1, 1) if spline else None
        blocks = _row_blocks(x, weight.shape[1])
        # One workspace for all blocks: no fresh pages per block.
        buf = x.new_empty(blocks[0].stop if blocks else 0, weight.shape[1] + 1)
        feats = None
        for b in blocks:
            located = basis.locate(x[b], layout) if spline else None
            feats = _features(x[b], basis, cols, act, located, buf)
            torch.mm(feats.to(dtype), wt, out=out[b])
        ctx.save_for_backward(x, weight, *([feats] if _keep(ctx, blocks, feats) else []))
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight, *kept = ctx.saved_tensors
        basis, cols, act = ctx.basis, ctx.cols, ctx.act
        need_x, need_w = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():  # create_graph=True: the gradient must be differentiable
            return (
                *_differentiable_grads(x, weight, basis, cols, act, grad_out, need_x, need_w),
                None,
                None,
                None,
                None,
            )
        if ctx.fused:
            grads = _fused_backward(ctx, grad_out)
            if grads is not None:
                return grads
            kept = []  # function major: of no use to the eager path
        P = x.shape[1]
        S = basis.num_functions + 1
        grad_x = torch.empty_like(x) if need_x else None
        grad_w = torch.zeros_like(weight) if need_w else None
        wc = weight.to(grad_out.dtype)
        # The padded weight gives g a zero spare column, like the feature buffer.
        wpad = F.pad(wc, (0, 1)) if need_x else None
        spline = isinstance(basis, BSplineBasis)
        layout = basis.layout(cols, S, 1) if spline else None
        blocks = _row_blocks(x, weight.shape[1])
        buf = x.new_empty(blocks[0].stop if blocks else 0, weight.shape[1] + 1) if need_w else None
        feats = kept[0] if kept else None  # only with a single row block
        for b in blocks:
            xb, gb = x[b], grad_out[b]
            # Locate the B-splines once for both the features and their derivatives.
            located = basis.locate(xb, layout) if spline else None
            if need_w:
                if feats is None:
                    feats = _features(xb, basis, cols, act, located, buf)
                _add_weight_grad(grad_w, gb, feats)
                feats = None
            if need_x:
                g = gb.mm(wpad).to(x.dtype)
                gx = fused.activation_backward(g[:, 0 : P * S : S], xb, act)
                if spline:
                    g[:, 0 : P * S : S] = 0  # the columns absent B-splines point at
                    gx += basis.gather_grad(g, *located, layout)
                else:
                    gx += basis.expand_grad(xb, g[:, :-1].view(-1, P, S)[..., 1:], cols)
                grad_x[b] = gx
        return grad_x, grad_w, None, None, None, None


def _differentiable_grads(x, weight, basis, cols, act, grad_out, need_x, need_w):
    """``(grad_x, grad_w)`` of the layer as a differentiable graph (for double backward)."""
    wanted = [t for t, need in ((x, need_x), (weight, need_w)) if need]
    with torch.enable_grad():
        y = _plain_product(x, weight, basis, cols, act).to(grad_out.dtype)
        grads = iter(torch.autograd.grad(y, wanted, grad_out, create_graph=True))
    return (next(grads) if need_x else None), (next(grads) if need_w else None)


def _kan_apply(x: Tensor, weight: Tensor, basis: Basis, cols: slice, act: str) -> Tensor:
    # Eager only: under torch.compile the layer takes the plain-op path (see KANLinear._evaluate).
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()  # low-precision input: evaluate the basis in float32
    if not torch.is_autocast_enabled(x.device.type):
        return _KANLinearFn.apply(x, weight, basis, cols, act, x.dtype)
    # Mixed precision: the products in autocast's dtype, the basis in full precision.
    dtype = torch.get_autocast_dtype(x.device.type)
    with torch.autocast(x.device.type, enabled=False):
        return _KANLinearFn.apply(x, weight, basis, cols, act, dtype)


class KANLinear(nn.Module):
    r"""A Kolmogorov-Arnold layer: a learnable univariate function on every input-output edge.

    .. math::
        y_q = \sum_{p} \Big( w^{b}_{q,p}\, \mathrm{act}(x_p)
              + \sum_{k=1}^{K} c_{q,p,k}\, B_k(x_p) \Big)

    With the default B-spline basis the :math:`K = G + k` functions are uniform B-splines of order
    :math:`k` on a grid of :math:`G` intervals over ``grid_range``. They are evaluated in closed
    form (only :math:`k+1` are non-zero at any point) inside a custom autograd function that saves
    only the input and rebuilds the expansion in backward, so the memory is that of a linear layer's
    input, not :math:`K` times it.

    Outside the grid (beyond :math:`k` steps past ``grid_range``) every B-spline is zero: the spline
    part fades out continuously and the base branch carries the signal, so the output is finite for
    every finite input. Normalise inputs (or call :meth:`update_grid`) for the spline to be used.

    Parameters
    ----------
    in_features, out_features:
        Input and output widths.
    basis:
        ``"bspline"`` (default), ``"rbf"`` (Gaussian, FastKAN), ``"chebyshev"`` or ``"fourier"``.
    grid_size:
        Number of grid intervals :math:`G`.
    spline_order:
        B-spline order :math:`k \ge 1` (3 = cubic); B-spline basis only.
    grid_range:
        Interval covered by the grid at initialisation.
    base_activation:
        ``"silu"`` (default), ``"identity"``, ``"gelu"``, ``"tanh"`` or ``"relu"``.
    spline_scale:
        Share of the output variance given to the spline branch at initialisation.
    **basis_kwargs:
        Extra arguments for the basis class.

    Shapes
    ------
    input ``(*, in_features)``, output ``(*, out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        basis: str = "bspline",
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: tuple[float, float] = (-1.0, 1.0),
        base_activation: str = "silu",
        spline_scale: float = 0.5,
        **basis_kwargs,
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(
                f"in_features and out_features must be >= 1, got {in_features}, {out_features}"
            )
        if base_activation not in _ACTIVATIONS:
            raise ValueError(
                f"unknown base_activation {base_activation!r}; valid: {', '.join(_ACTIVATIONS)}"
            )
        if not 0.0 <= spline_scale <= 1.0:
            raise ValueError(f"spline_scale must be in [0, 1], got {spline_scale}")
        if basis == "bspline":
            basis_kwargs["spline_order"] = spline_order
        self.in_features = self.in_channels = in_features
        self.out_features = self.out_channels = out_features
        self.base_activation = base_activation
        self.spline_scale = spline_scale
        self.basis = make_basis(basis, in_features, grid_size, grid_range, **basis_kwargs)
        # Set by kangnn.kan.fit_grids while it records the inputs the layer sees.
        self._recorder: Callable[[KANLinear, Tensor, slice], None] | None = None
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(
            torch.empty(out_features, in_features, self.basis.num_functions)
        )
        self.reset_parameters()

    @property
    def num_functions(self) -> int:
        """Number of basis functions per input."""
        return self.basis.num_functions

    def reset_parameters(self) -> None:
        """Variance-preserving initialisation for standardised inputs.

        The base branch gets ``1 - spline_scale`` of the output variance (for ``x ~ N(0, 1)``), the
        spline branch the rest, spread evenly over the coefficients; deep stacks stay well-scaled.
        """
        second_moment = _SILU_SECOND_MOMENT if self.base_activation == "silu" else 1.0
        base_std = math.sqrt((1.0 - self.spline_scale) / (self.in_features * second_moment))
        nn.init.normal_(self.base_weight, std=base_std)
        # With independent coefficients sum_k c_k B_k(z) has variance std^2 E[sum_k B_k(z)^2]:
        # about 0.43 for cubic B-splines, G + 1 ... 2G for the others, so each basis gets its own
        # scale and the spline branch its intended share.
        spline_std = math.sqrt(self.spline_scale / (self.in_features * self.basis.second_moment()))
        nn.init.normal_(self.spline_weight, std=spline_std)

    def _weight(self, cols: slice = slice(None)) -> Tensor:
        w = torch.cat([self.base_weight[:, cols].unsqueeze(-1), self.spline_weight[:, cols]], -1)
        return w.flatten(1)

    def _evaluate(self, x2: Tensor, weight: Tensor, cols: slice) -> Tensor:
        if self._recorder is not None:
            self._recorder(self, x2, cols)
        if torch.compiler.is_compiling():
            # Plain ops the compiler fuses instead of an opaque autograd function: no graph
            # break, one generated kernel for the expansion. Checkpointed, so the expansion is
            # recomputed in backward rather than saved (the eager path's memory).
            if not isinstance(self.basis, BSplineBasis):
                return _plain_product(x2, weight, self.basis, cols, self.base_activation)
            b = self.basis
            return checkpoint(
                functools.partial(_bspline_product, b.order, b.num_functions, self.base_activation),
                x2,
                weight,
                b.lo[cols],
                b.h[cols],
                fused.spline_terms(b.order, x2.device),
                use_reentrant=False,
            )
        return _kan_apply(x2, weight, self.basis, cols, self.base_activation)

    def _run(self, x: Tensor, cols: slice) -> Tensor:
        shape = x.shape[:-1]
        out = self._evaluate(x.reshape(-1, x.shape[-1]), self._weight(cols), cols)
        return out.view(*shape, self.out_features)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the layer to ``x`` of shape ``(*, in_features)``."""
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"KANLinear expects {self.in_features} input features, got {x.shape[-1]}"
            )
        return self._run(x, slice(None))

    def partial(self, x_part: Tensor, start: int) -> Tensor:
        """Contribution of the inputs ``start : start + x_part.shape[-1]`` to the output.

        A KAN layer is a sum over its inputs, so the outputs of :meth:`partial` over a partition of
        the input columns add up to :meth:`forward` of the whole input. Message-passing layers use
        this to evaluate the node parts of ``[h_i || h_j || e_ij]`` once per node.
        """
        (cols,) = input_columns([start], x_part.shape[-1], self.in_features)
        return self._run(x_part, cols)

    def partials(self, x_part: Tensor, starts: Sequence[int]) -> Tensor:
        """:meth:`partial` of the same ``x_part`` at several column offsets, ``(*, S, out)``.

        ``out[..., s, :] == partial(x_part, starts[s])``. When those column blocks have the same
        grids (always, unless :meth:`update_grid` fitted them apart) the basis is expanded once
        and multiplied with the blocks' weights side by side: a message layer's target and source
        parts of one node feature matrix cost one expansion instead of two.
        """
        width = x_part.shape[-1]
        blocks = input_columns(starts, width, self.in_features)
        if not self._same_grids(blocks):
            return torch.stack([self._run(x_part, cols) for cols in blocks], dim=-2)
        shape = x_part.shape[:-1]
        weight = torch.cat([self._weight(cols) for cols in blocks], dim=0)
        if self._recorder is not None:
            for cols in blocks[1:]:  # the shared expansion stands for every block
                self._recorder(self, x_part.reshape(-1, width), cols)
        out = self._evaluate(x_part.reshape(-1, width), weight, blocks[0])
        return out.view(*shape, len(blocks), self.out_features)

    def _same_grids(self, blocks: list[slice]) -> bool:
        """Whether the column blocks have identical grids. Read from the basis's
        :attr:`~kangnn.kan.Basis.grid_ids` (plain ints, updated when a grid changes): no device
        sync per call, and a constant for ``torch.compile``."""
        ids = self.basis.grid_ids
        first = ids[blocks[0]]
        return all(ids[b] == first for b in blocks[1:])

    def edge_functions(self, x: Tensor) -> Tensor:
        r"""The learned univariate functions :math:`\phi_{q,p}(x)` on a 1-D grid ``x`` ``[P]``.

        Returns ``[P, out_features, in_features]``: the value of edge ``p -> q`` at each point.
        """
        xs = x.reshape(-1, 1).expand(-1, self.in_features).to(self.base_weight)
        with torch.no_grad():
            feats = _features(xs, self.basis, slice(None), self.base_activation)
            feats = feats.view(xs.shape[0], self.in_features, -1)
            w = torch.cat([self.base_weight.unsqueeze(-1), self.spline_weight], -1)
            return torch.einsum("npk,qpk->nqp", feats, w)

    def regularization_loss(
        self, regularize_activation: float = 1.0, regularize_entropy: float = 1.0
    ) -> Tensor:
        """L1 plus entropy of the per-edge mean absolute spline coefficients.

        Computed from the weights only, so it costs nothing per sample.
        """
        l1 = self.spline_weight.abs().mean(-1)
        total = l1.sum()
        p = l1 / total.clamp_min(torch.finfo(l1.dtype).tiny)
        entropy = -torch.sum(p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny)))
        return regularize_activation * total + regularize_entropy * entropy

    @torch.no_grad()
    def _fit_coefficients(self, x: Tensor, cols: slice, new_basis: Basis) -> Tensor:
        """Least-squares coefficients ``[out, P_cols, K']`` of ``new_basis`` (a basis of the
        columns ``cols`` alone) that reproduce the current spline of those inputs on ``x``.

        Ridge-regularised, so the fit stays finite on rank-deficient data (a constant input).
        When the number of functions is unchanged (a grid update) the ridge pulls towards the
        current coefficients rather than towards zero: functions the data hardly touch keep
        their values instead of being set by the ridge alone (which inflated them by 50-150x
        on small samples); a grid refinement (``extend_grid``) keeps a tiny ridge to zero.
        """
        current = self.spline_weight[:, cols]  # [out, P, K]
        old = self.basis.expand(x, cols)  # [N, P, K]
        target = torch.einsum("npk,qpk->pnq", old, current)  # [P, N, out]
        A = new_basis.expand(x).permute(1, 0, 2)  # [P, N, K']
        ata = A.transpose(1, 2).bmm(A).double()
        anchored = current.shape[-1] == ata.shape[-1]
        scale = 1e-3 if anchored else 1e-8
        ridge = scale * ata.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-12)
        eye = torch.eye(ata.shape[-1], dtype=ata.dtype, device=x.device)
        ata = ata + ridge[:, None, None] * eye
        atb = A.transpose(1, 2).bmm(target).double()
        if anchored:
            atb = atb + ridge[:, None, None] * current.permute(1, 2, 0).double()
        coef = torch.linalg.solve(ata, atb)  # [P, K', out]
        return coef.permute(2, 0, 1).to(self.spline_weight)

    @torch.no_grad()
    def update_grid(
        self,
        x: Tensor,
        cols: slice | None = None,
        grid_eps: float = 0.5,
        percentile: float = 0.02,
        refit: bool = True,
    ) -> None:
        """Fit the grids of inputs ``cols`` to the data ``x`` ``(*, width of cols)``, in place.

        Each input's range becomes a blend ``grid_eps * [min, max] + (1 - grid_eps) * [q, 1 - q]``
        of its data range and a percentile range (``q = percentile``), so outliers do not stretch
        the grid. Grids stay uniform per input, which keeps the closed-form evaluation valid (a
        departure from efficient-kan's non-uniform adaptive grid). With ``refit`` the spline
        coefficients are refitted by least squares so the layer's output on ``x`` is kept;
        without it they stay as they are (a random initial spline is as random on any range).

        The buffers and the parameter are updated in place: the same ``Parameter`` objects, so an
        optimizer's state for them is kept.

        Parameters
        ----------
        x:
            Samples of the inputs ``cols``.
        cols:
            The input columns whose grids ``x`` covers (default: all); a decomposed message's
            first layer fits its node and edge column blocks from different samples.
        """
        cols = slice(0, self.in_features) if cols is None else cols
        (cols,) = input_columns([cols.start or 0], x.shape[-1], self.in_features)
        x2 = x.reshape(-1, x.shape[-1]).to(self.spline_weight)
        if x2.shape[0] == 0:
            raise ValueError("update_grid needs at least one sample")
        qs = torch.tensor([percentile, 1.0 - percentile], dtype=x2.dtype, device=x2.device)
        q = torch.quantile(x2, qs, dim=0)
        lo = grid_eps * x2.min(0).values + (1 - grid_eps) * q[0]
        hi = grid_eps * x2.max(0).values + (1 - grid_eps) * q[1]
        # A constant input has no range; give it a small one around its value.
        width = (hi - lo).clamp_min(1e-3)
        mid = (hi + lo) / 2
        lo, hi = mid - width / 2, mid + width / 2
        if refit:
            part = _copy_basis(self.basis, self.basis.grid_size, x2.shape[1])
            part.set_grid(lo, hi)
            self.spline_weight[:, cols] = self._fit_coefficients(x2, cols, part)
        self.basis.set_grid(lo.to(self.basis.lo), hi.to(self.basis.lo), cols)

    @torch.no_grad()
    def extend_grid(self, new_grid_size: int, num_samples: int = 1024) -> None:
        """Refine the grid to ``new_grid_size`` intervals over the same range, keeping the function.

        The coefficients are refitted by least squares on points spread over the grid range, where
        a multiple of the old grid size holds the old spline exactly. (A finer grid reaches fewer
        steps past the range, so there the function fades out sooner than before.)
        """
        if new_grid_size < 1:
            raise ValueError(f"new_grid_size must be >= 1, got {new_grid_size}")
        b = self.basis
        u = torch.linspace(0, 1, num_samples, dtype=b.lo.dtype, device=b.lo.device)
        x = (b.lo + u[:, None] * (b.hi - b.lo)).to(self.spline_weight)
        new_basis = _copy_basis(b, new_grid_size)
        new_basis.set_grid(b.lo, b.hi)
        coef = self._fit_coefficients(x, slice(0, self.in_features), new_basis)
        # The number of coefficients changes: a new Parameter (rebuild the optimizer after this).
        self.basis = new_basis
        self.spline_weight = nn.Parameter(coef.contiguous())


def _copy_basis(basis: Basis, grid_size: int, in_features: int | None = None) -> Basis:
    """A basis of the same kind and options with ``grid_size`` intervals (grids to be set)."""
    kwargs = {"spline_order": basis.order} if isinstance(basis, BSplineBasis) else {}
    n = basis.in_features if in_features is None else in_features
    return type(basis)(n, grid_size=grid_size, **kwargs).to(basis.lo)


class KAN(nn.Module):
    """A stack of :class:`KANLinear` layers, e.g. ``KAN([64, 128, 1])``.

    Parameters
    ----------
    widths:
        Layer widths, input first: ``len(widths) - 1`` layers.
    **layer_kwargs:
        Passed to every :class:`KANLinear` (basis, grid_size, spline_order, ...).
    """

    def __init__(self, widths: Sequence[int], **layer_kwargs) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"KAN needs at least two widths (input and output), got {widths!r}")
        self.widths = list(widths)
        # The names PyG convs read to infer widths from an ``nn`` (GINEConv, ...).
        self.in_features = self.in_channels = self.widths[0]
        self.out_features = self.out_channels = self.widths[-1]
        self.layers = nn.ModuleList(
            KANLinear(a, b, **layer_kwargs) for a, b in zip(widths[:-1], widths[1:], strict=False)
        )

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def regularization_loss(
        self, regularize_activation: float = 1.0, regularize_entropy: float = 1.0
    ) -> Tensor:
        """Sum of the layers' :meth:`KANLinear.regularization_loss`."""
        return sum(
            layer.regularization_loss(regularize_activation, regularize_entropy)
            for layer in self.layers
        )

    @torch.no_grad()
    def update_grid(self, x: Tensor, **kwargs) -> None:
        """Update every layer's grid on the activations that ``x`` produces, first to last."""
        for layer in self.layers:
            layer.update_grid(x, **kwargs)
            x = layer(x)
