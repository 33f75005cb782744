"""`cutout serve` (make run): the whole service from one command, a worker killed and restarted, a clean stop."""

import base64
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from bench.served import CUTOUT, Served, descendants, http, multipart
from tasks.local_cluster import free_port, wait_until
from tests.conftest import DATA, PHOTOS

pytestmark = pytest.mark.integration


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


# One stack for the module (starting one takes ~20 s here): the SIGTERM test, last, stops it, and
# it checks every process the stack then has, the gpu worker restarted by the first test among them.
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    served = Served(tmp_path_factory.mktemp("serve"))
    try:
        yield served.wait_ready()
    finally:
        served.stop()


def test_serve_runs_the_portal_flower_and_a_batch_through_a_killed_worker(served):
    assert http(served.url("/"))[0] == 200  # the login page, after the redirect
    assert wait_until(lambda: http(served.url("/", "FLOWER_PORT"))[0], 60, "Flower did not answer") == 401
    password = (served.home / "flower-password").read_text().strip()
    auth = base64.b64encode(f"admin:{password}".encode()).decode()
    wait_until(lambda: http(served.url("/", "FLOWER_PORT"), headers={"Authorization": f"Basic {auth}"})[0] == 200,
               30, "Flower did not answer with the right credentials")
    # Flower reads its login from its environment: no command line shows the password (ps, /proc/*/cmdline).
    for pid in descendants(served.proc.pid) | {served.proc.pid}:
        assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes(), pid

    demo = served.demo()
    assert demo["password"] in served.output() and demo["api_key"] in served.output()
    headers = {"X-Api-Key": demo["api_key"]}
    body, content_type = multipart([(f"{name}-{n}.jpg", (DATA / f"{name}.jpg").read_bytes())
                                    for n in range(2) for name in PHOTOS])
    status, reply = http(served.url("/api/v1/jobs"), body, headers | {"Content-Type": content_type})
    assert status == 202, reply
    job_url = served.url(json.loads(reply)["status_url"])

    def job() -> dict:
        return json.loads(http(job_url, headers=headers)[1])

    wait_until(lambda: job()["done"] >= 1, 90, "no image finished")
    os.kill(served.pid_of("worker-gpu"), signal.SIGKILL)
    wait_until(lambda: "worker-gpu restarted" in served.output(), 30, "the gpu worker was not restarted")
    # Its unfinished images go straight back on the queue, not after the visibility timeout.
    assert re.search(r"put \d+ unfinished gpu tasks of worker-gpu back", served.output()), served.output()
    record = wait_until(lambda: (r := job())["status"] in ("done", "failed") and r, 150, "the job did not finish")
    assert (record["status"], record["done"], record["failed"]) == ("done", 8, 0), served.output()

    web_metrics = http(served.url("/metrics"))[1].decode()
    assert 'cutout_queue_length{queue="gpu"}' in web_metrics
    assert 'cutout_http_request_duration_seconds_count{endpoint="/api/v1/jobs",method="POST",status="202"}' \
        in web_metrics
    gpu = http(served.url("/metrics", "METRICS_PORT"))[1].decode()
    assert "cutout_inference_batch_size_count" in gpu and 'cutout_queue_wait_seconds_count{queue="gpu"}' in gpu
    cpu = http(f"http://127.0.0.1:{served.ports['METRICS_PORT'] + 1}/metrics")[1].decode()
    done = float(re.search(r'cutout_images_total\{outcome="done"\} (\S+)', cpu).group(1))
    assert done >= 8 and 'cutout_stage_duration_seconds_count{stage="encode"}' in cpu
    # Worker logs are JSON lines with the job as a field.
    lines = [json.loads(line) for line in (served.home / "logs" / "worker-cpu.log").read_text().splitlines()
             if line.startswith("{")]
    assert any(line.get("message") == "item done" and line.get("job") for line in lines)


def test_sigterm_stops_every_process_it_started(served):
    children = descendants(served.proc.pid)
    assert len(children) >= 6  # redis, two workers (and the cpu pool), flower, gunicorn and its workers
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(60) == 0
    assert "stopped" in served.output()
    left = [pid for pid in children if running(pid)]
    assert left == [], left


def test_a_port_in_use_is_named_with_the_variable_to_change(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = {**os.environ, "CUTOUT_HOME": str(tmp_path), "CUTOUT_PORT": str(busy.getsockname()[1]),
               "CUTOUT_REDIS_PORT": str(free_port()), "CUTOUT_FLOWER_PORT": str(free_port())}
        done = subprocess.run([*CUTOUT, "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "set CUTOUT_PORT to a free one" in done.stderr
