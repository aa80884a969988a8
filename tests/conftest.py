"""Shared test fixtures (data only)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# Real MoleculeNet raw files live in ../shared/data/moleculenet beside the repository (CI always
# has them). Tests copy what they need into a temporary data root and never write there.
SHARED_MOLECULENET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "moleculenet"


def _copy_moleculenet(root: Path, *names: str) -> Path:
    """Copy ``<shared>/<name>/raw/*`` into ``root/<name>/raw/``; skip the test if absent."""
    for name in names:
        src = SHARED_MOLECULENET / name / "raw"
        files = sorted(src.glob("*.csv")) if src.is_dir() else []
        if not files:
            pytest.skip(f"real MoleculeNet data for {name!r} not found at {src}")
        dst = root / name / "raw"
        dst.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, dst / f.name)
    return root


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # One intra-op thread: on a small, shared CPU, two OpenMP threads contending with other
    # processes make tiny kernels (batch norm on a few hundred rows) 100x slower.
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="session")
def copy_moleculenet() -> Callable[..., Path]:
    """``copy_moleculenet(root, "esol", ...)`` copies real raw files into ``root`` (a data root)."""
    return _copy_moleculenet


@pytest.fixture
def moleculenet_root(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``moleculenet_root("esol", "bbbp")`` -> a temporary data root holding copies."""

    def make(*names: str) -> Path:
        return _copy_moleculenet(tmp_path / "data", *names)

    return make


@pytest.fixture(scope="session")
def esol_subset(tmp_path_factory) -> Callable[[int], Path]:
    """Factory: ``esol_subset(n)`` -> a new temporary data root holding the first ``n`` ESOL
    molecules (a copy of the real raw file, header kept)."""

    def make(rows: int) -> Path:
        root = _copy_moleculenet(tmp_path_factory.mktemp("data"), "esol")
        raw = root / "esol" / "raw" / "delaney-processed.csv"
        raw.write_text("".join(raw.read_text().splitlines(keepends=True)[: rows + 1]))
        return root

    return make
