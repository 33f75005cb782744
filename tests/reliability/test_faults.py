"""Fault injection: "every image exactly once in your zip, or a clear reason".

Each test runs a 40-image job (320×240 JPEGs, ~15 s on this 2-core CPU) on a cluster of its
own (a Redis, a gpu-queue and a cpu-queue worker; 8/10 s time limits, so Redis hands out a
dead worker's messages again after 20 s), injects one fault once a few images are done,
and checks the job reaches `done` with every image once in the zip and the manifest.
"""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from matting_core.options import Options
from tasks import keys
from tasks.local_cluster import wait_until
from tasks.submit import create_job, retry_job
from tests.reliability.conftest import small_photos

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FILES = small_photos(40)
FAST = "u2netp"  # the faults are the point, not the model: the quick one keeps each test's minutes


def start_job(cluster, files=FILES, done_before_fault: int = 5) -> str:
    job = create_job(cluster.storage, cluster.jobs, "fault", files, Options(), model=FAST)
    wait_until(lambda: cluster.progress(job) >= done_before_fault, 60, f"no image finished; see {cluster.logs}")
    return job


def busy_child(pids: list[int], timeout: float = 10) -> int:
    """A pool child that is running (state R, so mid-task), or the first one after `timeout`."""
    def running():
        for pid in pids:
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "R":
                return pid
        return None

    try:
        return wait_until(running, timeout, "no pool child was running", interval=0.01)
    except TimeoutError:
        return pids[0]


def test_a_gpu_worker_killed_outright_loses_and_duplicates_no_image(make_cluster):
    cluster = make_cluster()
    job = start_job(cluster)
    cluster.workers["gpu"].kill()  # the whole process group, kill -9
    assert cluster.progress(job) < len(FILES)
    cluster.start_worker("gpu")  # its predecessor's messages come back after the visibility timeout
    cluster.wait_for(job)
    cluster.assert_every_image_once(job, FILES)


def test_a_killed_prefork_child_has_its_image_requeued(make_cluster):
    cluster = make_cluster()
    job = start_job(cluster)
    worker = cluster.workers["cpu"]
    os.kill(busy_child(worker.pool_children()), signal.SIGKILL)
    cluster.wait_for(job)
    assert "signal 9" in worker.log.read_text(errors="replace")  # the fault landed on the pool
    cluster.assert_every_image_once(job, FILES)


def test_a_warm_shutdown_of_the_cpu_worker_mid_job_hands_its_work_back(make_cluster):
    cluster = make_cluster()
    job = start_job(cluster)
    cluster.workers["cpu"].warm_shutdown(timeout=30)  # finishes what it runs, returns what it reserved
    assert cluster.progress(job) < len(FILES)
    cluster.start_worker("cpu")
    cluster.wait_for(job)
    cluster.assert_every_image_once(job, FILES)


def in_flight_on_both_queues(cluster) -> bool:
    """Both workers hold unacked messages: the restart then hits the code that hands them back."""
    client = cluster.jobs.r
    queues = {json.loads(raw)[2] for raw in client.hvals("unacked")}
    return {"gpu", "cpu"} <= queues


def test_a_redis_restart_mid_job_is_ridden_out_by_workers_and_submitter(make_cluster):
    cluster = make_cluster()
    job = start_job(cluster)
    wait_until(lambda: in_flight_on_both_queues(cluster), 30, "never had work in flight on both queues", 0.01)
    cluster.restart_redis(down_s=2)  # SIGTERM: the AOF keeps queues, unacked messages and job records
    # The submitter reconnects.
    later = create_job(cluster.storage, cluster.jobs, "fault", FILES[:4], Options(), model=FAST)
    cluster.wait_for(job, timeout=180)
    cluster.assert_every_image_once(job, FILES)
    cluster.wait_for(later)
    cluster.assert_every_image_once(later, FILES[:4])


def test_an_s3_outage_of_20_s_is_retried_through_and_its_data_loss_is_reported(make_cluster, moto):
    """moto_server keeps objects in memory, so stopping it loses every stored upload and output:
    an unrecoverable loss, recreated here as a store that comes back empty (same port, same bucket).

    What is checked: tasks retry through the 20 s outage (no item fails with "storage kept failing"
    or as poison), then find their objects gone and say so; packaging fails every `done` item whose
    output was lost, with that reason; so every item ends failed with a clear reason and the zip
    holds only the manifest. After the uploads are stored again, retry_job completes the job.
    """
    cluster = make_cluster("s3", moto)
    job = start_job(cluster)
    moto.stop()
    time.sleep(20)
    moto.start()
    record = cluster.wait_for(job, timeout=180)
    errors = [item.get("error", "") for item in cluster.jobs.items(job).values()]
    assert (record["status"], record["done"], record["failed"]) == ("done", 0, len(FILES)), record
    assert all(" is gone" in error for error in errors), errors
    assert any("output is gone from storage" in error for error in errors)  # outputs done before the stop
    with cluster.zip_of(job) as zf:
        assert zf.namelist() == ["manifest.json"]
    for i, (_, data) in enumerate(FILES):
        cluster.storage.put(keys.input_key(job, i), data)
    assert retry_job(cluster.storage, cluster.jobs, job) == list(range(len(FILES)))
    cluster.wait_for(job)
    cluster.assert_every_image_once(job, FILES)
