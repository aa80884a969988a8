"""How much of a trained KAN's output the spline branch carries, per KAN layer, on data.

Every :class:`~kangnn.kan.KANLinear` output is a base branch plus a spline branch,
``y = b(x) + s(x)`` with ``b(x) = W_b act(x)`` and ``s(x) = sum_k c_k B_k(x)``. A KAN whose
splines "do nothing" has ``Var(s) << Var(b)``: each learned function is then a scaled base
activation, and the model is an MLP in disguise. :func:`spline_variance_share` measures, for each
layer on real inputs,

* ``share = Var(s) / (Var(s) + Var(b))``: the spline's part of the two branches' variance
  (0 = base only, 1 = spline only; the layer's ``spline_scale`` is its value at initialisation
  for standardised, independent inputs);
* ``std_ratio = std(s) / std(b)``;
* ``share_of_output = Var(s) / Var(y)`` (it can pass 1 when the branches cancel each other),

where ``Var`` is summed over the layer's outputs and taken over every row the layer evaluates
(nodes, edges or graphs). ``python -m kangnn.train.spline_share RUN_DIR`` prints the table of a
finished run (on its validation molecules by default).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = [
    "SplineShare",
    "format_spline_shares",
    "naive_messages",
    "run_spline_shares",
    "spline_variance_share",
    "summarize_spline_shares",
]


@dataclass(frozen=True)
class SplineShare:
    """The spline branch's variance share of one KAN layer (see the module docstring).

    Attributes
    ----------
    layer:
        The layer's name in the model (``convs.0.nn.layers.1``).
    rows:
        Rows the statistics are over.
    var_base, var_spline, var_output:
        Variance of each branch and of the output, summed over the output features.
    """

    layer: str
    rows: int
    var_base: float
    var_spline: float
    var_output: float

    @property
    def share(self) -> float:
        total = self.var_base + self.var_spline
        return self.var_spline / total if total > 0 else math.nan

    @property
    def std_ratio(self) -> float:
        return math.sqrt(self.var_spline / self.var_base) if self.var_base > 0 else math.inf

    @property
    def share_of_output(self) -> float:
        return self.var_spline / self.var_output if self.var_output > 0 else math.nan

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(share=self.share, std_ratio=self.std_ratio, share_of_output=self.share_of_output)
        return out


class _Moments:
    """Running sums (float64) for the per-feature variances of base, spline and output."""

    def __init__(self) -> None:
        self.n = 0
        self.sums: dict[str, Tensor] = {}

    def add(self, name: str, values: Tensor) -> None:
        v = values.detach().reshape(-1, values.shape[-1]).double()
        s1, s2 = v.sum(0), (v * v).sum(0)
        if name in self.sums:
            self.sums[name][0] += s1
            self.sums[name][1] += s2
        else:
            self.sums[name] = [s1, s2]

    def variance(self, name: str) -> float:
        s1, s2 = self.sums[name]
        mean = s1 / self.n
        return float((s2 / self.n - mean * mean).clamp_min(0).sum())


@contextlib.contextmanager
def naive_messages(model: nn.Module) -> Iterator[None]:
    """Within the block every layer with a ``decompose`` switch evaluates its messages per edge.

    The decomposed and the per-edge message are equal, but only the per-edge one hands each KAN
    layer its whole input row (``[h_i || h_j || e_ij]``), which the branch statistics need.
    """
    switched = [m for m in model.modules() if isinstance(getattr(m, "decompose", None), bool)]
    saved = [m.decompose for m in switched]
    try:
        for m in switched:
            m.decompose = False
        yield
    finally:
        for m, value in zip(switched, saved, strict=True):
            m.decompose = value


def _branches(layer: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(base, spline)`` outputs of a KAN layer on ``x``: the layer with its spline
    coefficients set to zero, and the rest."""
    total = layer(x)
    zeros = {"spline_weight": torch.zeros_like(layer.spline_weight)}
    base = functional_call(layer, zeros, (x,))
    return base, total - base


@torch.no_grad()
def spline_variance_share(
    model: nn.Module,
    batches: Iterable[Any],
    forward: Callable[[Any], Any] | None = None,
    device: torch.device | str | None = None,
) -> list[SplineShare]:
    """The spline branch's variance share of every KAN layer of ``model`` on ``batches``.

    The model runs in eval mode (batch-norm running statistics, no dropout) with its messages
    evaluated per edge (:func:`naive_messages`); each :class:`~kangnn.kan.KANLinear` records its
    inputs, and both branches are evaluated on them.

    Parameters
    ----------
    model:
        Any module holding KAN layers (a :class:`~kangnn.models.MoleculeGNN`, a
        :class:`~kangnn.train.MoleculeModule`, a :class:`~kangnn.kan.KAN`).
    batches:
        Inputs to run the model on (e.g. a PyG ``DataLoader`` of validation molecules).
    forward:
        ``forward(batch)`` runs the model (default ``model(batch)``).
    device:
        Where batches are moved (with ``.to``); default: the model's device.

    Returns
    -------
    list[SplineShare]
        One per KAN layer that ran, in the order of ``model.named_modules()``. Empty for a
        model without KAN layers.
    """
    from kangnn.kan import KANLinear

    names = {m: n for n, m in model.named_modules() if isinstance(m, KANLinear)}
    if not names:
        return []
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else "cpu"
    forward = forward or model
    moments: dict[nn.Module, _Moments] = {}
    seen: list[tuple[nn.Module, Tensor]] = []
    recording = False

    def record(layer: nn.Module, args: tuple, out: Tensor) -> None:
        if recording:  # not while the branches are evaluated below
            seen.append((layer, args[0]))

    hooks = [m.register_forward_hook(record) for m in names]
    was_training = model.training
    model.eval()
    try:
        with naive_messages(model):
            for batch in batches:
                seen.clear()
                recording = True
                forward(batch.to(device) if hasattr(batch, "to") else batch)
                recording = False
                for layer, x in seen:
                    base, spline = _branches(layer, x)
                    mom = moments.setdefault(layer, _Moments())
                    mom.n += base.reshape(-1, base.shape[-1]).shape[0]
                    mom.add("base", base)
                    mom.add("spline", spline)
                    mom.add("output", base + spline)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [
        SplineShare(
            layer=name,
            rows=moments[m].n,
            var_base=moments[m].variance("base"),
            var_spline=moments[m].variance("spline"),
            var_output=moments[m].variance("output"),
        )
        for m, name in names.items()
        if m in moments and moments[m].n > 1
    ]


def summarize_spline_shares(shares: list[SplineShare]) -> dict[str, float | int]:
    """``mean_share``, ``median_share``, ``min_share``, ``max_share`` over layers, and
    ``layers`` (their number); NaN figures for an empty list."""
    values = sorted(s.share for s in shares if not math.isnan(s.share))
    if not values:
        nan = math.nan
        return {"layers": 0, "mean_share": nan, "median_share": nan, "min_share": nan,
                "max_share": nan}  # fmt: skip
    mid = len(values) // 2
    median = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    return {
        "layers": len(values),
        "mean_share": sum(values) / len(values),
        "median_share": median,
        "min_share": values[0],
        "max_share": values[-1],
    }


def format_spline_shares(shares: list[SplineShare]) -> str:
    """A plain-text table: one line per layer, then the mean."""
    lines = [f"{'layer':<40} {'rows':>8} {'share':>7} {'std s/b':>8} {'s/out':>7}"]
    for s in shares:
        lines.append(
            f"{s.layer:<40} {s.rows:>8} {s.share:>7.3f} {s.std_ratio:>8.3f} "
            f"{s.share_of_output:>7.3f}"
        )
    summary = summarize_spline_shares(shares)
    lines.append(
        f"{'mean over ' + str(summary['layers']) + ' layers':<49} {summary['mean_share']:>7.3f}"
    )
    return "\n".join(lines)


def run_spline_shares(
    run_dir: str | Path,
    part: str = "val",
    checkpoint: str = "best",
    batch_size: int = 64,
    data_root: str | None = None,
) -> list[SplineShare]:
    """:func:`spline_variance_share` of a finished run (``kangnn train``'s run directory) on
    the ``part`` (``train``, ``val`` or ``test``) molecules of its own split.

    Raises
    ------
    kangnn.train.RunDirError
        A run directory without config, checkpoint or ``splits.json``.
    ValueError
        An unknown ``part``.
    """
    from torch_geometric.loader import DataLoader

    from kangnn.data import load_split
    from kangnn.train.data import prepare_data
    from kangnn.train.run import load_run
    from kangnn.train.rundir import SPLITS_FILE, RunDirError

    if part not in ("train", "val", "test"):
        raise ValueError(f"unknown part {part!r}; valid: train, val, test")
    run = Path(run_dir)
    cfg, module, _ = load_run(run, checkpoint)
    if not (run / SPLITS_FILE).is_file():
        raise RunDirError(f"{run}: no {SPLITS_FILE}")
    if data_root is not None:
        cfg.dataset.root = data_root
    data = prepare_data(cfg, load_split(run / SPLITS_FILE))
    loader = DataLoader(data.part(part), batch_size=batch_size, shuffle=False)
    return spline_variance_share(module, loader)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kangnn.train.spline_share",
        description="Per-layer variance share of the spline branch of a trained KAN run.",
    )
    parser.add_argument("run_dir")
    parser.add_argument("--part", default="val", choices=("train", "val", "test"))
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    from kangnn.config import ConfigError
    from kangnn.data import DataError
    from kangnn.train.rundir import CheckpointError, RunDirError

    try:
        shares = run_spline_shares(
            args.run_dir, args.part, args.checkpoint, data_root=args.data_root
        )
    except (ConfigError, DataError, RunDirError, CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not shares:
        print("no KAN layers in this run (an MLP model?)")
    elif args.json:
        print(json.dumps([s.as_dict() for s in shares], indent=1))
    else:
        print(format_spline_shares(shares))
    return 0


if __name__ == "__main__":
    sys.exit(main())
