"""Whole-model benchmark: one training step of a KAN MoleculeGNN vs its parameter-matched MLP.

``python -m kangnn.bench model [--conv gin gine mpnn gated] [--batch-size 64] [--threads 1 2]
[--hidden 64] [--layers 3] [--compile off on] [--precision 32 bf16-mixed] [--out FILE]``

A training step is forward, masked loss, backward and an Adam step on a real batch of molecules
(ESOL from the data root when it is there, otherwise a built-in set of SMILES). KAN and MLP are
measured interleaved, round by round, so machine noise slows both alike. ``--compile on`` runs
both through ``torch.compile`` (``dynamic=True``; the one-off compile time of the warm-up is
reported), ``--precision bf16-mixed`` under bfloat16 autocast.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from typing import Any

import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from kangnn.bench.common import devices, peak_memory, report
from kangnn.models import MoleculeGNN, match_mlp
from kangnn.train.metrics import masked_loss
from kangnn.utils import count_parameters

# Used when no dataset is available: small drug-like molecules of varied size.
_FALLBACK_SMILES = [
    "CCO",
    "c1ccccc1O",
    "CC(=O)Nc1ccc(O)cc1",
    "CC(C)Cc1ccc(C(C)C(=O)O)cc1",
    "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
    "O=C(O)c1ccccc1OC(C)=O",
    "ClC(Cl)(Cl)Cl",
    "CCN(CC)CCOC(=O)c1ccc(N)cc1",
    "c1ccc2ccccc2c1",
    "OCC1OC(O)C(O)C(O)C1O",
    "CC(C)NCC(O)COc1cccc2ccccc12",
    "Fc1ccc(cc1)C(=O)CCCN1CCC(O)(CC1)c1ccc(Cl)cc1",
]


def _graphs(args: argparse.Namespace) -> list[Any]:
    from kangnn.data import DataError, load_dataset, smiles_to_graph

    try:
        ds = load_dataset(args.dataset, root=args.root)
        return [ds[i] for i in range(min(len(ds), args.batch_size * args.batches))]
    except (DataError, OSError):
        out = []
        for i in range(args.batch_size * args.batches):
            g = smiles_to_graph(_FALLBACK_SMILES[i % len(_FALLBACK_SMILES)])
            g.y = torch.randn(1, 1)
            out.append(g)
        return out


def build_pair(
    args: argparse.Namespace, conv: str, num_tasks: int
) -> tuple[MoleculeGNN, MoleculeGNN, dict]:
    """The KAN model and its parameter-matched MLP baseline for ``conv``."""
    from kangnn.data import feature_dims

    atom_dims, bond_dims = feature_dims("ogb")
    kwargs: dict[str, Any] = dict(
        conv=conv,
        hidden_channels=args.hidden,
        num_layers=args.layers,
        function_layers=2,
        grid_size=args.grid_size,
        spline_order=3,
        basis=args.basis,
    )
    match = match_mlp(kwargs, atom_dims, bond_dims, num_tasks)
    torch.manual_seed(0)
    kan = MoleculeGNN(atom_dims, bond_dims, num_tasks, function="kan", **kwargs)
    mlp = MoleculeGNN(
        atom_dims,
        bond_dims,
        num_tasks,
        function="mlp",
        **{**kwargs, "function_hidden_channels": match.mlp_hidden_channels},
    )
    return kan, mlp, match.as_dict()


def time_steps(
    models: dict[str, MoleculeGNN],
    batches: list[Batch],
    device: torch.device,
    repeats: int,
    warmup: int,
    precision: str = "32",
    warmup_times: dict[str, float] | None = None,
) -> dict[str, float]:
    """Median seconds per training step (forward, loss, backward, Adam) of each model.

    ``warmup_times``, when given, receives each model's total warm-up time (which holds the
    compile time of a compiled model)."""
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-3) for k, m in models.items()}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision != "32")

    def step(name: str, batch: Batch) -> None:
        opt = opts[name]
        opt.zero_grad(set_to_none=True)
        with autocast:
            out = models[name](batch)
        loss = masked_loss(out.float(), batch.y.view(batch.num_graphs, -1), "regression")
        loss.backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for m in models.values():
        m.train()
    for name in models:
        t0 = time.perf_counter()
        for i in range(warmup):
            step(name, batches[i % len(batches)])
        sync()
        if warmup_times is not None:
            warmup_times[name] = time.perf_counter() - t0
    samples: dict[str, list[float]] = {k: [] for k in models}
    for r in range(repeats):
        batch = batches[r % len(batches)]
        for name in models:
            sync()
            t0 = time.perf_counter()
            step(name, batch)
            sync()
            samples[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


COLUMNS = [
    ("device", "device"),
    ("threads", "threads"),
    ("conv", "conv"),
    ("compile", "compiled"),
    ("precision", "precision"),
    ("model", "model"),
    ("params", "params"),
    ("width", "function width"),
    ("step_ms", "train step ms"),
    ("time_vs_mlp", "time / MLP"),
    ("peak_mb", "fwd+bwd peak MiB"),
    ("mem_vs_mlp", "memory / MLP"),
    ("warmup_s", "warm-up s"),
]


def _measure(
    args: argparse.Namespace,
    conv: str,
    comp: str,
    prec: str,
    device: torch.device,
    batches: list[Batch],
    num_tasks: int,
) -> list[dict]:
    """The KAN and MLP rows of one setting, measured side by side."""
    kan, mlp, match = build_pair(args, conv, num_tasks)
    eager = {"kan": kan.to(device), "mlp": mlp.to(device)}
    models = eager
    if comp == "on":
        torch._dynamo.reset()
        models = {k: torch.compile(m, dynamic=True) for k, m in eager.items()}
    warm: dict[str, float] = {}
    times = time_steps(models, batches, device, args.repeats, args.warmup, prec, warm)
    part = []
    for name, m in models.items():
        params = list(eager[name].parameters())

        def fn(m=m, b0=batches[0]):
            return m(b0).square().mean()

        part.append(
            {
                "device": device.type,
                "conv": conv,
                "compile": comp,
                "precision": prec,
                "model": name,
                "params": count_parameters(eager[name]),
                "width": match["kan_hidden_channels" if name == "kan" else "mlp_hidden_channels"],
                "step_ms": times[name] * 1e3,
                "peak_mb": peak_memory(fn, params, device) / 2**20,
                "warmup_s": warm[name],
            }
        )
    base = part[1]
    for r in part:
        r["time_vs_mlp"] = r["step_ms"] / base["step_ms"]
        r["mem_vs_mlp"] = r["peak_mb"] / base["peak_mb"] if base["peak_mb"] else float("nan")
    return part


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="kangnn bench model", description=__doc__.splitlines()[0])
    p.add_argument("--conv", nargs="+", default=["gin", "gine", "mpnn", "gated"])
    p.add_argument("--hidden", type=int, default=64, help="node width")
    p.add_argument("--layers", type=int, default=3, help="message-passing layers")
    p.add_argument("--grid-size", type=int, default=5)
    p.add_argument("--basis", default="bspline")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=4, help="distinct batches cycled through")
    p.add_argument("--dataset", default="esol")
    p.add_argument("--root", default=None, help="data root (default: $KANGNN_DATA or data/)")
    p.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", nargs="+", choices=["off", "on"], default=["off"])
    p.add_argument("--precision", nargs="+", choices=["32", "bf16-mixed"], default=["32"])
    p.add_argument("--out", default="bench-model.json", help="JSON file to write")
    args = p.parse_args(argv)

    graphs = _graphs(args)
    batches = list(DataLoader(graphs, batch_size=args.batch_size))
    num_tasks = int(graphs[0].y.numel())
    rows: list[dict] = []
    saved = torch.get_num_threads()
    try:
        for device in devices():
            dev_batches = [b.to(device) for b in batches]
            for threads in args.threads if device.type == "cpu" else [saved]:
                torch.set_num_threads(threads)
                for conv, comp, prec in itertools.product(args.conv, args.compile, args.precision):
                    rows += _measure(args, conv, comp, prec, device, dev_batches, num_tasks)
                    rows[-2]["threads"] = rows[-1]["threads"] = threads
    finally:
        torch.set_num_threads(saved)
    title = (
        f"MoleculeGNN training step (forward, loss, backward, Adam), batch {args.batch_size} "
        f"molecules, {args.layers} layers x {args.hidden} channels, grid {args.grid_size}; "
        f"median of {args.repeats}"
    )
    return report("model", title, rows, COLUMNS, args)


if __name__ == "__main__":
    main()
