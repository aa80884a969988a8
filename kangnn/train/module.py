"""The LightningModule that trains a :class:`~kangnn.models.MoleculeGNN`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor

from kangnn.models import MoleculeGNN
from kangnn.train.metrics import make_metrics, masked_loss

__all__ = ["MoleculeModule"]


class MoleculeModule(L.LightningModule):
    """Masked loss, masked metrics and Adam around a :class:`MoleculeGNN`.

    Regression trains on standardised targets (MSE) and reports RMSE/MAE in the original units;
    classification trains with masked BCE-with-logits and reports ROC-AUC per task averaged over
    tasks (OGB's rule for single-class tasks). Metrics are logged per epoch as ``val/<metric>``
    and ``test/<metric>``.

    Parameters
    ----------
    model_kwargs:
        Keyword arguments of :class:`MoleculeGNN` with the function width resolved.
    atom_feature_dims, bond_feature_dims:
        Feature cardinalities.
    num_tasks:
        Number of targets.
    task:
        ``"regression"`` or ``"classification"``.
    target_mean, target_std:
        Per-task standardisation of regression targets (fitted on train); ``None`` for
        classification.
    lr, weight_decay:
        Adam settings.
    kan_reg_weight:
        Weight of the KAN spline regulariser added to the loss (0 = off).
    """

    def __init__(
        self,
        model_kwargs: Mapping[str, Any],
        atom_feature_dims: Sequence[int],
        bond_feature_dims: Sequence[int],
        num_tasks: int,
        task: str,
        target_mean: Sequence[float] | None = None,
        target_std: Sequence[float] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        kan_reg_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.task = task
        self.model = MoleculeGNN(
            list(atom_feature_dims), list(bond_feature_dims), num_tasks, **dict(model_kwargs)
        )
        mean = torch.zeros(num_tasks) if target_mean is None else torch.tensor(target_mean)
        std = torch.ones(num_tasks) if target_std is None else torch.tensor(target_std)
        self.register_buffer("target_mean", mean.float())
        self.register_buffer("target_std", std.float())
        self.val_metrics = make_metrics(task, num_tasks)
        self.test_metrics = make_metrics(task, num_tasks)

    def forward(self, batch: Any) -> Tensor:
        """Raw model outputs (standardised units or logits)."""
        return self.model(batch)

    def predict_batch(self, batch: Any) -> Tensor:
        """Predictions in the original units (regression) or probabilities (classification)."""
        out = self.model(batch)
        if self.task == "regression":
            return out * self.target_std + self.target_mean
        return torch.sigmoid(out)

    def _target(self, batch: Any) -> Tensor:
        return batch.y.view(batch.num_graphs, -1).float()

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        out = self.model(batch)
        y = self._target(batch)
        if self.task == "regression":
            y = (y - self.target_mean) / self.target_std
        loss = masked_loss(out, y, self.task)
        if self.hparams.kan_reg_weight > 0:
            loss = loss + self.hparams.kan_reg_weight * self.model.regularization_loss()
        self.log(
            "train/loss",
            loss,
            on_step=False,
            on_epoch=True,
            batch_size=batch.num_graphs,
            sync_dist=True,
        )
        return loss

    def _eval_step(self, batch: Any, metrics: Any) -> None:
        out = self.model(batch)
        y = self._target(batch)
        if self.task == "regression":
            metrics.update(out * self.target_std + self.target_mean, y)
        else:
            metrics.update(out, y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics)

    def _log_metrics(self, prefix: str, metrics: Any) -> None:
        values = metrics.compute()
        metrics.reset()
        self.log_dict(
            {f"{prefix}/{k}": v.float() for k, v in values.items() if k != "auc_tasks"},
            on_epoch=True,
            sync_dist=True,
        )

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val", self.val_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test", self.test_metrics)

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self.predict_batch(batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
