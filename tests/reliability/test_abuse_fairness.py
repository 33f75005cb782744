"""Issue 12, replayed against a real `cutout serve` (u2netp): one user's 500 images do not make another
user wait; a deleted running job leaves nothing in storage a minute later; retry of a done job is a no-op;
the workers' metrics ports listen on loopback only."""

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bench.served import Served, http, multipart
from tasks.local_cluster import wait_until
from tests.conftest import starts_servers
from tests.reliability.conftest import serve_for_module, small_photos
from web.users import UserStore

pytestmark = pytest.mark.slow
BIG = 500
SMALL_JOB_LIMIT_S = 10  # the issue's goal on this 2-core machine; idle it takes ~1-2 s
DELETE_LIMIT_S = 70  # "nothing one minute later", with the poll's own slack


def photos(count: int) -> list[tuple[str, bytes]]:
    """`count` 160×120 JPEGs from the bundled photos, distinct names."""
    return small_photos(count, (160, 120))


class Client:
    def __init__(self, served: Served, api_key: str):
        self.served, self.headers = served, {"X-Api-Key": api_key}

    def submit(self, files: list[tuple[str, bytes]]) -> str:
        body, content_type = multipart(files)
        status, reply = http(self.served.url("/api/v1/jobs"), body, self.headers | {"Content-Type": content_type})
        assert status == 202, reply
        return json.loads(reply)["job_id"]

    def call(self, method: str, path: str) -> tuple[int, bytes]:
        request = urllib.request.Request(self.served.url(path), method=method, headers=self.headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def job(self, job: str) -> dict:
        status, body = http(self.served.url(f"/api/v1/jobs/{job}"), headers=self.headers)
        assert status == 200, body
        return json.loads(body)

    def wait(self, job: str, timeout: float) -> dict:
        return wait_until(lambda: (r := self.job(job))["status"] in ("done", "failed") and r, timeout,
                          f"job {job} did not finish within {timeout} s")


@pytest.fixture(scope="module")
@starts_servers
def served(tmp_path_factory):
    yield from serve_for_module(tmp_path_factory)


@pytest.fixture(scope="module")
def alice(served) -> Client:
    return Client(served, served.demo()["api_key"])


@pytest.fixture(scope="module")
def bob(served) -> Client:
    _password, key = UserStore.from_url(f"redis://127.0.0.1:{served.ports['REDIS_PORT']}/0").add("bob")
    return Client(served, key)


def running_big_job(alice: Client) -> str:
    job = alice.submit(photos(BIG))
    wait_until(lambda: alice.job(job)["done"] >= 1, 120, "the 500-image job did not start")
    return job


def stored_files(served: Served, job: str) -> list[Path]:
    root = served.home / "storage" / "jobs" / job
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_another_users_one_image_finishes_in_seconds_while_a_500_image_job_runs(served, alice, bob):
    idle_start = time.monotonic()
    bob.wait(bob.submit(photos(1)), 60)
    idle_s = time.monotonic() - idle_start
    big = running_big_job(alice)
    start = time.monotonic()
    small = bob.submit(photos(1)[::-1])
    record = bob.wait(small, 120)
    took = time.monotonic() - start
    big_record = alice.job(big)
    print(f"\nfairness: bob's 1 image idle {idle_s:.1f} s, behind alice's {BIG} {took:.1f} s "
          f"(alice's job then {big_record['status']}, {big_record['done']} done)")
    assert record["status"] == "done" and record["done"] == 1
    assert took < SMALL_JOB_LIMIT_S, f"{took:.1f} s behind a {BIG}-image job ({big_record['done']} done then)"
    assert big_record["status"] == "running" and big_record["done"] < BIG  # it really was behind a backlog
    assert alice.call("DELETE", f"/api/v1/jobs/{big}")[0] == 204


def test_a_running_job_deleted_leaves_no_object_a_minute_later(served, alice):
    job = running_big_job(alice)
    assert stored_files(served, job)
    deleted_at = time.monotonic()
    assert alice.call("DELETE", f"/api/v1/jobs/{job}")[0] == 204
    wait_until(lambda: not stored_files(served, job), DELETE_LIMIT_S,
               f"files of the deleted job {job} remain: {stored_files(served, job)[:5]}")
    print(f"\ndelete: the last object of the running job gone {time.monotonic() - deleted_at:.1f} s after DELETE")
    time.sleep(5)  # tasks still draining the job's queue write nothing more
    assert stored_files(served, job) == []
    assert alice.call("GET", f"/api/v1/jobs/{job}")[0] == 404


def test_retry_of_a_done_job_is_a_no_op_and_its_zip_stays_downloadable(served, bob):
    job = bob.submit(photos(2))
    assert bob.wait(job, 60)["status"] == "done"
    status, body = bob.call("POST", f"/api/v1/jobs/{job}/retry")
    assert (status, json.loads(body)["retried"]) == (200, [])
    for _ in range(10):
        assert bob.call("GET", f"/api/v1/jobs/{job}/download")[0] == 200
        assert bob.job(job)["status"] == "done"
        time.sleep(0.2)


def listening(port: int) -> set[str]:
    """The local addresses (hex, as the kernel writes them) of sockets listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_the_workers_metrics_ports_listen_on_loopback_only(served):
    ports = (served.ports["METRICS_PORT"], served.ports["METRICS_PORT"] + 1)
    assert all(http(f"http://127.0.0.1:{port}/metrics")[0] == 200 for port in ports)
    assert [listening(port) for port in ports] == [{"0100007F"}, {"0100007F"}]  # 127.0.0.1, nothing else
