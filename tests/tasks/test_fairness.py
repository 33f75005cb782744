"""Fair share between users: priorities given at fan-out, kept by a retry and a redelivery, and a worker
that takes a small job ahead of a big job's tail. Real Redis, real kombu, real workers."""

import base64
import json
import time

import pytest
import redis

from matting_core.options import Options
from matting_core.weights import cutout_home
from tasks import context
from tasks.app import app
from tasks.local_cluster import Worker, free_port, wait_until
from tasks.metrics import QueueLengths
from tasks.queues import PRIORITY_STEPS, queue_lists
from tasks.recovery import requeue_unacked
from tasks.submit import RANK_BOUNDS, create_job, priority, record_job
from tasks.work import launch
from tests.reliability.conftest import small_photos

FAST = "u2netp"


def waiting(url: str, queue: str) -> dict[int, list[tuple[str, int, int]]]:
    """Each priority step's messages, oldest first: (job, item, priority of the chained finish or -1)."""
    client, out = redis.Redis.from_url(url), {}
    for step, name in zip(PRIORITY_STEPS, queue_lists(queue), strict=True):
        out[step] = []
        for raw in reversed(client.lrange(name, 0, -1)):  # LPUSH in, BRPOP out: the oldest at the right
            message = json.loads(raw)
            args, _kwargs, embed = json.loads(base64.b64decode(message["body"]))
            assert message["properties"]["priority"] == step
            then = (embed.get("chain") or [{}])[-1].get("options", {}).get("priority", -1)
            out[step].append((args[-2], args[-1], then))
    return out


def launch_now(job: str, count: int) -> None:
    """What the cpu worker does with the job's launch message, run here."""
    launch.apply((job, list(range(count)), True)).get()


@pytest.mark.parametrize(("rank", "step"), [(0, 0), (RANK_BOUNDS[0] - 1, 0), (RANK_BOUNDS[0], 3), (31, 3),
                                            (32, 6), (255, 6), (256, 9), (10**6, 9)])
def test_an_images_rank_maps_to_a_kombu_priority_step_with_zero_first(rank, step):
    assert priority(rank) == step


def test_a_small_job_is_queued_ahead_of_a_big_jobs_tail_and_finish_keeps_the_priority(own_redis):
    storage, store, url = context.storage(), context.jobs(), own_redis["CUTOUT_BROKER_URL"]
    photos = small_photos(40)
    big = record_job(storage, store, "alice", photos, Options(), model=FAST)
    launch_now(big, 40)
    small = record_job(storage, store, "bob", photos[:1], Options(), model=FAST)
    launch_now(small, 1)
    queued = waiting(url, "gpu")
    assert queued[0] == [(big, i, 0) for i in range(4)] + [(small, 0, 0)]
    assert queued[3] == [(big, i, 3) for i in range(4, 32)]
    assert queued[6] == [(big, i, 6) for i in range(32, 40)] and queued[9] == []
    # What the HPA scales on counts every priority list of the queue.
    lengths = {m.labels["queue"]: m.value for m in next(QueueLengths(url).collect()).samples}
    assert lengths == {"gpu": 41, "cpu": 0}
    assert store.job(big)["launched"] and store.job(small)["launched"]
    # The watchdog's clue to a tail waiting its turn: where the job's images went, and how far back.
    assert [store.r.hmget(f"cutout:job:{j}", "launch_queue", "lowest_priority") for j in (big, small)] == \
        [["gpu", "6"], ["gpu", "0"]]


def test_a_users_second_live_job_ranks_its_images_twice_as_far_back(own_redis):
    storage, store, url = context.storage(), context.jobs(), own_redis["CUTOUT_BROKER_URL"]
    photos = small_photos(6)
    record_job(storage, store, "alice", photos, Options(), model=FAST)  # still queued: live
    second = record_job(storage, store, "alice", photos, Options(), model=FAST)
    launch_now(second, 6)
    queued = waiting(url, "gpu")
    assert [i for _, i, _ in queued[0]] == [0, 1] and [i for _, i, _ in queued[3]] == [2, 3, 4, 5]


def test_a_redelivered_message_goes_back_to_its_own_priority_list(own_redis):
    storage, store, url = context.storage(), context.jobs(), own_redis["CUTOUT_BROKER_URL"]
    job = record_job(storage, store, "alice", small_photos(40), Options(), model=FAST)
    launch_now(job, 40)
    client, six = redis.Redis.from_url(url), queue_lists("gpu")[2]
    # A worker took the oldest message of step 6 and died holding it: it sits in kombu's unacked hash.
    raw = client.rpop(six)
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        client.hset(channel.unacked_key, "tag-1", json.dumps([json.loads(raw), "", "gpu"]))
        client.zadd(channel.unacked_index_key, {"tag-1": time.time()})
    assert requeue_unacked(url, "gpu") == 1
    assert client.lindex(six, -1) is not None and json.loads(client.lindex(six, -1))["body"] == json.loads(raw)["body"]
    assert client.llen(six) == 8 and client.hlen(channel.unacked_key) == 0


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "weights").symlink_to(cutout_home() / "weights")
    return home


def test_a_task_retry_keeps_its_priority(own_redis, home, tmp_path):
    """Storage unreachable (transient): the retry's message, held by the worker for its countdown, keeps 6."""
    store, url = context.jobs(), own_redis["CUTOUT_BROKER_URL"]
    job = record_job(context.storage(), store, "alice", small_photos(1), Options(), model=FAST)
    env = {**own_redis, "CUTOUT_HOME": str(home), "CUTOUT_STORAGE": "s3", "CUTOUT_S3_BUCKET": "jobs",
           "CUTOUT_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "CUTOUT_S3_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    app.signature("cutout.infer", (job, 0), immutable=True).set(priority=6).apply_async()
    worker = Worker("gpu", env, tmp_path / "gpu.log", concurrency=1)
    try:
        client = redis.Redis.from_url(url)
        with app.connection_for_write() as conn:
            unacked = conn.default_channel.unacked_key

        def retried():
            held = [json.loads(v)[0] for v in client.hvals(unacked)]
            return [m for m in held if m["headers"].get("retries", 0) >= 1]

        message = wait_until(retried, 60, f"no retry was published; see {tmp_path / 'gpu.log'}")[0]
        assert message["properties"]["priority"] == 6
    finally:
        worker.stop()


# A 40-image load through real workers (~40 s here): make test-slow, with tests/reliability/
# test_abuse_fairness.py. The fast tier checks the priorities given at fan-out and kept on retry.
@pytest.mark.slow
def test_a_worker_takes_a_small_job_ahead_of_a_big_jobs_tail(own_redis, home, tmp_path):
    """Both jobs queued before the workers start: the small one is done after at most a few big images."""
    store = context.jobs()
    env = {**own_redis, "CUTOUT_HOME": str(home)}
    photos = small_photos(40)
    big = create_job(context.storage(), store, "alice", photos, Options(), model=FAST)
    small = create_job(context.storage(), store, "bob", photos[:1], Options(), model=FAST)
    workers = [Worker("cpu", env, tmp_path / "cpu.log"), Worker("gpu", env, tmp_path / "gpu.log")]
    try:
        wait_until(lambda: store.status(small) == "done", 120, f"the small job did not finish; see {tmp_path}")
        big_done_then = store.job(big)["done"]
        # 4 big images at priority 0 were queued before it, and each worker holds one message per slot.
        assert big_done_then <= 8
        wait_until(lambda: store.status(big) == "done", 240, f"the big job did not finish; see {tmp_path}")
        assert store.job(big)["done"] == 40
    finally:
        for worker in workers:
            worker.stop()


def test_workers_record_the_queue_priority_and_send_time_of_what_they_take(own_redis, home, tmp_path):
    """What the watchdog reads to tell a job waiting its turn from one whose messages were lost."""
    store = context.jobs()
    job = record_job(context.storage(), store, "alice", small_photos(1), Options(), model=FAST)
    before = time.time()
    app.signature("cutout.infer", (job, 0), immutable=True).set(priority=6).apply_async()
    worker = Worker("gpu", {**own_redis, "CUTOUT_HOME": str(home)}, tmp_path / "gpu.log", concurrency=1)
    try:
        taken = wait_until(lambda: dict(store.r.zrange("cutout:taken", 0, -1, withscores=True)), 90,
                           f"the worker recorded nothing; see {tmp_path / 'gpu.log'}")
    finally:
        worker.stop()
    assert list(taken) == ["gpu:6"] and before <= taken["gpu:6"] <= time.time()
