"""Per-process resources for the tasks: created lazily on first use, once per worker process.

Nothing here runs at import, so a prefork parent never holds a model, a Redis
connection or a boto3 client that its children would inherit across fork.
"""

import functools

from matting_core.model import get_model
from tasks.app import app
from tasks.batcher import Batcher
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


@functools.cache
def batcher() -> Batcher:
    s = settings()
    model = get_model("u2netp", device=s.device, home=s.home, precision=s.precision)
    size = s.batch_size or (8 if model.device.type == "cuda" else 1)
    return Batcher(model, size, s.max_wait_ms)
