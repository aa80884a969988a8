"""Conv benchmark: KAN message passing with and without the decomposition vs a matched MLP.

``python -m kangnn.bench conv [--csv FILE | --data-root DIR] [--quick] [--out FILE]``

For :class:`~kangnn.nn.KANMPNNConv` and :class:`~kangnn.nn.KANGatedConv` it measures the
forward+backward time and the peak memory of one layer, and the forward+backward time of its
message half alone (:meth:`~kangnn.nn.KANMPNNConv.aggregated_messages`: node parts, per-edge
messages, aggregation; the MPNN's update function is left out), in three variants, all in one
process and interleaved round by round:

* ``kan``: ``function="kan"``, ``decompose=True`` (node parts once per node);
* ``kan-naive``: the same weights with ``decompose=False`` (the whole KAN message per edge);
* ``mlp``: ``function="mlp"``, ``decompose=True``, hidden width chosen so that the layer has the
  parameter count of the KAN layer (message width unchanged). A one-layer KAN function is matched
  by a two-layer MLP: a single linear map has no width to tune.

on (a) a batch of 128 real ESOL molecules and (b) a random graph of 100k nodes with average
in-degree 10 (``--degree`` takes several values for a sweep). Node features are random floats of
width ``--hidden`` and edge features of width ``--edge-dim`` (0: layers without edge features);
the benchmark measures the layer, not the atom and bond encoders.

The ratios table also gives the multiply-accumulate ratio of the naive and the decomposed layer
(:func:`layer_macs`): the decomposition removes per-edge work only, so this is the most it can
speed a layer up. It grows with the average degree and shrinks with the edge feature width and
with the work left per edge (later message layers) or per node (the node parts, the update).

On a CPU the large graph is timed once (``--large-repeats``); the ESOL batch ``--repeats`` times.
With several threads on a busy machine OpenMP barrier waits can dominate; ``--threads 1`` gives
steadier figures there.
"""

from __future__ import annotations

import argparse
import copy
import csv
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from kangnn.bench.common import (
    devices,
    format_table,
    machine,
    peak_memory,
    time_interleaved,
)
from kangnn.files import atomic_write_json
from kangnn.nn import KANGatedConv, KANMPNNConv, get_scatter_backend
from kangnn.utils import count_parameters, match_width

LAYERS = ("mpnn", "gated")
VARIANTS = ("kan", "kan-naive", "mlp")
ESOL_RELATIVE = Path("moleculenet") / "esol" / "raw" / "delaney-processed.csv"
SHARED_DATA = Path("/work/shared/data")
#: Targets of the issue (benchmark figures, not tests).
TARGETS = {"decompose_speedup": 5.0, "time_vs_mlp": 1.5, "memory_vs_mlp": 2.0}


def build_layers(
    kind: str, hidden: int, edge_dim: int | None, message_layers: int = 2
) -> dict[str, nn.Module]:
    """The three variants of one layer kind; ``kan-naive`` shares ``kan``'s weights.

    ``edge_dim`` 0 or ``None`` builds layers without edge features; ``message_layers`` is the
    depth of the MPNN's message function.
    """
    edge_dim = edge_dim or None
    if kind == "mpnn":

        def make(function: str, width: int | None = None) -> nn.Module:
            return KANMPNNConv(
                hidden, hidden, edge_dim, function=function, hidden_channels=width,
                message_channels=hidden, message_layers=message_layers,
            )  # fmt: skip

        mlp_layers = {}
    elif kind == "gated":

        def make(function: str, width: int | None = None, **kw) -> nn.Module:
            return KANGatedConv(
                hidden, hidden, edge_dim, function=function, hidden_channels=width, **kw
            )

        mlp_layers = {"num_layers": 2}
    else:
        raise ValueError(f"unknown layer {kind!r}; valid: {', '.join(LAYERS)}")
    kan = make("kan")
    naive = copy.deepcopy(kan)
    naive.decompose = False
    target = count_parameters(kan)
    width = match_width(lambda w: make("mlp", w, **mlp_layers), target)
    return {"kan": kan, "kan-naive": naive, "mlp": make("mlp", width, **mlp_layers)}


def find_esol(csv_path: str | None, data_root: str | None) -> Path | None:
    """The ESOL CSV: ``--csv``, else under ``--data-root``, ``KANGNN_DATA``, the default root."""
    if csv_path:
        return Path(csv_path) if Path(csv_path).is_file() else None
    roots = []
    if data_root:
        roots.append(Path(data_root).expanduser())
    else:
        try:
            from kangnn.data import resolve_data_root

            roots.append(resolve_data_root())
        except ImportError:  # pragma: no cover - data module absent
            pass
        roots.append(SHARED_DATA)
    for root in roots:
        for candidate in (root / ESOL_RELATIVE, root / "esol" / "raw" / ESOL_RELATIVE.name):
            if candidate.is_file():
                return candidate
    return None


def esol_batch(path: Path, batch_size: int, seed: int = 0):
    """A PyG batch of ``batch_size`` random molecules of the ESOL CSV (topology only)."""
    from torch_geometric.data import Batch

    from kangnn.data import smiles_to_graph

    with open(path, newline="") as f:
        smiles = [row["smiles"] for row in csv.DictReader(f)]
    order = torch.randperm(len(smiles), generator=torch.Generator().manual_seed(seed)).tolist()
    graphs = []
    for i in order:
        try:
            graphs.append(smiles_to_graph(smiles[i]))
        except ValueError:
            continue
        if len(graphs) == batch_size:
            break
    return Batch.from_data_list(graphs)


def random_graph(num_nodes: int, degree: float, seed: int = 0) -> Tensor:
    """``[2, num_nodes * degree]`` random directed edges (uniform sources and targets)."""
    g = torch.Generator().manual_seed(seed)
    num_edges = int(round(num_nodes * degree))
    return torch.randint(0, num_nodes, (2, num_edges), generator=g)


def measure_setting(
    name: str,
    edge_index: Tensor,
    num_nodes: int,
    args: argparse.Namespace,
    device: torch.device,
    repeats: int,
    warmup: int,
) -> list[dict]:
    """Time and measure every variant of every layer kind on one graph."""
    torch.manual_seed(0)
    edge_index = edge_index.to(device)
    x = torch.randn(num_nodes, args.hidden, device=device, requires_grad=True)
    edge_attr = None
    inputs = [x]
    if args.edge_dim:
        edge_attr = torch.randn(edge_index.size(1), args.edge_dim, device=device)
        inputs.append(edge_attr.requires_grad_(True))
    degree = edge_index.size(1) / max(num_nodes, 1)
    rows = []
    for kind in args.layers:
        built = build_layers(kind, args.hidden, args.edge_dim, args.message_layers)
        layers = {k: m.to(device) for k, m in built.items()}
        _warm_up(layers, args, device)
        with torch.no_grad():
            ref = layers["kan"](x, edge_index, edge_attr)
            err = (layers["kan-naive"](x, edge_index, edge_attr) - ref).abs().max().item()
        cases = {
            v: ((lambda m=m: m(x, edge_index, edge_attr).square().mean()), [*m.parameters(),
                *inputs])
            for v, m in layers.items()
        }  # fmt: skip
        message_cases = {
            v: ((lambda m=m: m.aggregated_messages(x, edge_index, edge_attr).square().mean()),
                [*m.parameters(), *inputs])
            for v, m in layers.items()
        }  # fmt: skip
        times = time_interleaved(cases, device, repeats=repeats, warmup=warmup)
        message_times = time_interleaved(message_cases, device, repeats=repeats, warmup=0)
        # The cases have just run, so on CPU the warm-up step of peak_memory is skipped on the
        # large graph (it would add a third slow step per case); the profiled step is unchanged.
        skip = device.type == "cpu" and name == "synthetic"
        peaks = {
            v: peak_memory(_profiled_only(fn, params) if skip else fn, params, device)
            for v, (fn, params) in cases.items()
        }
        for variant, module in layers.items():
            rows.append({
                "setting": name,
                "device": device.type,
                "layer": kind,
                "variant": variant,
                "nodes": num_nodes,
                "edges": edge_index.size(1),
                "degree": round(degree, 2),
                "edge_dim": args.edge_dim,
                "params": count_parameters(module),
                "widths": "-".join(map(str, module.message_fn.widths)),
                "macs": layer_macs(module, num_nodes, edge_index.size(1)),
                "message_macs": layer_macs(module, num_nodes, edge_index.size(1), update=False),
                "time_ms": times[variant] * 1e3,
                "message_ms": message_times[variant] * 1e3,
                "peak_mb": peaks[variant] / 2**20,
                "max_abs_diff_vs_kan": err if variant == "kan-naive" else 0.0,
            })  # fmt: skip
        del layers, cases
    return rows


def _warm_up(layers: dict[str, nn.Module], args: argparse.Namespace, device: torch.device):
    """One forward+backward of every variant on a small graph: compiles the fused B-spline
    kernels (shape-generic) before anything is timed, also where a setting has no warm-up."""
    edge_index = random_graph(64, 4.0).to(device)
    x = torch.randn(64, args.hidden, device=device, requires_grad=True)
    edge_attr = None
    if args.edge_dim:
        edge_attr = torch.randn(edge_index.size(1), args.edge_dim, device=device)
    for m in layers.values():
        m(x, edge_index, edge_attr).sum().backward()
        m.aggregated_messages(x, edge_index, edge_attr).sum().backward()
        m.zero_grad(set_to_none=True)


def layer_macs(module: nn.Module, num_nodes: int, num_edges: int, update: bool = True) -> int:
    """Multiply-accumulates of one forward pass of the layer's functions, per unit of ``K + 1``.

    Counts ``in * out`` per layer and row: per edge the whole message function (naive) or its
    edge part and later layers (decomposed), per node the node parts and (with ``update``) the
    update function. A KAN layer costs ``K + 1`` times its count, an MLP layer once, so the ratio
    of two counts of the same function kind bounds the speedup that removing the work can give.
    """
    widths = module.message_fn.widths
    later = sum(a * b for a, b in zip(widths[1:-1], widths[2:], strict=True))
    edge = module.edge_dim or 0
    if module.decompose:
        per_edge = edge * widths[1] + later
        per_node = (widths[0] - edge) * widths[1]
    else:
        per_edge, per_node = widths[0] * widths[1] + later, 0
    update_fn = getattr(module, "update_fn", None)
    if update and update_fn is not None:
        widths = update_fn.widths
        per_node += sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    return num_edges * per_edge + num_nodes * per_node


def _profiled_only(fn: Callable[[], Tensor], params: list[Tensor]) -> Callable[[], Tensor]:
    """``fn`` under the profiler; outside it a trivial loss (a skipped warm-up step)."""

    def wrapped() -> Tensor:
        if torch.autograd._profiler_enabled():
            return fn()
        return params[0].sum() * 0.0

    return wrapped


def ratios(rows: list[dict]) -> list[dict]:
    """Per setting, device and layer: the decomposition speedup and the KAN/MLP ratios."""
    out = []
    keys = sorted({(r["setting"], r["degree"], r["device"], r["layer"]) for r in rows})
    for setting, degree, dev, layer in keys:
        by = {r["variant"]: r for r in rows if (r["setting"], r["degree"], r["device"],
              r["layer"]) == (setting, degree, dev, layer)}  # fmt: skip
        if not all(v in by for v in VARIANTS):
            continue
        kan, naive, mlp = by["kan"], by["kan-naive"], by["mlp"]
        row = {
            "setting": setting,
            "degree": degree,
            "device": dev,
            "layer": layer,
            "message_speedup": naive["message_ms"] / kan["message_ms"],
            "message_bound": naive["message_macs"] / kan["message_macs"],
            "decompose_speedup": naive["time_ms"] / kan["time_ms"],
            "decompose_bound": naive["macs"] / kan["macs"],
            "decompose_memory_saving": naive["peak_mb"] / max(kan["peak_mb"], 1e-9),
            "time_vs_mlp": kan["time_ms"] / mlp["time_ms"],
            "memory_vs_mlp": kan["peak_mb"] / max(mlp["peak_mb"], 1e-9),
        }
        row["meets_targets"] = (
            row["message_speedup"] >= TARGETS["decompose_speedup"]
            and row["time_vs_mlp"] <= TARGETS["time_vs_mlp"]
            and row["memory_vs_mlp"] <= TARGETS["memory_vs_mlp"]
        )
        out.append(row)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m kangnn.bench conv", description=__doc__.split("\n")[0]
    )
    p.add_argument("--csv", help="path to ESOL's delaney-processed.csv")
    p.add_argument(
        "--data-root", help="data root holding moleculenet/esol/raw/delaney-processed.csv"
    )
    p.add_argument("--batch-size", type=int, default=128, help="molecules per ESOL batch")
    p.add_argument("--nodes", type=int, default=100_000, help="nodes of the synthetic graph")
    p.add_argument(
        "--degree", type=float, nargs="+", default=[10.0],
        help="average in-degree of the synthetic graph (several: one graph each)",
    )  # fmt: skip
    p.add_argument("--hidden", type=int, default=64, help="node feature and KAN hidden width")
    p.add_argument("--edge-dim", type=int, default=16, help="edge feature width (0: none)")
    p.add_argument(
        "--message-layers", type=int, default=2, help="layers of the MPNN's message function"
    )
    p.add_argument("--layers", nargs="+", default=list(LAYERS), choices=LAYERS)
    p.add_argument("--repeats", type=int, default=10, help="timed rounds on the ESOL batch")
    p.add_argument(
        "--large-repeats",
        type=int,
        default=None,
        help="timed rounds on the large graph (1; 3 quick)",
    )
    p.add_argument("--warmup", type=int, default=1, help="extra untimed rounds on the ESOL batch")
    p.add_argument("--large-warmup", type=int, default=0, help="extra untimed rounds, large graph")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: as is)")
    p.add_argument("--device", choices=("all", "cpu", "cuda"), default="all")
    p.add_argument("--quick", action="store_true", help="10k-node synthetic graph, fewer repeats")
    p.add_argument("--out", default="bench-conv.json", help="JSON output file")
    args = p.parse_args(argv)
    if args.quick:
        args.nodes = min(args.nodes, 10_000)
        args.repeats = min(args.repeats, 3)
    if args.large_repeats is None:
        args.large_repeats = 3 if args.quick else 1
    return args


def run(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the tables and write the JSON; returns the JSON payload."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    devs = devices()
    if args.device != "all":
        devs = [d for d in devs if d.type == args.device]
        if not devs:
            raise SystemExit(f"device {args.device!r} is not available")
    esol = find_esol(args.csv, args.data_root)
    settings = []
    notes = []
    if esol is None:
        notes.append("ESOL not found (give --csv or --data-root): setting (a) skipped")
        print(notes[-1], file=sys.stderr)
    else:
        batch = esol_batch(esol, args.batch_size)
        settings.append(("esol", batch.edge_index, batch.num_nodes, args.repeats, args.warmup))
    for degree in args.degree:
        settings.append(("synthetic", random_graph(args.nodes, degree), args.nodes,
                         args.large_repeats, args.large_warmup))  # fmt: skip
    rows: list[dict] = []
    for device in devs:
        for name, edge_index, num_nodes, repeats, warmup in settings:
            rows += measure_setting(name, edge_index, num_nodes, args, device, repeats, warmup)
    summary = ratios(rows)
    cols = [("setting", "setting"), ("device", "device"), ("layer", "layer"),
            ("variant", "variant"), ("nodes", "nodes"), ("edges", "edges"),
            ("widths", "message widths"), ("params", "params"), ("time_ms", "layer ms"),
            ("message_ms", "message ms"), ("peak_mb", "peak MB")]  # fmt: skip
    print(format_table(rows, cols))
    print()
    print(format_table(summary, [
        ("setting", "setting"), ("degree", "degree"), ("device", "device"), ("layer", "layer"),
        ("message_speedup", f"message naive/decomposed (>= {TARGETS['decompose_speedup']:g})"),
        ("message_bound", "message MACs bound"),
        ("decompose_speedup", "layer naive/decomposed"),
        ("decompose_bound", "layer MACs bound"),
        ("decompose_memory_saving", "naive/decomposed memory"),
        ("time_vs_mlp", f"KAN/MLP time (<= {TARGETS['time_vs_mlp']:g})"),
        ("memory_vs_mlp", f"KAN/MLP memory (<= {TARGETS['memory_vs_mlp']:g})"),
        ("meets_targets", "all targets"),
    ]))  # fmt: skip
    payload = {
        "benchmark": "conv",
        "machine": machine(),
        "threads": torch.get_num_threads(),
        "scatter_backend": {d.type: get_scatter_backend(d) for d in devs},
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "esol_csv": None if esol is None else str(esol),
        "notes": notes,
        "targets": TARGETS,
        "results": rows,
        "ratios": summary,
        "wall_s": time.perf_counter() - start,
    }
    path = atomic_write_json(args.out, payload)
    print(f"\nwrote {path} ({payload['wall_s']:.0f} s, {payload['threads']} threads)")
    return payload


def main(argv: list[str] | None = None) -> None:
    run(argv)


if __name__ == "__main__":  # pragma: no cover
    main()


__all__ = ["build_layers", "main", "ratios", "run"]
