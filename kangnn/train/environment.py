"""What a run's numbers depend on besides its config: versions, kernels, threads, seeds, data.

Re-training a run from its ``config.yaml`` gives the same metrics on CPU only when these match
too: e.g. the fused B-spline kernels (``KANGNN_FUSED``) and the eager path agree to float
rounding, not bit for bit, and the rounding differences grow over an epoch. Each run writes the
record of :func:`collect_environment` as ``environment.json`` next to its ``metrics.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

__all__ = ["ENVIRONMENT_FILE", "PACKAGES", "collect_environment", "package_versions"]

ENVIRONMENT_FILE = "environment.json"

#: Distributions whose versions are recorded (``None`` when not installed).
PACKAGES = (
    "kangnn",
    "torch",
    "torch_geometric",
    "torch_scatter",
    "lightning",
    "torchmetrics",
    "rdkit",
    "numpy",
    "scipy",
    "omegaconf",
    "optuna",
    "chemprop",
)

#: Environment variables that change what runs (or how many threads it runs on).
ENV_VARS = (
    "KANGNN_FUSED",
    "KANGNN_NATIVE",
    "KANGNN_NO_SCATTER",
    "KANGNN_DATA",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUBLAS_WORKSPACE_CONFIG",
    "CUDA_VISIBLE_DEVICES",
    "PYTHONHASHSEED",
)


def package_versions() -> dict[str, str | None]:
    """The installed version of each of :data:`PACKAGES` (``None`` if absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git_state() -> dict[str, Any] | None:
    """The commit of the kangnn source tree and whether it has uncommitted changes."""
    src = Path(__file__).resolve().parents[2]
    if not (src / ".git").exists():
        return None
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", "-C", str(src), *a], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD")
        dirty = bool(run("status", "--porcelain", "--untracked-files=no", "--", "kangnn"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def _file_sha256(path: str | None) -> str | None:
    if not path or not Path(path).is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def collect_environment(
    cfg: DictConfig, data: Any, device: torch.device | str = "cpu"
) -> dict[str, Any]:
    """Everything besides ``cfg`` that the numbers of a run depend on.

    Parameters
    ----------
    cfg:
        The run's resolved config (seed, determinism, thread settings).
    data:
        Its :class:`~kangnn.train.data.PreparedData` (split, split seed, source file).
    device:
        The device it trained on.

    Returns
    -------
    dict
        ``versions`` (Python and :data:`PACKAGES`), ``git``, ``kernels`` (fused B-spline kernels,
        scatter backend, CPU capability, float32 matmul precision), ``threads``,
        ``deterministic``, ``seed``, ``split`` (method, split seed, sizes, SHA-256 of the
        indices), ``data`` (source file and its SHA-256), ``device``, ``platform`` and the
        relevant environment variables.
    """
    from kangnn.kan import fused, native
    from kangnn.nn.aggr import get_scatter_backend

    device = torch.device(device)
    split = {k: list(map(int, v)) for k, v in data.split.items()}
    split_hash = hashlib.sha256(json.dumps(split, sort_keys=True).encode()).hexdigest()
    source = getattr(data.dataset, "source", None)
    cuda = torch.cuda.is_available()
    return {
        "versions": package_versions(),
        "git": _git_state(),
        "kernels": {
            # Whether KANLinear takes the fused B-spline kernels on CPU now (set with
            # KANGNN_FUSED=0 / kangnn.kan.fused.set_fused; off for good after a failed compile).
            "fused_bspline": bool(fused.fused_enabled(torch.zeros(1))),
            # Which fused kernels serve CPU: the native ones (KANGNN_NATIVE=0 /
            # kangnn.kan.native.set_native turn them off) or torch.compile's.
            "native_bspline": bool(native.native_enabled(torch.zeros(1), 1)),
            "scatter_backend": get_scatter_backend(device),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        },
        "threads": {
            "config": cfg.train.threads,
            "intra_op": torch.get_num_threads(),
            "inter_op": torch.get_num_interop_threads(),
        },
        "deterministic": {
            "config": bool(cfg.train.deterministic),
            "torch": torch.are_deterministic_algorithms_enabled(),
        },
        "seed": int(cfg.seed),
        "split": {
            "method": str(cfg.dataset.split),
            "split_seed": int(data.split_seed),
            "sizes": {k: len(v) for k, v in split.items()},
            "sha256": split_hash,
        },
        "data": {"source": source, "sha256": _file_sha256(source), "molecules": len(data.dataset)},
        "device": {
            "type": device.type,
            "name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
            "cuda": torch.version.cuda if cuda else None,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
        },
        "platform": {"system": platform.platform(), "executable": sys.executable},
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
    }
