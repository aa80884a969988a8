"""Fetching a MoleculeNet raw file, atomically: a failed download leaves nothing behind."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from torch_geometric.data import download_url, extract_gz

from kangnn.data.errors import DataError
from kangnn.data.registry import DatasetInfo
from kangnn.files import make_dirs

__all__ = ["download_raw"]

log = logging.getLogger(__name__)


def download_raw(info: DatasetInfo, raw_path: Path) -> None:
    """Fetch the raw file into ``raw_path`` atomically; clean up everything on failure."""
    created: list[Path] = []
    tmp: str | None = None
    try:
        created = make_dirs(raw_path.parent)
        tmp = tempfile.mkdtemp(dir=raw_path.parent, prefix=".download-")
        log.info("downloading %s from %s", info.display_name, info.url)
        got = Path(download_url(info.url, tmp, log=False))
        if got.suffix == ".gz":
            extract_gz(str(got), tmp, log=False)
            got = got.with_suffix("")
        if not got.is_file() or got.name != raw_path.name:
            raise OSError(f"unexpected download result {got.name!r}")
        os.replace(got, raw_path)
        created = []  # success: keep the folders
    except Exception as err:
        raise DataError(
            f"{raw_path}: raw file for {info.display_name} is missing and downloading "
            f"{info.url} failed ({type(err).__name__}: {err}); offline? copy the file there "
            "or set --data-root / KANGNN_DATA to a folder that has it"
        ) from err
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(created):
            shutil.rmtree(d, ignore_errors=True)
