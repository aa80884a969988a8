"""Native CPU kernels of the B-spline layer (``csrc/bspline.cpp``), built on first use.

On molecule-sized batches a ``torch.compile``'d kernel costs more to call (guards, the compiled
region's wrapper: about 150 us) than to run, and a KAN layer calls two per training step. These
are plain C++ functions called through :mod:`ctypes` (a few microseconds): the features
``[N, (K + 1) P]`` of :func:`kangnn.kan.fused.features` and the spline part of the input
gradient, vectorised by the compiler over the inputs, for float32/float64 and spline orders 1-7.

The library is compiled once per source, compiler and CPU into ``$KANGNN_CACHE`` (default
``~/.cache/kangnn``) with the C++ compiler that ``torch.compile`` uses on CPU (``$CXX``, else
``g++``/``c++``); a failed build warns once and the layer keeps its ``torch.compile``'d kernels.
``KANGNN_NATIVE=0`` skips them.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

from kangnn.files import cache_root
from kangnn.kan.basis import _bspline_local_polynomials
from kangnn.utils import fall_back

SOURCE = Path(__file__).with_name("csrc") / "bspline.cpp"
MAX_ORDER = 7  # the orders compiled in (the kernel's switch)
_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC"]
_state = {"enabled": os.environ.get("KANGNN_NATIVE", "1") != "0", "failed": None}


def set_native(enabled: bool) -> None:
    """Use the native CPU kernels where they apply (default) or the ``torch.compile``'d ones."""
    _state["enabled"] = bool(enabled)


def native_enabled(x: Tensor, order: int) -> bool:
    """Whether the native kernels serve ``x`` (a float32/64 CPU tensor) at spline ``order``."""
    return (
        _state["enabled"]
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and 1 <= order <= MAX_ORDER
        and _library() is not None
    )


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: a library built here may not run on another CPU."""
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((ln for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return platform.machine() + platform.processor() + flags


def _cache_dir() -> Path:
    return cache_root() / "kernels"


def _build(cxx: str) -> Path:
    """The compiled library, built unless its cached copy exists (written atomically, so
    concurrent runs on one machine never load a half-written file)."""
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + repr((_FLAGS, version, _cpu_signature())).encode()).hexdigest()
    path = _cache_dir() / f"bspline-{key[:16]}.so"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        out = Path(tmp) / path.name
        # OpenMP where the compiler has it (threads > 1); without it the kernels run serially.
        for extra in (["-fopenmp"], []):
            cmd = [cxx, *_FLAGS, *extra, str(SOURCE), "-o", str(out)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode == 0:
                break
        else:
            raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "failed")
        os.replace(out, path)
    return path


@cache
def _library() -> ctypes.CDLL | None:
    if _state["failed"] is not None:
        return None
    cxx = _compiler()
    try:
        if cxx is None:
            raise RuntimeError("no C++ compiler found (set $CXX)")
        lib = ctypes.CDLL(str(_build(cxx)))
    except Exception as err:  # noqa: BLE001 - any build failure means: use the compiled kernels
        fall_back(
            _state,
            err,
            "the native B-spline kernels could not be built",
            "using the torch.compile'd kernels (KANGNN_NATIVE=0 skips the attempt)",
            stacklevel=4,
        )
        return None
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for suffix in ("f32", "f64"):
        fn = getattr(lib, f"kangnn_features_{suffix}")
        fn.argtypes = [p, p, p, i64, i64, i32, i32, p, p, i32]
        fn.restype = i32
        fn = getattr(lib, f"kangnn_input_grad_{suffix}")
        fn.argtypes = [p, p, p, p, i64, i64, i32, i32, p, p, i32]
        fn.restype = i32
    return lib


@cache
def _polynomials(order: int) -> Tensor:
    return torch.tensor(_bspline_local_polynomials(order), dtype=torch.float64).contiguous()


def _ready(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` as a contiguous tensor of ``dtype`` (no copy, the common case, when it is one)."""
    if t.dtype != dtype:
        t = t.to(dtype)
    return t if t.is_contiguous() else t.contiguous()


def _kernel(name: str, x: Tensor):
    return getattr(_library(), f"{name}_{'f32' if x.dtype == torch.float32 else 'f64'}")


def spline_features(x: Tensor, shift: Tensor, inv_h: Tensor, num: int, order: int, out: Tensor):
    """Write the ``num`` B-spline values of every input into ``out[:, P:]`` (``out`` a
    contiguous ``[N, (num + 1) P]`` tensor of ``x``'s dtype; its first ``P`` columns are left
    as they are)."""
    x = _ready(x, x.dtype)
    shift, inv_h = _ready(shift, x.dtype), _ready(inv_h, x.dtype)
    status = _kernel("kangnn_features", x)(
        x.data_ptr(), shift.data_ptr(), inv_h.data_ptr(), x.shape[0], x.shape[1], order, num,
        _polynomials(order).data_ptr(), out.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    if status:
        raise ValueError(f"the native B-spline kernels have no spline order {order}")


def add_spline_input_grad(
    x: Tensor, g: Tensor, shift: Tensor, inv_h: Tensor, num: int, order: int, grad_x: Tensor
):
    """``grad_x += inv_h * sum_i g[:, (i + 1) P + p] dB_i/dv`` in place (``g`` laid out like
    the features, ``grad_x`` a contiguous ``[N, P]`` tensor of ``x``'s dtype)."""
    x = _ready(x, x.dtype)
    g, shift, inv_h = _ready(g, x.dtype), _ready(shift, x.dtype), _ready(inv_h, x.dtype)
    status = _kernel("kangnn_input_grad", x)(
        x.data_ptr(), g.data_ptr(), shift.data_ptr(), inv_h.data_ptr(), x.shape[0], x.shape[1],
        order, num, _polynomials(order).data_ptr(), grad_x.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    if status:
        raise ValueError(f"the native B-spline kernels have no spline order {order}")
