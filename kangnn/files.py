"""Atomic file writes and folder creation that can be undone, shared by every layer of kangnn.

A file is written to a temporary file in its destination folder and moved into place with
``os.replace``, so an interrupted or failed write never leaves a half-written file behind; the
folders made for it are removed again when the write fails. The module imports neither the data
layer nor RDKit, so the benchmarks, the data layer and the run directories share it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_json", "make_dirs", "remove_dirs"]


def cache_root() -> Path:
    """kangnn's per-machine cache folder: ``$KANGNN_CACHE``, else ``~/.cache/kangnn``."""
    return Path(os.environ.get("KANGNN_CACHE") or Path.home() / ".cache" / "kangnn")


def make_dirs(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created (outermost first).

    The returned paths are absolute, so they can be removed again (:func:`remove_dirs`) whatever
    the working directory is by then.
    """
    missing: list[Path] = []
    p = Path(folder).absolute()
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    Path(folder).mkdir(parents=True, exist_ok=True)
    return missing[::-1]


def remove_dirs(created: list[Path]) -> None:
    """Remove folders made by :func:`make_dirs` if they are still empty (deepest first)."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            break


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file atomically.

    Parameters
    ----------
    path : str or Path
        Destination; its parent folder is created if needed.
    write : callable
        Called with a binary file object to fill.

    Returns
    -------
    Path
        The destination.
    """
    dest = Path(path)
    created = make_dirs(dest.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            # mkstemp creates 0600 files; give the result the usual permissions instead.
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, dest)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
    except BaseException:
        remove_dirs(created)
        raise
    return dest


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as indented JSON with a final newline, atomically (see :func:`atomic_write`).

    Parameters
    ----------
    path : str or Path
        Destination; its parent folder is created if needed.
    obj : Any
        A JSON-serialisable object.
    indent : int
        Spaces per nesting level.

    Returns
    -------
    Path
        The destination.
    """
    text = json.dumps(obj, indent=indent) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
