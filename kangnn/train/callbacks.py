"""Lightning callbacks: the KAN grid fit (before and during training), what the comparison
reports (time per training epoch, peak memory), and the random state a resumed run continues."""

from __future__ import annotations

import os
import random
import resource
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from kangnn.train.rundir import LAST_CKPT

__all__ = [
    "EpochTimer",
    "GridFit",
    "PeakMemory",
    "RandomState",
    "current_rss_bytes",
    "every_epoch_checkpoint",
    "grid_fit_sample",
]


def every_epoch_checkpoint(dirpath: Path) -> ModelCheckpoint:
    """A checkpoint ``dirpath/last.ckpt`` rewritten after every epoch: what an interrupted run
    continues from. (Lightning's ``save_last`` rewrites it only when the monitored metric
    improves, so a resume would replay every epoch since the best one.)"""
    return ModelCheckpoint(
        dirpath=dirpath,
        filename=LAST_CKPT.stem,
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
    )


def _numpy_state() -> tuple[str, torch.Tensor, int, int, float]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return (
        str(kind),
        torch.from_numpy(keys.astype(np.int64)),
        int(pos),
        int(has_gauss),
        float(gauss),
    )


class RandomState(L.Callback):
    """Keep the global random state (torch, CUDA, NumPy, ``random``) in checkpoints.

    Dropout draws from torch's global generator, which Lightning's checkpoints do not hold: a
    run resumed from ``last.ckpt`` would draw other masks than the uninterrupted run did. With
    this callback the state at the checkpoint is restored when the resumed fit starts training
    (``on_train_start``: after the model was built and the checkpoint loaded, which draw numbers
    of their own), so a deterministic run interrupted and resumed ends with the same weights and
    metrics as one that ran through. ``restored`` tells whether a state was restored.

    A training DataLoader without a generator of its own (chemprop's) draws one number from
    torch's global generator each time a pass over it starts (its workers' base seed, as
    ``torch.utils.data`` documents); a resumed fit starts its first pass before this hook, so that
    draw is made again after the restore, where the uninterrupted run made it.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None
        self.restored = False

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            # plain values and tensors only: checkpoints are read with weights_only=True
            "numpy": _numpy_state(),
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._pending = self._pending, None
        if not state:
            return
        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        loader = trainer.train_dataloader
        if isinstance(loader, torch.utils.data.DataLoader) and loader.generator is None:
            torch.empty((), dtype=torch.int64).random_()
        self.restored = True


class EpochTimer(L.Callback):
    """Wall time of each training epoch: from its start to the end of its last optimiser step.

    Validation is excluded. The times are kept in checkpoints, so a resumed run reports all of
    its epochs.
    """

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start: Any = None
        self._last: Any = None

    @staticmethod
    def _mark(pl_module: L.LightningModule, event: Any = None) -> Any:
        # On CUDA a recorded event, so nothing waits for the device per batch: the epoch's
        # single synchronisation is in on_train_epoch_end. On CPU the wall clock.
        if pl_module.device.type == "cuda":
            event = event or torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._mark(pl_module)
        self._last = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        self._last = self._mark(pl_module, self._last)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None and self._last is not None:
            if isinstance(self._last, float):
                seconds = self._last - self._start
            else:
                self._last.synchronize()
                seconds = self._start.elapsed_time(self._last) / 1000.0
            self.times.append(seconds)
            pl_module.log(
                "train/epoch_time_s", seconds, on_epoch=True, sync_dist=False, rank_zero_only=True
            )
        self._start = self._last = None

    def state_dict(self) -> dict[str, Any]:
        return {"times": list(self.times)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.times = list(state_dict.get("times", []))

    def epoch_time(self) -> float | None:
        """Median epoch time, leaving out the first epoch (warm-up) when there are 3 or more.

        The median, not the mean, so that a burst of other work on a shared machine during one
        epoch does not decide the figure.
        """
        times = sorted(self.times[1:] if len(self.times) >= 3 else self.times)
        if not times:
            return None
        mid = len(times) // 2
        return times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2


def current_rss_bytes() -> int | None:
    """Resident set size of this process, from ``/proc`` (Linux); ``None`` elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _maxrss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class PeakMemory(L.Callback):
    """Peak memory of training (fit), above what was in use when it started.

    On CUDA: ``torch.cuda.max_memory_allocated`` (``kind = "cuda_max_allocated"``). On CPU: the
    peak resident set size (a sampling thread plus the kernel's high-water mark) minus the RSS at
    the start of fit (``kind = "cpu_rss_delta"``); it is cleanest in a fresh process, which is
    why ``kangnn compare`` runs each training in its own process by default.
    """

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.kind = "cpu_rss_delta"
        self.peak_bytes: int = 0
        self._base = 0
        self._maxrss0 = 0
        self._sampled = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            rss = current_rss_bytes()
            if rss is not None and rss > self._sampled:
                self._sampled = rss

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            self.kind = "cuda_max_allocated"
            torch.cuda.synchronize(pl_module.device)
            torch.cuda.reset_peak_memory_stats(pl_module.device)
            self._base = torch.cuda.memory_allocated(pl_module.device)
            return
        self.kind = "cpu_rss_delta"
        self._base = current_rss_bytes() or _maxrss_bytes()
        self._sampled = self._base
        self._maxrss0 = _maxrss_bytes()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(pl_module)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._finish(pl_module)

    def _finish(self, pl_module: L.LightningModule) -> None:
        if self.kind == "cuda_max_allocated":
            torch.cuda.synchronize(pl_module.device)
            peak = torch.cuda.max_memory_allocated(pl_module.device) - self._base
        else:
            if self._thread is None:
                return
            self._stop.set()
            self._thread.join()
            self._thread = None
            peak = self._sampled
            maxrss = _maxrss_bytes()
            if maxrss > self._maxrss0:  # the high-water mark moved during fit: it is exact
                peak = max(peak, maxrss)
            peak -= self._base
        self.peak_bytes = max(self.peak_bytes, int(peak))

    def state_dict(self) -> dict[str, Any]:
        return {"peak_bytes": self.peak_bytes, "kind": self.kind}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # A resumed run keeps the larger of the two peaks (same device kind only).
        if state_dict.get("kind") == self.kind:
            self.peak_bytes = int(state_dict.get("peak_bytes", 0))


def grid_fit_sample(num_items: int, size: int, seed: int) -> list[int]:
    """Positions of ``min(size, num_items)`` items drawn without replacement, in drawn order.

    The draw depends on ``seed`` only (NumPy's generator), not on any global random state, so
    every DDP process and a resumed run draw the same items.
    """
    if num_items < 0 or size < 0:
        raise ValueError(f"num_items and size must be >= 0, got {num_items}, {size}")
    rng = np.random.default_rng(int(seed) % 2**32)
    return rng.permutation(num_items)[: min(size, num_items)].tolist()


class GridFit(L.Callback):
    """Fit every KAN grid to training molecules before training, and optionally refresh them.

    At the start of fit the grids of every :class:`~kangnn.kan.KANLinear` in the LightningModule
    (the first layers of decomposed messages included) are fitted by
    :func:`kangnn.kan.grids.fit_grids` on ``num_molecules`` training molecules: a seeded random
    sample (``sample="random"``) or the first ones (``"first"``, in the order of
    ``train_data``). With ``refresh_every=N`` they are fitted again, on the same molecules, at
    the start of every N-th epoch (``N, 2N, ...``) before ``refresh_until``: the grids follow the
    drift of the activations during training. Every fit is in place: the same ``Parameter``
    objects, so the optimizer and its state (Adam's moments) carry on. The first fit keeps the
    initial coefficients (``refit=False``: a random spline is as random on any range, and a
    least-squares re-expression of it would only add ill-conditioned directions); a refresh
    refits them by least squares so each layer's learned function is kept on its inputs from
    the sample. (One sample for every fit: a refit on other molecules would add the difference
    of the two samples' ranges to each layer's refit error.)

    A fit changes no global random state (dropout during the fit draws from a forked RNG), so a
    KAN run and its MLP twin see the same random stream afterwards. A run resumed from a
    checkpoint (``trainer.fit(ckpt_path=...)``) is not fitted again at the start of fit: its
    checkpoint holds the fitted grids; refreshes happen at the same epochs as without the
    interruption.

    Under DDP every process fits on the same sample (drawn from ``seed``, not from the process),
    then process 0's grids and KAN weights are broadcast
    (``trainer.strategy.broadcast``) so all replicas hold bit-identical layers.

    Parameters
    ----------
    train_data:
        The training molecules (a sequence of PyG ``Data``, e.g. ``PreparedData.part("train")``).
    num_molecules:
        Sample size per fit.
    seed:
        Seed of the sample (the run's seed).
    sample:
        ``"random"`` or ``"first"``.
    initial:
        Fit at the start of fit (``model.grid_init: data``); ``False`` keeps the initial grids.
    refresh_every:
        Refit every this many epochs; 0 = never.
    refresh_until:
        No refresh at this epoch (0-based) or later; ``None`` = until the end.
    **fit_kwargs:
        Passed to :meth:`~kangnn.kan.KANLinear.update_grid` (``grid_eps``, ``percentile``;
        ``refit`` is set per fit as above).
    """

    def __init__(
        self,
        train_data: Sequence[Any],
        num_molecules: int = 512,
        seed: int = 0,
        sample: str = "random",
        initial: bool = True,
        refresh_every: int = 0,
        refresh_until: int | None = None,
        **fit_kwargs: Any,
    ) -> None:
        if sample not in ("random", "first"):
            raise ValueError(f"unknown grid-fit sample {sample!r}; valid: random, first")
        if num_molecules < 1:
            raise ValueError(f"num_molecules must be >= 1, got {num_molecules}")
        if refresh_every < 0:
            raise ValueError(f"refresh_every must be >= 0, got {refresh_every}")
        self.train_data = train_data
        self.num_molecules = num_molecules
        self.seed = seed
        self.sample = sample
        self.initial = initial
        self.refresh_every = refresh_every
        self.refresh_until = refresh_until
        self.fit_kwargs = fit_kwargs
        if "refit" in fit_kwargs:
            raise ValueError("GridFit sets refit itself (off for the first fit, on for refreshes)")
        #: Epochs (0-based) at whose start the grids were fitted; ``-1`` = the start of fit.
        self.fitted_at: list[int] = []

    def sample_indices(self) -> list[int]:
        """Positions in ``train_data`` of the molecules every fit uses."""
        n = len(self.train_data)
        if self.sample == "first":
            return list(range(min(self.num_molecules, n)))
        return grid_fit_sample(n, self.num_molecules, self.seed)

    def refresh_due(self, epoch: int) -> bool:
        """Whether the grids are refitted at the start of ``epoch`` (0-based)."""
        if self.refresh_every <= 0 or epoch <= 0 or epoch % self.refresh_every:
            return False
        return self.refresh_until is None or epoch < self.refresh_until

    def fit(self, pl_module: L.LightningModule, refit: bool = True) -> int:
        """Fit the grids of ``pl_module`` on the sample, refitting the spline coefficients to
        keep each layer's function (``refit``) or keeping them; the number of KAN layers fitted
        (0 without KAN layers or with fewer than two molecules)."""
        from torch_geometric.data import Batch

        from kangnn.kan import KANLinear
        from kangnn.kan.grids import fit_grids

        positions = self.sample_indices()
        if len(positions) < 2 or not any(isinstance(m, KANLinear) for m in pl_module.modules()):
            return 0  # batch norm needs two graphs; an MLP has no grid
        batch = Batch.from_data_list([self.train_data[i] for i in positions]).to(pl_module.device)
        cuda = [pl_module.device] if pl_module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            kwargs = {**self.fit_kwargs, "refit": refit}
            return fit_grids(pl_module, lambda: pl_module(batch), **kwargs)

    def _fit_and_sync(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> None:
        fitted = self.fit(pl_module, refit=epoch >= 0)
        if fitted and trainer.world_size > 1:
            sync_kan_layers(pl_module, trainer.strategy.broadcast)
        self.fitted_at.append(epoch)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A resumed run restores the fitted grids (and this callback's state) from its checkpoint.
        if self.initial and trainer.ckpt_path is None and -1 not in self.fitted_at:
            self._fit_and_sync(trainer, pl_module, -1)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self.refresh_due(epoch) and epoch not in self.fitted_at:
            self._fit_and_sync(trainer, pl_module, epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"fitted_at": list(self.fitted_at)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.fitted_at = list(state_dict.get("fitted_at", []))


def sync_kan_layers(module: torch.nn.Module, broadcast: Any) -> None:
    """Overwrite, in place, every KAN layer's parameters and grid buffers with process 0's.

    ``broadcast(obj, src=0)`` returns process 0's ``obj`` in every process (Lightning's
    ``trainer.strategy.broadcast``). The tensors keep their identity (``copy_``), so optimizer
    state and DDP's parameter references stay valid.
    """
    from kangnn.kan import KANLinear

    own = {
        f"{name}.{key}": t
        for name, m in module.named_modules()
        if isinstance(m, KANLinear)
        for key, t in m.state_dict(keep_vars=True).items()
    }
    state = broadcast({k: t.detach().cpu() for k, t in own.items()}, src=0)
    with torch.no_grad():
        for key, t in own.items():
            t.copy_(state[key].to(t.device))
