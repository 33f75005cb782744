"""Nothing of a deleted job stays: tasks clean up what they wrote after the DELETE, the purge deletes the
prefix again, the sweep removes prefixes no record points at. Real Redis, local and S3 storage."""

import io
import time

import numpy as np
import pytest
from PIL import Image

from matting_core import encode
from matting_core.options import Options
from tasks import context, keys
from tasks.settings import Settings
from tasks.submit import record_job
from tasks.upkeep import purge, sweep
from tasks.work import finish
from tests.reliability.conftest import small_photos
from tests.tasks.conftest import REGION, point_app_at


def objects(storage, job: str) -> list[str]:
    prefix = keys.job_prefix(job)
    return [p for p in storage.prefixes("jobs/") if p == prefix]


def with_alpha(storage, store) -> str:
    """A recorded 1-image job whose alpha map is stored, as infer leaves it for finish."""
    job = record_job(storage, store, "alice", small_photos(1), Options(), model="u2netp")
    w, h = Image.open(io.BytesIO(storage.get(keys.input_key(job, 0)))).size
    storage.put(keys.alpha_key(job, 0), encode.encode_mask(np.full((h // 4, w // 4), 0.5, np.float32)))
    return job


def test_a_finish_that_stores_its_output_after_the_delete_removes_the_jobs_objects(own_redis):
    storage, store = context.storage(), context.jobs()
    kept, deleted = with_alpha(storage, store), with_alpha(storage, store)
    # The DELETE came while finish ran, after it had started: the record was there, now the tombstone is.
    store.r.set(f"cutout:deleted:{deleted}", time.time())
    assert finish.apply(({"status": "inferred"}, deleted, 0)).get()["status"] == "failed"
    assert objects(storage, deleted) == []
    assert finish.apply(({"status": "inferred"}, kept, 0)).get()["status"] == "done"
    assert storage.exists(keys.output_key(kept, 0, "png"))


def test_the_purge_deletes_what_was_written_after_the_delete_once_the_grace_is_over(own_redis):
    storage, store = context.storage(), context.jobs()
    job = with_alpha(storage, store)
    storage.delete_prefix(keys.job_prefix(job))  # DELETE /jobs/<id>, as the web app does it
    store.delete(job)
    storage.put(keys.output_key(job, 0, "png"), b"written by a task that never saw the tombstone")
    assert purge.apply().get() == 0  # within the grace: tasks in flight may still write
    assert purge.apply(kwargs={"after_s": 0}).get() == 1
    assert objects(storage, job) == [] and store.deleted_before(time.time()) == []


@pytest.fixture(params=["local", "s3"])
def orphan_env(request, own_redis):
    env = {**own_redis, "CUTOUT_ORPHAN_AGE": "1"}
    if request.param == "s3":
        endpoint, bucket = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket")
        env |= {"CUTOUT_STORAGE": "s3", "CUTOUT_S3_ENDPOINT_URL": endpoint, "CUTOUT_S3_BUCKET": bucket,
                "CUTOUT_S3_REGION": REGION}
    point_app_at(Settings.from_env(env))
    return env


def test_the_sweep_removes_prefixes_without_a_record_once_they_are_old_enough(orphan_env):
    storage, store = context.storage(), context.jobs()
    live = record_job(storage, store, "alice", small_photos(1), Options(), model="u2netp")
    for key in ("jobs/orphan1/alpha/0.png", "jobs/orphan1/out/0.png", "jobs/orphan2/cutout-orphan2.zip"):
        storage.put(key, b"left by a task after its job was gone")
    time.sleep(2.5)  # older than CUTOUT_ORPHAN_AGE, plus the second an S3 listing's time may be early by
    storage.put("jobs/uploading/in/0", b"an upload whose record is not written yet")
    assert sweep.apply().get() == 2
    assert sorted(storage.prefixes("jobs/")) == sorted([keys.job_prefix(live), "jobs/uploading/"])
    assert storage.exists(keys.input_key(live, 0))
