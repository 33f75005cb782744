"""Groups single-image model calls from many task threads into batched calls on one model.

Celery hands a GPU worker one `infer` task per image, each on its own thread
(`--pool threads`). Each thread decodes its image, then submits the model input
here and waits; a model thread runs a batch when `batch_size` inputs wait or
the oldest has waited `max_wait_ms`. On a GPU one model thread owns the device;
on the CPU there is one per core, each running its batch on one intra-op thread
(as the CLI does), because one many-threaded model call at a time leaves cores
idle between calls and spins against the CPU workers' processes. Tasks stay ordinary Celery tasks, so their
chord membership, acks and retries work unchanged (celery-batches would lose
chord membership).

A worker serves every model from one process: `Batchers` keeps one Batcher per
model name, so a batch never mixes models and each model loads once, when a job
first asks for it (or at start, see tasks/app.py).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING

import numpy as np

from matting_core.preprocess import to_batch
from tasks import metrics

if TYPE_CHECKING:
    from matting_core.model import MattingModel


class Batcher:
    def __init__(self, model: MattingModel, batch_size: int, max_wait_ms: int, runners: int = 1):
        self.model = model
        self.batch_size = max(1, batch_size)
        self.max_wait = max_wait_ms / 1000
        self.runners = max(1, runners)
        self._inbox: queue.Queue[tuple[np.ndarray, Future]] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.sizes: list[int] = []  # the batch sizes run, newest last (bounded)
        self.name = model.spec.name  # the model, as metrics label it

    def predict(self, x: np.ndarray, timeout: float | None = None) -> tuple[np.ndarray, int]:
        """One 3×S×S input -> (its S×S alpha, the size of the batch it ran in)."""
        self._start()
        done: Future = Future()
        self._inbox.put((x, done))
        return done.result(timeout)

    def load(self) -> None:
        self.model.load()

    def warm_up(self) -> list[int]:
        """Load the model and run each batch size it will see once (compiling them when compiled)."""
        self.model.load()
        return self.model.warm_up(self.batch_size)

    def _start(self) -> None:
        with self._lock:
            if not self._threads:
                # The model loads here, in the worker process, never in a parent before a fork.
                self.model.load()
                for n in range(self.runners):
                    thread = threading.Thread(target=self._run, name=f"cutout-batcher-{n}", daemon=True)
                    thread.start()
                    self._threads.append(thread)

    def _run(self) -> None:
        while True:
            batch = [self._inbox.get()]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._inbox.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            self._run_batch(batch)

    def _run_batch(self, batch: list[tuple[np.ndarray, Future]]) -> None:
        try:
            alphas = self.model.predict(to_batch([x for x, _ in batch]))
            if len(alphas) != len(batch):
                raise RuntimeError(f"the model returned {len(alphas)} alphas for a batch of {len(batch)}")
        except Exception as err:  # noqa: BLE001 - handed to every waiting task, which decides; the thread lives on
            for _, done in batch:
                done.set_exception(err)
            return
        with self._lock:
            self.sizes = (self.sizes + [len(batch)])[-1000:]
        metrics.batch_size.labels(self.name).observe(len(batch))
        device = getattr(self.model, "device", None)
        if device is not None and device.type == "cuda":
            import torch

            # Not per model: the allocator's count is the device's, every loaded model's together.
            metrics.gpu_memory.set(torch.cuda.memory_allocated(device))
        for (_, done), alpha in zip(batch, alphas, strict=True):
            done.set_result((alpha, len(batch)))


class Batchers:
    """One Batcher per model name, made by `make(name)` on first use; a batch never mixes models."""

    def __init__(self, make: Callable[[str], Batcher]):
        self._make = make
        self._made: dict[str, Batcher] = {}
        # The first tasks of a worker arrive on several threads at once: without the lock two
        # of them could each make a Batcher, and so load the same model twice.
        self._lock = threading.Lock()

    def get(self, name: str) -> Batcher:
        with self._lock:
            if name not in self._made:
                self._made[name] = self._make(name)
            return self._made[name]

    def predict(self, name: str, x: np.ndarray, timeout: float | None = None) -> tuple[np.ndarray, int]:
        """`x` through model `name`'s batcher: (its alpha, the size of the batch it ran in)."""
        return self.get(name).predict(x, timeout)

    def names(self) -> list[str]:
        """The models made so far, in the order first asked for."""
        with self._lock:
            return list(self._made)
