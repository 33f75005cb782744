"""The images and the compose file, run for real (`make test-deploy`: a Docker daemon and `make images`).

One compose stack (docker-compose.yml with docker-compose.airgap.yml's Redis and moto_server
in place of MinIO, profile cpu-only) for the module, driven from the host as a user drives it:
a user made with `cutout users add`, jobs submitted over HTTP, the SSE stream followed, the zip
fetched through the link the API returns. Time limits of 10 s (as in tests/reliability), so a
killed worker's messages come back after the 20 s visibility timeout.
"""

import json
import os
import subprocess
import threading

import pytest

from bench.deploy_stack import Stack, photos

pytestmark = [pytest.mark.deploy, pytest.mark.slow]
FAST = "u2netp"  # the containers are the point, not the model
HARDENED = ("web", "worker-cpu", "worker-gpu-on-cpu", "beat", "flower")


@pytest.fixture(scope="module")
def stack():
    stack = Stack(f"cutout-deploy-{os.getpid()}", env={"CUTOUT_TIME_LIMIT": "10", "CUTOUT_SOFT_TIME_LIMIT": "8"})
    try:
        yield stack.up()
    finally:
        for service in ("web", "worker-gpu-on-cpu", "worker-cpu"):
            print(f"--- {service}\n{stack.logs(service)[-3000:]}")
        stack.down()
        left = stack.containers()
        volumes = subprocess.run(["docker", "volume", "ls", "-q", "--filter",
                                  f"label=com.docker.compose.project={stack.project}"],
                                 capture_output=True, text=True).stdout.split()
        assert left == [] and volumes == [], f"left behind: {left} {volumes}"


@pytest.fixture(scope="module")
def alice(stack) -> dict:
    return stack.user("alice")


def assert_every_image_once(zf, files) -> None:
    names = zf.namelist()
    manifest = json.loads(zf.read("manifest.json"))
    assert len(names) == len(set(names)) == len(files) + 1 and names[-1] == "manifest.json"
    assert sorted(f["input"] for f in manifest["files"]) == sorted(name for name, _ in files)
    assert [f["status"] for f in manifest["files"]] == ["done"] * len(files)
    assert manifest["summary"] == {"total": len(files), "done": len(files), "failed": 0}


@pytest.mark.parametrize("service", HARDENED)
def test_containers_run_as_the_pods_do(stack, service):
    (container,) = stack.inspect(stack.containers(service))
    host = container["HostConfig"]
    assert container["Config"]["User"] == "10001:10001"
    assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"] and "/tmp" in host["Tmpfs"]
    assert container["State"]["Health"]["Status"] == "healthy"
    # The process is PID 1 (the entrypoint exec'd it) and really is not root.
    status = stack.exec(service, "cat", "/proc/1/status")
    assert "\nUid:\t10001\t10001" in status
    assert "Read-only file system" not in stack.logs(service)  # gunicorn's control socket went to /tmp


def test_a_job_from_outside_streams_its_progress_and_downloads_its_zip(stack, alice):
    files = photos(10)
    job = stack.submit(alice, files, model=FAST)
    events = stack.follow(alice, job)
    assert events[0]["event"] == "snapshot" and events[-1]["status"] == "done"
    finished = {e["i"] for e in events if e.get("state") == "done"}
    assert finished == set(range(len(files))), events
    status = stack.wait_done(alice, job)
    assert (status["status"], status["done"], status["failed"]) == ("done", len(files), 0)
    assert_every_image_once(stack.download(alice, status), files)


def test_a_gpu_worker_container_killed_mid_job_loses_and_duplicates_no_image(stack, alice):
    files = photos(40)
    job = stack.submit(alice, files, model=FAST)
    (worker,) = stack.containers("worker-gpu-on-cpu")
    killed = threading.Event()

    def kill_after_a_few(event):
        if event.get("state") == "done" and not killed.is_set():
            killed.set()
            subprocess.run(["docker", "kill", worker], check=True, capture_output=True)

    # The stream is followed from the host throughout; the kill happens once an image is done.
    reader = threading.Thread(target=lambda: stack.follow(alice, job, on_event=kill_after_a_few), daemon=True)
    reader.start()
    assert killed.wait(120), "no image finished before the kill"
    mid = stack.status(alice, job)
    assert mid["status"] != "done" and mid["done"] < len(files), mid
    # Kubernetes restarts a killed pod's container; `docker kill` counts as a manual stop, so start it
    # once it has stopped (`docker kill` returns when the signal is sent, not when the container is down).
    subprocess.run(["docker", "wait", worker], check=True, capture_output=True, timeout=60)
    subprocess.run(["docker", "start", worker], check=True, capture_output=True)
    status = stack.wait_done(alice, job, timeout=300)
    assert (status["status"], status["done"], status["failed"]) == ("done", len(files), 0), status
    assert_every_image_once(stack.download(alice, status), files)
    reader.join(timeout=30)
