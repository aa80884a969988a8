"""The smallest training settings the tests share, a tiny ESOL config built from them, and a
callback that interrupts training as a killed process would."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from kangnn.config import load_config

#: Overrides that make a training run take seconds (on a small slice of ESOL).
TINY_TRAIN = [
    "model.hidden_channels=16",
    "model.num_layers=2",
    "model.grid_size=3",
    "train.epochs=2",
    "train.batch_size=32",
    "train.threads=1",
    "train.progress_bar=false",
    "train.patience=0",
]


def tiny_config(root: Path, out: Path, *extra: str) -> DictConfig:
    """ESOL from the data root ``root``, runs under ``out``, a random split, ``TINY_TRAIN``, then
    ``extra``."""
    return load_config(
        None,
        [
            "dataset.name=esol",
            f"dataset.root={root}",
            f"output_dir={out}",
            "dataset.split=random",
            *TINY_TRAIN,
            *extra,
        ],
    )


class StopAt(L.Callback):
    """Interrupt training at the start of epoch ``epoch``, leaving what a killed process leaves:
    the run in ``.partial`` with the ``last.ckpt`` of the epoch before."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt
