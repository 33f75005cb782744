"""Groups single-image model calls from many task threads into batched calls on one model.

Celery hands a GPU worker one `infer` task per image, each on its own thread
(`--pool threads`). Each thread decodes its image, then submits the model input
here and waits; one model thread runs a batch when `batch_size` inputs wait or
the oldest has waited `max_wait_ms`. Tasks stay ordinary Celery tasks, so their
chord membership, acks and retries work unchanged (celery-batches would lose
chord membership).
"""

import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

from matting_core.model import MattingModel
from matting_core.preprocess import to_batch


class Batcher:
    def __init__(self, model: MattingModel, batch_size: int, max_wait_ms: int):
        self.model = model
        self.batch_size = max(1, batch_size)
        self.max_wait = max_wait_ms / 1000
        self._inbox: queue.Queue[tuple[np.ndarray, Future]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.sizes: list[int] = []  # the batch sizes run, newest last (bounded)

    def predict(self, x: np.ndarray, timeout: float | None = None) -> tuple[np.ndarray, int]:
        """One 3×S×S input -> (its S×S alpha, the size of the batch it ran in)."""
        self._start()
        done: Future = Future()
        self._inbox.put((x, done))
        return done.result(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                # The model loads here, in the worker process, never in a parent before a fork.
                self.model.load()
                self._thread = threading.Thread(target=self._run, name="cutout-batcher", daemon=True)
                self._thread.start()

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
        except Exception as err:  # noqa: BLE001 - handed to every waiting task, which decides
            for _, done in batch:
                done.set_exception(err)
            return
        self.sizes = (self.sizes + [len(batch)])[-1000:]
        for (_, done), alpha in zip(batch, alphas, strict=True):
            done.set_result((alpha, len(batch)))
