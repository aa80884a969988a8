"""Timing and memory measurement shared by the benchmarks.

Every benchmark measures all of its contenders in one process, interleaved round by round, so a
noisy machine slows them alike and the ratios stay meaningful.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from kangnn.files import atomic_write_json


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step(fn: Callable[[], Tensor], params: list[Tensor]) -> None:
    """One forward+backward: ``fn`` returns a scalar loss; gradients are cleared afterwards."""
    fn().backward()
    for p in params:
        p.grad = None


def time_interleaved(
    cases: dict[str, tuple[Callable[[], Tensor], list[Tensor]]],
    device: torch.device,
    repeats: int = 10,
    warmup: int = 2,
) -> dict[str, float]:
    """Median seconds of forward+backward for each case, measured round-robin."""
    for _ in range(warmup):
        for fn, params in cases.values():
            step(fn, params)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, (fn, params) in cases.items():
            _sync(device)
            t0 = time.perf_counter()
            step(fn, params)
            _sync(device)
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(s) for name, s in samples.items()}


def peak_memory(fn: Callable[[], Tensor], params: list[Tensor], device: torch.device) -> int:
    """Peak bytes allocated during one forward+backward, above what was allocated before it.

    CUDA: the caching allocator's peak counter. CPU: the allocation and free events that the
    PyTorch profiler records, replayed in time order (CPU allocators keep no peak counter).
    """
    step(fn, params)  # warm up lazily allocated state outside the measurement
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step(fn, params)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(fn, params)
    events = [
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    ]
    current = peak = 0
    for _, nbytes in sorted(events):
        current += nbytes
        peak = max(peak, current)
    return peak


def devices() -> list[torch.device]:
    """The CPU, plus the first CUDA device where there is one."""
    out = [torch.device("cpu")]
    if torch.cuda.is_available():
        out.append(torch.device("cuda"))
    return out


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    info: dict[str, object] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def report(benchmark: str, title: str, rows: list[dict], columns, args) -> dict:
    """Print ``title`` and the table of ``rows``; write them with the settings and machine as JSON
    to ``args.out``."""
    print(title)
    print(format_table(rows, columns))
    payload = {"benchmark": benchmark, "config": vars(args), "machine": machine(), "rows": rows}
    print(f"wrote {atomic_write_json(args.out, payload)}")
    return payload


def format_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A Markdown table of ``rows`` with ``columns`` given as ``(key, header)`` pairs."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(h for _, h in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(k, "")) for k, _ in columns) + " |")
    return "\n".join(lines)
