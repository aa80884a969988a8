"""Glue between a config, :mod:`kangnn.data` and Lightning: dataset, split, scaler, loaders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from torch_geometric.loader import DataLoader

from kangnn.data import (
    DataError,
    MoleculeDataset,
    TargetScaler,
    load_dataset,
    load_split,
    make_split,
)
from kangnn.data.descriptors import add_descriptors, descriptor_names

__all__ = [
    "MoleculeDataModule",
    "PreparedData",
    "num_descriptors",
    "prepare_data",
    "split_seed",
]


def split_seed(cfg: DictConfig) -> int:
    """The split seed: ``dataset.split_seed`` if set, else the run's ``seed``.

    Scaffold splits ignore it (they are deterministic); random and balanced-scaffold splits use
    it, so each seed of a comparison gets its own split, the same for the KAN and MLP models.
    """
    s = cfg.dataset.split_seed
    return int(cfg.seed if s is None else s)


@dataclass
class PreparedData:
    """A loaded dataset, its split and (for regression) the scaler fitted on the train part."""

    dataset: MoleculeDataset
    split: dict[str, list[int]]
    scaler: TargetScaler | None
    split_seed: int

    @property
    def task(self) -> str:
        return self.dataset.task

    @property
    def num_tasks(self) -> int:
        return self.dataset.num_tasks

    def part(self, name: str) -> MoleculeDataset:
        return self.dataset[self.split[name]]

    def descriptors(self, name: str | None = None) -> torch.Tensor | None:
        """The descriptors ``[n, D]`` of one part (``None``: of every molecule, in dataset
        order), or ``None`` without descriptors."""
        x = getattr(self.dataset._data, "descriptors", None)
        if x is None:
            return None
        idx = torch.arange(len(self.dataset)) if name is None else torch.as_tensor(self.split[name])
        if self.dataset._indices is not None:  # a subset view: positions into the storage
            idx = torch.as_tensor(list(self.dataset.indices()))[idx]
        return x[idx.long()]


def load_from_config(cfg: DictConfig) -> MoleculeDataset:
    """Load the dataset a config names (built-in ``dataset.name`` or CSV ``dataset.path``)."""
    d = cfg.dataset
    if d.path is not None and not Path(d.path).is_file():
        raise DataError(f"dataset.path: file not found: {d.path}")
    kwargs: dict[str, Any] = dict(
        root=d.root,
        task=d.task,
        skip_invalid=d.skip_invalid,
        features=d.features,
        target_columns=list(d.target_columns) if d.target_columns else None,
    )
    if d.path is not None:
        dataset = load_dataset(
            path=d.path,
            smiles_column=d.smiles_column or "smiles",
            split_column=d.split_column if d.split == "column" else None,
            **kwargs,
        )
    else:
        dataset = load_dataset(d.name, **kwargs)
    if d.get("descriptors"):
        add_descriptors(dataset, d.descriptors)
    return dataset


def num_descriptors(cfg: DictConfig) -> int:
    """Width of the descriptor input of the model ``cfg`` describes (0 without descriptors)."""
    kind = cfg.dataset.get("descriptors")
    return len(descriptor_names(kind)) if kind else 0


def prepare_data(
    cfg: DictConfig,
    split: dict[str, list[int]] | None = None,
    reuse: MoleculeDataset | None = None,
) -> PreparedData:
    """Load the data, split it (or use ``split``) and fit the target scaler on train.

    ``dataset.split`` is a method (``scaffold``, ``balanced_scaffold``, ``random``, ``column``) or
    the path of a ``splits.json`` to reuse. ``reuse`` is an already loaded dataset of ``cfg``.
    """
    dataset = reuse if reuse is not None else load_from_config(cfg)
    seed = split_seed(cfg)
    if split is None:
        method = cfg.dataset.split
        if method.endswith(".json"):
            split = load_split(method, len(dataset))
        else:
            split = make_split(
                dataset,
                method=method,
                sizes=tuple(cfg.dataset.split_sizes),
                seed=seed,
                column=cfg.dataset.split_column,
            )
    scaler = None
    if dataset.task == "regression":
        scaler = TargetScaler().fit(dataset.y[split["train"]])
    return PreparedData(dataset=dataset, split=split, scaler=scaler, split_seed=seed)


class MoleculeDataModule(L.LightningDataModule):
    """Train/val/test loaders over a :class:`PreparedData` (train shuffled).

    The train loader shuffles with its own :class:`torch.Generator` seeded with ``seed``, not
    with the global random state, so the KAN model and its MLP twin of one seed (whose
    initialisations draw different amounts of random numbers) see the same batches in the same
    order. The generator's state is kept in checkpoints, so a resumed run continues the order.
    Under DDP Lightning's distributed sampler shuffles instead (seeded by the run's seed and the
    epoch), the same for both models too.

    The train loader drops a last batch of a single molecule, which batch normalisation of the
    graph embedding cannot handle.

    Parameters
    ----------
    data:
        The prepared data.
    batch_size, num_workers:
        As for the PyG ``DataLoader``.
    seed:
        Seed of the train loader's shuffling.
    """

    def __init__(
        self, data: PreparedData, batch_size: int = 64, num_workers: int = 0, seed: int = 0
    ) -> None:
        super().__init__()
        self.data = data
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.generator = torch.Generator().manual_seed(int(seed))

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        ds = self.data.part(part)
        drop_last = shuffle and len(ds) % self.batch_size == 1 and len(ds) > 1
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            generator=self.generator if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "generator" in state_dict:
            self.generator.set_state(state_dict["generator"])
