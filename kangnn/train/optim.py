"""Optimiser and learning-rate schedule of a training run (the same for a KAN and its MLP twin).

Parameters fall into groups by kind, so that weight decay can spare some kinds (biases, norms,
embeddings, spline coefficients) and the KAN spline coefficients (``spline_weight`` of
:class:`~kangnn.kan.KANLinear`) can get their own learning rate. The schedule is a linear
warm-up followed by a decay (cosine or exponential), stepped after every optimiser step.

The schedule is one :class:`torch.optim.lr_scheduler.LambdaLR` with a multiplicative factor
rather than a chain of schedulers (``SequentialLR``): the factor scales every group's own base
rate, so the spline group keeps its ratio to the others, and the factor function is not saved in
checkpoints, so a run resumed with more epochs follows the schedule of its new length (a chain
would restore its old milestones).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from kangnn.config import DECAY_EXCLUDE, OPTIMIZERS, SCHEDULERS

__all__ = [
    "DECAY_EXCLUDE",
    "OPTIMIZERS",
    "SCHEDULERS",
    "lr_factor",
    "make_optimizer",
    "make_scheduler",
    "param_groups",
    "parameter_kind",
]


_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def parameter_kind(module: nn.Module, name: str) -> str:
    """The kind of parameter ``name`` owned directly by ``module``.

    ``"spline"`` (KAN spline coefficients, ``spline_weight``), ``"embedding"``, ``"norm"``
    (batch/layer/group/RMS norms, PyG's norms), ``"bias"`` or ``"weight"`` (everything else).
    """
    if name == "spline_weight":
        return "spline"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if isinstance(module, _NORMS) or type(module).__module__.startswith("torch_geometric.nn.norm"):
        return "norm"
    if name == "bias":
        return "bias"
    return "weight"


def _named_kinds(model: nn.Module) -> Iterable[tuple[str, str, nn.Parameter]]:
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            yield f"{mod_name}.{name}" if mod_name else name, parameter_kind(module, name), p


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.0,
    decay_exclude: Sequence[str] = (),
    spline_lr_scale: float = 1.0,
) -> list[dict[str, Any]]:
    """Optimiser parameter groups of ``model``.

    Parameters
    ----------
    model:
        The model whose trainable parameters are grouped.
    lr:
        Learning rate of every group but the spline one.
    weight_decay:
        Weight decay of the groups whose kind is not in ``decay_exclude``.
    decay_exclude:
        Parameter kinds (:data:`DECAY_EXCLUDE`) trained without weight decay.
    spline_lr_scale:
        The spline coefficients' learning rate is ``lr * spline_lr_scale``.

    Returns
    -------
    list of dict
        Non-empty groups, each with ``params``, ``lr``, ``weight_decay`` and a ``name``
        (``"decay"``, ``"no_decay"``, ``"spline"`` or ``"spline_no_decay"``).
    """
    unknown = sorted(set(decay_exclude) - set(DECAY_EXCLUDE))
    if unknown:
        raise ValueError(f"unknown parameter kind(s) {unknown}; valid: {', '.join(DECAY_EXCLUDE)}")
    groups: dict[str, dict[str, Any]] = {}
    for _, kind, p in _named_kinds(model):
        decay = weight_decay > 0 and kind not in decay_exclude
        name = ("spline" if kind == "spline" else "") + ("" if decay else "_no_decay")
        name = name.lstrip("_") or "decay"
        if name not in groups:
            scale = spline_lr_scale if kind == "spline" else 1.0
            groups[name] = {
                "name": name,
                "params": [],
                "lr": lr * scale,
                "weight_decay": weight_decay if decay else 0.0,
            }
        groups[name]["params"].append(p)
    return list(groups.values())


def make_optimizer(
    model: nn.Module,
    optimizer: str = "adam",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    decay_exclude: Sequence[str] = (),
    spline_lr_scale: float = 1.0,
) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` (L2 penalty in the gradient) or ``AdamW`` (decoupled decay) over
    :func:`param_groups` of ``model``."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    groups = param_groups(model, lr, weight_decay, decay_exclude, spline_lr_scale)
    cls = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=lr)


def lr_factor(
    step: int, kind: str, total_steps: int, warmup_steps: int, final_ratio: float
) -> float:
    """The learning-rate multiplier after ``step`` optimiser steps.

    A linear warm-up from ``final_ratio`` to 1 over ``warmup_steps``, then, over the remaining
    steps, constant (``"none"``), a half cosine down to ``final_ratio`` (``"cosine"``) or a
    geometric decay to ``final_ratio`` (``"exponential"``, chemprop's schedule). Past
    ``total_steps`` the factor stays at its final value.
    """
    if step < warmup_steps:
        return final_ratio + (1.0 - final_ratio) * step / warmup_steps
    if kind == "none":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if kind == "cosine":
        return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "exponential":
        return final_ratio**progress
    raise ValueError(f"unknown scheduler {kind!r}; valid: {', '.join(SCHEDULERS)}")


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    kind: str,
    total_steps: int,
    warmup_steps: int = 0,
    final_ratio: float = 0.01,
) -> torch.optim.lr_scheduler.LambdaLR | None:
    """The per-step schedule of :func:`lr_factor`; ``None`` when the rate is constant."""
    if kind not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {kind!r}; valid: {', '.join(SCHEDULERS)}")
    if kind == "none" and warmup_steps <= 0:
        return None
    warmup = max(0, int(warmup_steps))

    def factor(step: int) -> float:
        return lr_factor(step, kind, total_steps, warmup, final_ratio)

    fn: Callable[[int], float] = factor
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
