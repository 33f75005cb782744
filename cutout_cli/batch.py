"""Run many images through the model with decode and encode overlapping inference.

A thread pool decodes ahead of the model and finishes (refine, compose,
encode) behind it while the main thread runs batches: Pillow, OpenCV, zlib
and torch all release the GIL in their heavy loops, so threads keep both
cores busy without pickling pixels between processes.
"""

import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm import tqdm

from cutout_cli.inputs import InputError, Source
from cutout_cli.outputs import Output
from matting_core import pipeline, preprocess
from matting_core.errors import CutoutError
from matting_core.model import MattingModel
from matting_core.options import Options

# Domain errors name the file and the fix; InputError covers unreadable archive members.
ITEM_ERRORS = (CutoutError, InputError, OSError)


@dataclass
class Item:
    source: Source
    status: str = "pending"
    output: str | None = None
    error: str | None = None
    timings: pipeline.Timings = field(default_factory=pipeline.Timings)
    data: bytes | None = None

    def record(self) -> dict:
        ms = {k: round(v, 1) for k, v in self.timings.ms.items()}
        return {"input": self.source.name, "output": self.output, "status": self.status,
                "error": self.error, "timings_ms": ms}


@dataclass
class BatchConfig:
    batch_size: int
    workers: int
    max_pixels: int


def _prepare(item: Item, model: MattingModel, cfg: BatchConfig) -> np.ndarray:
    with item.timings.stage("read"):
        item.data = item.source.read()
    return pipeline.prepare(item.data, item.source.name, model.spec, max_pixels=cfg.max_pixels,
                            timings=item.timings)


def _finish(item: Item, alpha: np.ndarray, opts: Options, cfg: BatchConfig) -> bytes:
    try:
        return pipeline.finish(item.data, item.source.name, alpha, opts, max_pixels=cfg.max_pixels,
                               timings=item.timings)
    finally:
        item.data = None  # the pending window, not the whole batch, holds file bytes


def run_batch(sources: list[Source], model: MattingModel, opts: Options, out: Output,
              cfg: BatchConfig, progress: bool = True) -> list[Item]:
    items = [Item(s) for s in sources]
    bar = tqdm(total=len(items), unit="img", disable=not progress, dynamic_ncols=True)
    with ThreadPoolExecutor(cfg.workers, thread_name_prefix="cutout") as pool:
        todo = deque(items)
        prepared: deque[tuple[Item, Future]] = deque()
        finishing: deque[tuple[Item, Future]] = deque()
        lookahead = max(2 * cfg.batch_size, cfg.workers + 1)
        while todo or prepared:
            while todo and len(prepared) < lookahead:
                item = todo.popleft()
                prepared.append((item, pool.submit(_prepare, item, model, cfg)))
            batch = [prepared.popleft() for _ in range(min(cfg.batch_size, len(prepared)))]
            ready = []
            for item, fut in batch:
                if _settle(item, fut, bar):
                    ready.append((item, fut.result()))
            if ready:
                with _shared_stage([i for i, _ in ready], "infer"):
                    alphas = model.predict(preprocess.to_batch([x for _, x in ready]))
                for (item, _), alpha in zip(ready, alphas):
                    finishing.append((item, pool.submit(_finish, item, alpha, opts, cfg)))
            # Bound the results held in memory: wait for the oldest beyond the window.
            while len(finishing) > lookahead:
                _write(*finishing.popleft(), opts, out, bar)
        while finishing:
            _write(*finishing.popleft(), opts, out, bar)
    bar.close()
    return items


def _settle(item: Item, fut: Future, bar: tqdm) -> bool:
    """Wait for a stage; on a per-item error mark the item failed and report one line."""
    try:
        fut.result()
        return True
    except ITEM_ERRORS as err:
        item.status, item.error, item.data = "failed", str(err), None
        tqdm.write(f"error: {err}", file=sys.stderr)
        bar.update(1)
        return False


def _write(item: Item, fut: Future, opts: Options, out: Output, bar: tqdm) -> None:
    if not _settle(item, fut, bar):
        return
    item.output = out.claim(item.source.stem, opts.extension)
    with item.timings.stage("write"):
        out.write(item.output, fut.result())
    item.status = "done"
    bar.update(1)


@contextmanager
def _shared_stage(items: list[Item], name: str) -> Iterator[None]:
    """Times one batched call and charges each item its share."""
    start = time.perf_counter()
    yield
    share = (time.perf_counter() - start) * 1000 / len(items)
    for item in items:
        item.timings.ms[name] = item.timings.ms.get(name, 0.0) + share


def manifest(items: list[Item], opts: Options, model: MattingModel, cfg: BatchConfig,
             seconds: float) -> dict:
    done = sum(i.status == "done" for i in items)
    return {
        "model": {"name": model.spec.name, "weights_sha256": model.spec.sha256,
                  "device": str(model.device), "batch_size": cfg.batch_size},
        "options": asdict(opts),
        "summary": {"total": len(items), "done": done, "failed": len(items) - done,
                    "seconds": round(seconds, 3),
                    "images_per_second": round(done / seconds, 3) if seconds else None},
        "files": [i.record() for i in items],
    }
