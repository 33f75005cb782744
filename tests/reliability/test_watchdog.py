"""The watchdog: no job stays `queued` or `running` forever; a stalled one is failed with a reason.

Fast: the session's Redis (a database of its own, nothing consuming its queues), no workers, a
1 s stall limit, and a clock the tests move instead of sleeping past it: the job store stamps
progress with it and the watchdog's work (upkeep.fail_stalled) reads it.
"""

import os
import time

import pytest
import redis

from matting_core.options import Options
from tasks.app import app as celery_app
from tasks.jobs import JobStore
from tasks.settings import Settings
from tasks.storage import LocalStorage
from tasks.submit import create_job, record_job
from tasks.upkeep import fail_stalled, watchdog
from tests.reliability.conftest import point_app_at, small_photos

STALL_S = 1
FILES = small_photos(3)
DB = 9  # of the session's Redis; no other test uses it


class Clock:
    """Wall time until moved; `later()` is what sleeping past the stall limit would have done."""

    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def later(self, seconds: float = STALL_S + 0.2) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def service(redis_url, tmp_path, clock):
    """Storage, and a job store on the clock, with the app publishing to that Redis and a 1 s stall limit."""
    url = redis_url.rsplit("/", 1)[0] + f"/{DB}"
    redis.Redis.from_url(url).flushdb()
    env = {**os.environ, "CUTOUT_BROKER_URL": url, "CUTOUT_HOME": str(tmp_path / "home"),
           "CUTOUT_STORAGE": "local", "CUTOUT_STALL_TIMEOUT": str(STALL_S)}
    point_app_at(Settings.from_env(env))  # create_job's launch message, and the watchdog task's own store
    return LocalStorage(tmp_path / "home" / "storage"), JobStore.from_url(url, clock=clock)


def watch(store: JobStore) -> list[str]:
    return fail_stalled(store, STALL_S)


def test_a_job_whose_tasks_never_run_is_failed_with_the_reason(service, clock):
    storage, store = service
    job = create_job(storage, store, "alice", FILES, Options())  # enqueued, but no worker consumes the queues
    assert watch(store) == []  # not stalled yet
    clock.later()
    assert watch(store) == [job]
    record = store.job(job)
    assert record["status"] == "failed"
    assert record["error"] == "no progress for 1 s (a worker or the broker was lost); retry the job"
    last = store.events(job, block_ms=10)[-1][1]
    assert (last["status"], last["error"]) == ("failed", record["error"])
    assert watch(store) == []  # once


def test_beats_watchdog_task_fails_a_stalled_job_on_the_apps_store_and_settings(service, clock):
    storage, store = service
    clock.now = time.time() - STALL_S - 1  # recorded, then nothing for longer than the limit
    job = record_job(storage, store, "alice", FILES, Options())
    assert watchdog.apply().get() == [job]  # the task, on context.jobs() and its wall clock
    assert store.job(job)["error"] == "no progress for 1 s (a worker or the broker was lost); retry the job"


def test_a_running_job_without_progress_is_failed_even_while_others_progress(service, clock):
    storage, store = service
    stuck, busy = (record_job(storage, store, owner, FILES, Options()) for owner in ("alice", "bob"))
    store.update_item(stuck, 0, "done")  # it started, then its other messages were lost
    clock.later()
    store.update_item(busy, 0, "inferring")
    assert watch(store) == [stuck]
    assert (store.status(stuck), store.status(busy)) == ("failed", "running")


def test_a_queued_job_waiting_behind_a_progressing_one_is_left_alone(service, clock):
    storage, store = service
    waiting, busy = (record_job(storage, store, owner, FILES, Options()) for owner in ("alice", "bob"))
    store.launched(waiting, clock())  # its images are in the queues, behind others
    clock.later()
    store.update_item(busy, 0, "inferring")  # the service is working, on someone else's job
    assert watch(store) == []
    assert store.status(waiting) == "queued"


def test_a_running_jobs_tail_waiting_behind_other_users_first_images_is_left_alone_until_overtaken(service, clock):
    storage, store = service
    big, busy = (record_job(storage, store, owner, FILES, Options()) for owner in ("alice", "bob"))
    launched_at = clock()
    store.launched(big, launched_at, "gpu", 9)  # its tail went in at the lowest priority
    store.update_item(big, 0, "done")  # its first images ran, then others' first images came first
    clock.later()
    store.taken("gpu", 0, clock())  # the workers take others' top-priority images, sent after it
    store.taken("gpu", 6, clock())
    store.taken("cpu", 9, clock())  # another queue says nothing about this job's images
    store.update_item(busy, 0, "inferring")
    assert watch(store) == []
    assert store.status(big) == "running"
    store.taken("gpu", 9, launched_at - 1)  # a message of its priority sent before it: still its turn to come
    assert watch(store) == []
    # A message of its priority sent after its launch was taken: its own went first, so they are lost.
    store.taken("gpu", 9, clock())
    assert watch(store) == [big]
    assert store.status(big) == "failed"


def test_a_queued_job_overtaken_by_a_later_message_of_its_priority_is_failed(service, clock):
    storage, store = service
    lost, busy = (record_job(storage, store, owner, FILES, Options()) for owner in ("alice", "bob"))
    store.launched(lost, clock(), "gpu", 0)
    clock.later()
    store.update_item(busy, 0, "inferring")
    assert watch(store) == []  # waiting behind others, as far as anyone can tell
    store.taken("gpu", 3, clock())  # a lower priority's message went: nothing of its can be waiting
    assert watch(store) == [lost]


def test_a_queued_job_whose_launch_was_lost_is_failed_even_while_others_progress(service, clock):
    storage, store = service
    lost, busy = (record_job(storage, store, owner, FILES, Options()) for owner in ("alice", "bob"))
    clock.later()  # no launch task ever ran for `lost`
    store.update_item(busy, 0, "inferring")
    assert watch(store) == [lost]
    assert store.job(lost)["error"] == "no progress for 1 s (a worker or the broker was lost); retry the job"
    assert store.status(busy) == "running"


def test_finished_jobs_are_never_touched(service, clock):
    storage, store = service
    done, failed = (record_job(storage, store, owner, FILES, Options()) for owner in ("alice", "bob"))
    store.set_status(done, "done", zip_key="z")
    store.set_status(failed, "failed", error="packaging failed: disk full; retry the job")
    clock.later()
    assert watch(store) == []
    assert store.job(failed)["error"] == "packaging failed: disk full; retry the job"
    assert store.status(done) == "done"


def test_the_stall_limit_outlasts_a_redelivery_and_beat_runs_the_watchdog_every_minute():
    defaults = Settings()
    assert defaults.stall_timeout == 3 * defaults.time_limit + defaults.visibility_timeout == 1800
    assert Settings.from_env({"CUTOUT_STALL_TIMEOUT": "90"}).stall_timeout == 90
    entry = celery_app.conf.beat_schedule["fail-stalled-jobs"]
    assert entry["task"] == "cutout.watchdog" and entry["schedule"] <= 60
