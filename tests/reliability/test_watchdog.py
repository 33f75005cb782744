"""The watchdog: no job stays `queued` or `running` forever; a stalled one is failed with a reason.

Fast (a Redis of its own, no workers, a 1 s stall limit), so in the normal tier.
"""

import os
import time

import pytest

from matting_core.options import Options
from tasks import context
from tasks.app import app as celery_app
from tasks.local_cluster import start_redis, stop_redis
from tasks.settings import Settings
from tasks.submit import create_job, record_job
from tasks.upkeep import watchdog
from tests.reliability.conftest import point_app_at, small_photos

pytestmark = pytest.mark.integration
STALL_S = 1
FILES = small_photos(3)


@pytest.fixture
def service(tmp_path):
    """A Redis with nothing consuming its queues, and the app pointed at it with a 1 s stall limit."""
    proc, url = start_redis(tmp_path / "redis")
    env = {**os.environ, "CUTOUT_BROKER_URL": url, "CUTOUT_HOME": str(tmp_path / "home"),
           "CUTOUT_STORAGE": "local", "CUTOUT_STALL_TIMEOUT": str(STALL_S)}
    point_app_at(Settings.from_env(env))
    try:
        yield context.storage(), context.jobs()
    finally:
        stop_redis(proc)


def stalled_for_a_while():
    time.sleep(STALL_S + 0.2)


def test_a_job_whose_tasks_never_run_is_failed_with_the_reason(service):
    storage, store = service
    job = create_job(storage, store, "alice", FILES, Options())  # enqueued, but no worker consumes the queues
    assert watchdog.apply().get() == []  # not stalled yet
    stalled_for_a_while()
    assert watchdog.apply().get() == [job]
    record = store.job(job)
    assert record["status"] == "failed"
    assert record["error"] == "no progress for 1 s (a worker or the broker was lost); retry the job"
    last = store.events(job, block_ms=10)[-1][1]
    assert (last["status"], last["error"]) == ("failed", record["error"])
    assert watchdog.apply().get() == []  # once


def test_a_running_job_without_progress_is_failed_even_while_others_progress(service):
    storage, store = service
    stuck, busy = (record_job(storage, store, owner, FILES, Options()) for owner in ("alice", "bob"))
    store.update_item(stuck, 0, "done")  # it started, then its other messages were lost
    stalled_for_a_while()
    store.update_item(busy, 0, "inferring")
    assert watchdog.apply().get() == [stuck]
    assert (store.status(stuck), store.status(busy)) == ("failed", "running")


def test_a_queued_job_waiting_behind_a_progressing_one_is_left_alone(service):
    storage, store = service
    waiting, busy = (record_job(storage, store, owner, FILES, Options()) for owner in ("alice", "bob"))
    store.launched(waiting, time.time())  # its images are in the queues, behind others
    stalled_for_a_while()
    store.update_item(busy, 0, "inferring")  # the service is working, on someone else's job
    assert watchdog.apply().get() == []
    assert store.status(waiting) == "queued"


def test_a_running_jobs_tail_waiting_behind_other_users_first_images_is_left_alone_until_overtaken(service):
    storage, store = service
    big, busy = (record_job(storage, store, owner, FILES, Options()) for owner in ("alice", "bob"))
    launched_at = time.time()
    store.launched(big, launched_at, "gpu", 9)  # its tail went in at the lowest priority
    store.update_item(big, 0, "done")  # its first images ran, then others' first images came first
    stalled_for_a_while()
    store.taken("gpu", 0, time.time())  # the workers take others' top-priority images, sent after it
    store.taken("gpu", 6, time.time())
    store.taken("cpu", 9, time.time())  # another queue says nothing about this job's images
    store.update_item(busy, 0, "inferring")
    assert watchdog.apply().get() == []
    assert store.status(big) == "running"
    store.taken("gpu", 9, launched_at - 1)  # a message of its priority sent before it: still its turn to come
    assert watchdog.apply().get() == []
    # A message of its priority sent after its launch was taken: its own went first, so they are lost.
    store.taken("gpu", 9, time.time())
    assert watchdog.apply().get() == [big]
    assert store.status(big) == "failed"


def test_a_queued_job_overtaken_by_a_later_message_of_its_priority_is_failed(service):
    storage, store = service
    lost, busy = (record_job(storage, store, owner, FILES, Options()) for owner in ("alice", "bob"))
    store.launched(lost, time.time(), "gpu", 0)
    stalled_for_a_while()
    store.update_item(busy, 0, "inferring")
    assert watchdog.apply().get() == []  # waiting behind others, as far as anyone can tell
    store.taken("gpu", 3, time.time())  # a lower priority's message went: nothing of its can be waiting
    assert watchdog.apply().get() == [lost]


def test_a_queued_job_whose_launch_was_lost_is_failed_even_while_others_progress(service):
    storage, store = service
    lost, busy = (record_job(storage, store, owner, FILES, Options()) for owner in ("alice", "bob"))
    stalled_for_a_while()  # no launch task ever ran for `lost`
    store.update_item(busy, 0, "inferring")
    assert watchdog.apply().get() == [lost]
    assert store.job(lost)["error"] == "no progress for 1 s (a worker or the broker was lost); retry the job"
    assert store.status(busy) == "running"


def test_finished_jobs_are_never_touched(service):
    storage, store = service
    done, failed = (record_job(storage, store, owner, FILES, Options()) for owner in ("alice", "bob"))
    store.set_status(done, "done", zip_key="z")
    store.set_status(failed, "failed", error="packaging failed: disk full; retry the job")
    stalled_for_a_while()
    assert watchdog.apply().get() == []
    assert store.job(failed)["error"] == "packaging failed: disk full; retry the job"
    assert store.status(done) == "done"


def test_the_stall_limit_outlasts_a_redelivery_and_beat_runs_the_watchdog_every_minute():
    defaults = Settings()
    assert defaults.stall_timeout == 3 * defaults.time_limit + defaults.visibility_timeout == 1800
    assert Settings.from_env({"CUTOUT_STALL_TIMEOUT": "90"}).stall_timeout == 90
    entry = celery_app.conf.beat_schedule["fail-stalled-jobs"]
    assert entry["task"] == "cutout.watchdog" and entry["schedule"] <= 60
