"""Layer benchmark: ``KANLinear`` per basis vs a parameter-matched MLP and the plain recursion.

``python -m kangnn.bench layer [--batch 2048 16384] [--width 64] [--threads 1 2] [--out FILE]``

``kan-bspline`` runs the fused B-spline kernels where they apply (CPU), ``kan-bspline-eager`` the
same layer on the eager path (:func:`kangnn.kan.set_fused`), measured side by side.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from kangnn.bench.common import devices, peak_memory, report, time_interleaved
from kangnn.kan import BASES, KANLinear, set_fused
from kangnn.kan.reference import RecursiveKANLinear
from kangnn.utils import count_parameters, match_width


def mlp(width_in: int, hidden: int, width_out: int) -> nn.Module:
    """The baseline: Linear -> SiLU -> Linear."""
    return nn.Sequential(nn.Linear(width_in, hidden), nn.SiLU(), nn.Linear(hidden, width_out))


def build_cases(args: argparse.Namespace, device: torch.device) -> dict[str, nn.Module]:
    """The contenders, all on ``device``; the MLP is matched to the B-spline layer's size."""
    kw = {"grid_size": args.grid_size, "spline_order": args.spline_order}
    models: dict[str, nn.Module] = {}
    for name in BASES:
        models[f"kan-{name}"] = KANLinear(args.width, args.width, basis=name, **kw)
    target = count_parameters(models["kan-bspline"])
    hidden = match_width(lambda h: mlp(args.width, h, args.width), target)
    models["mlp"] = mlp(args.width, hidden, args.width)
    models["kan-bspline-eager"] = models["kan-bspline"]  # the same layer, fused kernels off
    if not args.no_reference:
        models["kan-recursion"] = RecursiveKANLinear.from_layer(models["kan-bspline"])
    return {k: m.to(device) for k, m in models.items()}


def run_case(
    args: argparse.Namespace, device: torch.device, threads: int, batch: int
) -> list[dict]:
    """Time and measure every contender at one thread count and batch size on one device."""
    torch.manual_seed(0)
    models = build_cases(args, device)
    x = (torch.rand(batch, args.width, device=device) * 2 - 1).requires_grad_(True)

    def case(name: str, m: nn.Module):
        def fn():
            # Each step sets the switch for its own forward and backward (they run back to back).
            set_fused(not name.endswith("-eager"))
            return m(x).sum()

        return fn, [*m.parameters(), x]

    cases = {name: case(name, m) for name, m in models.items()}
    try:
        times = time_interleaved(cases, device, repeats=args.repeats, warmup=args.warmup)
        peaks = {name: peak_memory(*cases[name], device) for name in models}
    finally:
        set_fused(True)
    rows = []
    for name, model in models.items():
        rows.append(
            {
                "device": device.type,
                "threads": threads,
                "batch": batch,
                "model": name,
                "params": count_parameters(model),
                "time_ms": times[name] * 1e3,
                "peak_mb": peaks[name] / 2**20,
            }
        )
    base = next(r for r in rows if r["model"] == "mlp")
    for r in rows:
        r["time_vs_mlp"] = r["time_ms"] / base["time_ms"]
        r["mem_vs_mlp"] = r["peak_mb"] / base["peak_mb"]
    return rows


COLUMNS = [
    ("device", "device"),
    ("threads", "threads"),
    ("batch", "batch"),
    ("model", "model"),
    ("params", "params"),
    ("time_ms", "fwd+bwd ms"),
    ("time_vs_mlp", "time / MLP"),
    ("peak_mb", "peak MiB"),
    ("mem_vs_mlp", "memory / MLP"),
]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="kangnn bench layer", description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[2048, 16384], help="rows per step")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--grid-size", type=int, default=5)
    p.add_argument("--spline-order", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-reference", action="store_true", help="skip the slow recursion")
    p.add_argument("--out", default="bench-layer.json", help="JSON file to write")
    args = p.parse_args(argv)

    rows: list[dict] = []
    saved = torch.get_num_threads()
    try:
        for device in devices():
            for threads in args.threads if device.type == "cpu" else [saved]:
                torch.set_num_threads(threads)
                for batch in args.batch:
                    rows += run_case(args, device, threads, batch)
    finally:
        torch.set_num_threads(saved)
    title = (
        f"KANLinear {args.width}->{args.width}, grid {args.grid_size}, "
        f"order {args.spline_order}; forward+backward, median of {args.repeats}"
    )
    return report("layer", title, rows, COLUMNS, args)


if __name__ == "__main__":
    main()
