"""The LightningModule that trains a :class:`~kangnn.models.MoleculeGNN`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor

from kangnn.models import MoleculeGNN
from kangnn.train.metrics import make_metrics, masked_loss
from kangnn.train.optim import make_optimizer, make_scheduler

__all__ = ["MoleculeModule"]


class MoleculeModule(L.LightningModule):
    """Masked loss, masked metrics, optimiser and schedule around a :class:`MoleculeGNN`.

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
        Base learning rate and weight decay.
    kan_reg_weight:
        Weight of the KAN spline regulariser added to the loss (0 = off).
    optimizer:
        ``"adam"`` or ``"adamw"`` (decoupled weight decay).
    decay_exclude:
        Parameter kinds without weight decay (``bias``, ``norm``, ``embedding``, ``spline``).
    spline_lr_scale:
        Learning rate of the KAN spline coefficients relative to ``lr``.
    scheduler, warmup_epochs, min_lr_ratio:
        The per-step schedule (:func:`kangnn.train.optim.lr_factor`): a linear warm-up over
        ``warmup_epochs`` from ``min_lr_ratio * lr`` to ``lr``, then ``"none"`` (constant),
        ``"cosine"`` or ``"exponential"`` decay to ``min_lr_ratio * lr`` at the last epoch.
    compile:
        Run the model through ``torch.compile`` (dynamic shapes, zero graph breaks for every
        conv); the parameters and state dict are the plain model's.
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
        optimizer: str = "adam",
        decay_exclude: Sequence[str] = (),
        spline_lr_scale: float = 1.0,
        scheduler: str = "none",
        warmup_epochs: float = 0.0,
        min_lr_ratio: float = 0.01,
        compile: bool = False,
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
        # The compiled model shares the parameters; kept off the module tree so state dicts
        # and checkpoints are those of the plain model.
        compiled = torch.compile(self.model, dynamic=True) if compile else None
        object.__setattr__(self, "_compiled", compiled)

    def _net(self, batch: Any) -> Tensor:
        return (self.model if self._compiled is None else self._compiled)(batch)

    def forward(self, batch: Any) -> Tensor:
        """Raw model outputs (standardised units or logits)."""
        return self._net(batch)

    def predict_batch(self, batch: Any) -> Tensor:
        """Predictions in the original units (regression) or probabilities (classification)."""
        out = self._net(batch)
        if self.task == "regression":
            return out * self.target_std + self.target_mean
        return torch.sigmoid(out)

    def _target(self, batch: Any) -> Tensor:
        return batch.y.view(batch.num_graphs, -1).float()

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        out = self._net(batch)
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
        out = self._net(batch)
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

    def on_train_epoch_end(self) -> None:
        opt = self.optimizers(use_pl_optimizer=False)
        self.log("train/lr", float(opt.param_groups[0]["lr"]), on_epoch=True, sync_dist=False)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = make_optimizer(
            self.model,
            hp.optimizer,
            lr=hp.lr,
            weight_decay=hp.weight_decay,
            decay_exclude=list(hp.decay_exclude),
            spline_lr_scale=hp.spline_lr_scale,
        )
        # Steps of the whole run as Lightning plans it (epochs x batches, devices and gradient
        # accumulation included); the schedule is stepped after every optimiser step.
        total = int(self.trainer.estimated_stepping_batches)
        epochs = max(1, int(self.trainer.max_epochs or 1))
        warmup = round(hp.warmup_epochs * total / epochs)
        sched = make_scheduler(opt, hp.scheduler, total, warmup, hp.min_lr_ratio)
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
