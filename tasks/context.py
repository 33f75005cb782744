"""Per-process resources for the tasks: created lazily on first use, once per worker process.

Nothing here runs at import, so a prefork parent never holds a model, a Redis
connection or a boto3 client that its children would inherit across fork.
"""

import functools
import threading

from tasks.app import app
from tasks.batcher import Batcher, Batchers
from tasks.jobs import JobStore
from tasks.settings import Settings
from tasks.storage import Storage, make_storage


def settings() -> Settings:
    return app.conf.cutout


@functools.cache
def storage() -> Storage:
    s = settings()
    return make_storage(s.storage, home=s.home, bucket=s.s3_bucket, endpoint_url=s.s3_endpoint_url,
                        region=s.s3_region)


@functools.cache
def jobs() -> JobStore:
    s = settings()
    return JobStore.from_url(s.redis_url, retention_s=s.retention_hours * 3600)


_BATCHERS_LOCK = threading.Lock()


def batchers() -> Batchers:
    """The model batchers of this process, one per model, each made when a job first needs it."""
    # Under a lock: a worker's first tasks arrive on several threads at once, and a second
    # Batchers would load every model again.
    with _BATCHERS_LOCK:
        return _batchers()


@functools.cache
def _batchers() -> Batchers:
    return Batchers(_new_batcher)


def forget() -> None:
    """Drop every cached resource, for a process that points the app at another Redis or store (tests)."""
    for cached in (storage, jobs, _batchers):
        cached.cache_clear()


def _new_batcher(name: str) -> Batcher:
    import torch  # here, not at import: the web app reads settings and storage through this module

    from matting_core.model import get_model, torch_threads, usable_cores

    s = settings()
    model = get_model(name, device=s.device, home=s.home, precision=s.precision)
    if model.device.type == "cuda":
        # Measured on an H200 (issue 6): compiled fp16 runs 3,282 img/s at batch 64, eager 1,424.
        model.compiled = s.compile in ("auto", "on", "1", "true")
        return Batcher(model, s.batch_size or 64, s.max_wait_ms)
    cores = usable_cores()
    # One intra-op thread per model thread. With both models busy at once their runners share the
    # cores (2x threads), which costs latency, not throughput.
    torch.set_num_threads(torch_threads("cpu", cores, cores))
    return Batcher(model, s.batch_size or 1, s.max_wait_ms, runners=cores)
