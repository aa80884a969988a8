"""Callbacks that measure what the comparison reports: time per training epoch and peak memory."""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from typing import Any

import lightning as L
import torch

__all__ = ["EpochTimer", "PeakMemory", "current_rss_bytes"]


class EpochTimer(L.Callback):
    """Wall time of each training epoch: from its start to the end of its last optimiser step.

    Validation is excluded. The times are kept in checkpoints, so a resumed run reports all of
    its epochs.
    """

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start: float | None = None
        self._last: float | None = None

    @staticmethod
    def _now(pl_module: L.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._now(pl_module)
        self._last = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        self._last = self._now(pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None and self._last is not None:
            seconds = self._last - self._start
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
