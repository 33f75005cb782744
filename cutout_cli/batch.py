"""Run many images through the model, every core busy.

Each worker thread takes one batch through the whole pipeline: decode at reduced
size, one model call, then refine, compose and encode at full size. Pillow,
OpenCV, zlib and torch release the GIL in their heavy loops, so threads run in
parallel without pickling pixels between processes. On the CPU each thread runs
the model single-threaded (see `torch_threads`): measured on the 2-core box, two
such threads gave ~3 img/s where one model call spread over both cores, with the
other stages beside it, gave ~2.6 img/s, because OpenMP's threads spin while
waiting for cores the other stages hold.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tqdm import tqdm

from cutout_cli.inputs import InputError, Source
from cutout_cli.outputs import Output
from matting_core import manifest as manifests
from matting_core import pipeline, preprocess
from matting_core.errors import CutoutError
from matting_core.options import Options

if TYPE_CHECKING:  # the caller built the model; naming its type imports no torch
    from matting_core.model import MattingModel

# Domain errors name the file and the fix; InputError covers unreadable archive members.
ITEM_ERRORS = (CutoutError, InputError, OSError)


@dataclass
class Item:
    source: Source
    output: str  # claimed up front, in input order, so names do not depend on timing
    status: str = "pending"
    error: str | None = None
    batch_size: int | None = None  # images in the model call that made its alpha
    result: bytes | None = None
    timings: pipeline.Timings = field(default_factory=pipeline.Timings)

    def fail(self, err: Exception) -> None:
        self.status, self.error, self.result = "failed", str(err), None

    def record(self) -> dict:
        ms = {k: round(v, 1) for k, v in self.timings.ms.items()}
        return manifests.file_entry(self.source.name, self.output, self.status, self.error, self.batch_size, ms)


@dataclass
class BatchConfig:
    batch_size: int
    workers: int
    max_pixels: int


def run_batch(sources: list[Source], model: MattingModel, opts: Options, out: Output,
              cfg: BatchConfig, progress: bool = True) -> list[Item]:
    names = manifests.output_names([s.file_name for s in sources], [opts.extension] * len(sources))
    items = [Item(s, name) for s, name in zip(sources, names, strict=True)]
    batches = [items[i:i + cfg.batch_size] for i in range(0, len(items), cfg.batch_size)]
    with tqdm(total=len(items), unit="img", disable=not progress, dynamic_ncols=True) as bar, \
            ThreadPoolExecutor(cfg.workers, thread_name_prefix="cutout") as pool:
        work = lambda batch: process(batch, model, opts, cfg)  # noqa: E731
        for batch in _bounded_map(pool, work, batches, window=2 * cfg.workers):
            for item in batch:
                _deliver(item, out)
                bar.update(1)
    return items


def _bounded_map(pool: ThreadPoolExecutor, fn: Callable, jobs: Iterable, window: int) -> Iterator:
    """pool.map, but only `window` jobs in flight, so a 10,000-image run holds a few images."""
    pending: deque = deque()
    for job in jobs:
        pending.append(pool.submit(fn, job))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def process(batch: list[Item], model: MattingModel, opts: Options, cfg: BatchConfig) -> list[Item]:
    """One batch end to end; each item ends with `result` bytes or an `error`."""
    ready = []
    for item in batch:
        try:
            with item.timings.stage("read"):
                data = item.source.read()
            ready.append((item, data, pipeline.prepare(data, item.source.name, model.spec,
                                                       max_pixels=cfg.max_pixels, timings=item.timings)))
        except ITEM_ERRORS as err:
            item.fail(err)
    if ready:
        start = time.perf_counter()
        alphas = model.predict(preprocess.to_batch([x for _, _, x in ready]))
        share = (time.perf_counter() - start) * 1000 / len(ready)
        for (item, data, _), alpha in zip(ready, alphas, strict=True):
            item.timings.ms["infer"], item.batch_size = share, len(ready)
            try:
                item.result = pipeline.finish(data, item.source.name, alpha, opts,
                                              max_pixels=cfg.max_pixels, timings=item.timings)
            except ITEM_ERRORS as err:
                item.fail(err)
    return batch


def _deliver(item: Item, out: Output) -> None:
    if item.status == "failed":
        tqdm.write(f"error: {item.error}", file=sys.stderr)
        return
    with item.timings.stage("write"):
        out.write(item.output, item.result)
    item.status, item.result = "done", None


def manifest(items: list[Item], opts: Options, model: MattingModel, seconds: float) -> dict:
    return manifests.build(model.spec, opts, [i.record() for i in items], device=str(model.device),
                           precision=model.precision, seconds=seconds)
