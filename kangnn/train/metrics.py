"""Masked multi-task metrics built on torchmetrics.

Missing labels (NaN) are masked out everywhere. Regression metrics (RMSE, MAE) are computed per
task in the original units and averaged over tasks. Classification uses ROC-AUC per task,
averaged over the tasks that have both classes among the labelled molecules of the split; a task
with a single class is skipped (OGB's rule), and with no such task the result is NaN.

Both metric classes keep torchmetrics states with a ``dist_reduce_fx``, so they reduce correctly
across DDP processes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = ["MaskedAUROC", "MaskedRegressionMetrics", "make_metrics", "masked_loss"]


class MaskedRegressionMetrics(Metric):
    """RMSE and MAE per task over non-missing labels, averaged over tasks.

    Parameters
    ----------
    num_tasks:
        Number of target columns.

    ``compute()`` returns ``{"rmse": float tensor, "mae": float tensor}``; a task with no label
    in the split is left out of the average (NaN when no task has one).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, num_tasks: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_tasks = num_tasks
        zeros = torch.zeros(num_tasks, dtype=torch.float64)
        self.add_state("sse", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("sae", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state("count", default=zeros.clone(), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch: ``preds`` and ``target`` ``[N, T]`` in original units, NaN = missing."""
        preds, target = preds.detach().double(), target.detach().double()
        mask = ~torch.isnan(target)
        err = torch.where(mask, preds - torch.nan_to_num(target), torch.zeros_like(preds))
        self.sse += (err * err).sum(0)
        self.sae += err.abs().sum(0)
        self.count += mask.sum(0)

    def compute(self) -> dict[str, Tensor]:
        has = self.count > 0
        if not bool(has.any()):
            nan = torch.tensor(float("nan"))
            return {"rmse": nan, "mae": nan.clone()}
        rmse = torch.sqrt(self.sse[has] / self.count[has]).mean()
        mae = (self.sae[has] / self.count[has]).mean()
        return {"rmse": rmse.float(), "mae": mae.float()}


class MaskedAUROC(Metric):
    """ROC-AUC per task over labelled molecules, averaged over tasks with both classes.

    Parameters
    ----------
    num_tasks:
        Number of target columns.

    ``compute()`` returns ``{"roc_auc": tensor, "auc_tasks": tensor}``, the second being how many
    tasks entered the average. ``roc_auc`` is NaN when no task has both classes.

    Scores are kept and ranked in float64: logits beyond about ±17 all map to 1.0 (or 0.0) under
    a float32 sigmoid, which would turn confident, correctly ordered predictions into ties.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, num_tasks: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_tasks = num_tasks
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch: ``preds`` (logits or probabilities) and 0/1/NaN ``target``, ``[N, T]``."""
        self.preds.append(preds.detach().double())
        self.target.append(target.detach().double())

    def compute(self) -> dict[str, Tensor]:
        if isinstance(self.preds, list) and not self.preds:
            nan = torch.tensor(float("nan"))
            return {"roc_auc": nan, "auc_tasks": torch.tensor(0)}
        preds = dim_zero_cat(self.preds).reshape(-1, self.num_tasks)
        target = dim_zero_cat(self.target).reshape(-1, self.num_tasks)
        scores = per_task_auroc(preds, target)
        valid = [s for s in scores if not math.isnan(s)]
        value = sum(valid) / len(valid) if valid else float("nan")
        return {
            "roc_auc": torch.tensor(value, dtype=torch.float64),
            "auc_tasks": torch.tensor(len(valid)),
        }


def per_task_auroc(preds: Tensor, target: Tensor) -> list[float]:
    """ROC-AUC of each task column; NaN for a task without both classes among its labels.

    Computed in float64 as the Mann-Whitney U statistic of the positives' scores against the
    negatives', over ``n_pos * n_neg`` (the area under the ROC curve, ties counting one half).
    """
    from scipy.stats import mannwhitneyu

    preds, target = preds.double().cpu(), target.double().cpu()
    out = []
    for t in range(target.size(1)):
        mask = ~torch.isnan(target[:, t])
        y = target[mask, t]
        if y.numel() == 0 or bool((y == y[0]).all()):
            out.append(float("nan"))  # one class (or none) in this split: skip, as OGB does
            continue
        p = preds[mask, t].numpy()
        pos, neg = p[y.numpy() == 1], p[y.numpy() != 1]
        u = mannwhitneyu(pos, neg, method="asymptotic").statistic
        out.append(float(u) / (len(pos) * len(neg)))
    return out


def make_metrics(task: str, num_tasks: int, **kwargs) -> Metric:
    """The metrics of a task: regression → RMSE/MAE, classification → ROC-AUC.

    ``kwargs`` go to :class:`torchmetrics.Metric` (e.g. ``sync_on_compute=False`` for an
    evaluation that only one process of a DDP group runs).
    """
    if task == "regression":
        return MaskedRegressionMetrics(num_tasks, **kwargs)
    return MaskedAUROC(num_tasks, **kwargs)


def masked_loss(pred: Tensor, target: Tensor, task: str) -> Tensor:
    """Mean loss over labelled entries: MSE (regression) or BCE with logits (classification).

    ``target`` holds NaN where a label is missing; such entries contribute nothing. A batch with
    no label at all gives a zero loss that still depends on ``pred`` (so DDP sees every gradient).
    """
    mask = ~torch.isnan(target)
    y = torch.nan_to_num(target)
    if task == "regression":
        loss = (pred - y) ** 2
    else:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(pred, y, reduction="none")
    loss = loss * mask
    return loss.sum() / mask.sum().clamp(min=1)
