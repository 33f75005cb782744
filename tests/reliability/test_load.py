"""20 users at once against the real app served over HTTP, with the real workers: 10 images each.

Every image must finish and every HTTP answer must be 2xx. Submit latency (p50/p95) and the
totals are printed, and go to bench/results/load.json with CUTOUT_UPDATE_RESULTS=1; they are
reported, not asserted (speed is measured, never a pass/fail in tests).
"""

import datetime
import io
import json
import os
import platform
import statistics
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
import requests
from PIL import Image
from werkzeug.serving import make_server

from bench.machine import cpu_name
from tasks.local_cluster import ROOT, free_port
from tests.conftest import DATA, PHOTOS
from tests.web.conftest import make_app
from web.extensions import limiter

pytestmark = [pytest.mark.integration, pytest.mark.slow]
USERS, IMAGES_PER_JOB = 20, 10
SIZE = (160, 120)
DEADLINE_S = 420  # 200 images at ~0.3 s of model time each on 2 cores, with room for a loaded machine
POLL_S = 0.5
RUSH = 30  # concurrent submits, three times Celery's broker_pool_limit: the deadlock needs > 10 to overlap
RESULTS = ROOT / "bench/results/load.json"


@pytest.fixture(scope="module")
def small_photos() -> list[bytes]:
    out = []
    for name in PHOTOS:
        buf = io.BytesIO()
        Image.open(DATA / f"{name}.jpg").convert("RGB").resize(SIZE).save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


@contextmanager
def serving(web_env):
    """The app on a threaded werkzeug server on a free loopback port, with limits out of the way."""
    app = make_app(web_env, MAX_ACTIVE_JOBS=1000, SUBMIT_RATE_LIMIT="100000 per minute",
                   RATE_LIMIT="100000 per minute")
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        thread.join(10)
        limiter.reset()


class FromAddress(requests.adapters.HTTPAdapter):
    """Connects from its own loopback address, as users on their own machines would: the default rate
    limit was once counted per address, and 20 users on one address would have shared it."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, source_address=(self.address, 0), **kwargs)


@dataclass
class User:
    name: str
    key: str
    address: str
    submit_ms: float | None = None
    status: dict | None = None
    answers: list[int] = field(default_factory=list)
    error: str | None = None


def simulate(user: User, base: str, photos: list[bytes], deadline: float) -> None:
    try:
        _submit_and_follow(user, base, photos, deadline)
    except requests.RequestException as err:  # a refused or timed-out connection is a failure to report
        user.error = f"{type(err).__name__}: {err}"


def _submit_and_follow(user: User, base: str, photos: list[bytes], deadline: float) -> None:
    """Submit one job, then poll its status until it ends or the deadline passes."""
    with requests.Session() as http:
        http.trust_env = False  # loopback, never through a proxy the environment may name
        http.mount("http://", FromAddress(user.address))
        http.headers["X-Api-Key"] = user.key
        files = [("images", (f"{user.name}-{n}.jpg", photos[n % len(photos)], "image/jpeg"))
                 for n in range(IMAGES_PER_JOB)]
        started = time.perf_counter()
        r = http.post(f"{base}/api/v1/jobs", files=files, timeout=30)
        user.submit_ms = (time.perf_counter() - started) * 1000
        user.answers.append(r.status_code)
        if r.status_code != 202:
            user.error = r.text
            return
        url = base + r.json()["status_url"]
        while time.monotonic() < deadline:
            r = http.get(url, timeout=30)
            user.answers.append(r.status_code)
            if not r.ok:
                user.error = r.text
                return
            user.status = r.json()
            if user.status["status"] in ("done", "failed"):
                return
            time.sleep(POLL_S)
        user.error = f"still {user.status['status']} at the deadline"


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def test_more_concurrent_submits_than_the_broker_pool_limit_do_not_deadlock(web_env):
    # Celery's stock pool limit (10) deadlocked this: a chord's group holds a connection while each
    # chain takes another. tasks.app configures a pool of 128.
    with serving(web_env) as (app, base):
        answers = rush(app, base)
    assert answers == [202] * RUSH


def rush(app, base: str) -> list:
    """RUSH submits of 10 files at once (each chord publishing for long enough to overlap the others);
    their status codes, or exception names."""
    store = app.extensions["cutout"].users
    users = [User(f"rush-{n:02d}", store.add(f"rush-{n:02d}")[1], "127.0.0.1") for n in range(RUSH)]
    answers: list = []

    def submit(user: User) -> None:
        with requests.Session() as http:
            http.trust_env = False
            try:
                files = [("images", (f"{n}.jpg", b"not read by anyone", "image/jpeg")) for n in range(IMAGES_PER_JOB)]
                r = http.post(f"{base}/api/v1/jobs", headers={"X-Api-Key": user.key}, files=files, timeout=15)
                answers.append(r.status_code)
            except requests.RequestException as err:
                answers.append(type(err).__name__)

    threads = [threading.Thread(target=submit, args=(u,), daemon=True) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    return answers


@pytest.fixture(scope="module")
def load_run(web_env, workers, small_photos) -> dict:
    """One run of 20 users at once, shared by the tests below; its numbers go to bench/results/load.json
    with CUTOUT_UPDATE_RESULTS=1.

    tasks.app sizes Celery's broker pool at 128: with the stock 10 the web process deadlocked (the test above).
    """
    with serving(web_env) as (app, base):
        store = app.extensions["cutout"].users
        users = [User(f"load-{n:02d}", store.add(f"load-{n:02d}")[1], f"127.0.0.{10 + n}") for n in range(USERS)]
        started = time.monotonic()
        threads = [threading.Thread(target=simulate, args=(u, base, small_photos, started + DEADLINE_S),
                                    daemon=True) for u in users]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(1.0, started + DEADLINE_S + 35 - time.monotonic()))
        total_s = time.monotonic() - started
        assert not [t for t in threads if t.is_alive()], "a user's thread outlived the deadline"
    submit = [u.submit_ms for u in users if u.submit_ms is not None]
    answers = [code for u in users for code in u.answers]
    return {"users": users, "answers": answers, "results": write_results(submit, answers, total_s, users)}


def test_twenty_users_submit_ten_images_each_and_every_image_finishes(load_run):
    users = load_run["users"]
    assert [u.error for u in users if u.error] == []
    assert [code for code in load_run["answers"] if not 200 <= code < 300] == []
    assert [(u.status["status"], u.status["done"], u.status["failed"]) for u in users] == \
        [("done", IMAGES_PER_JOB, 0)] * USERS
    assert load_run["results"]["images_done"] == USERS * IMAGES_PER_JOB
    assert load_run["results"]["http"]["requests"] > USERS * 2  # everyone polled at least once


def write_results(submit: list[float], answers: list[int], total_s: float, users: list[User]) -> dict:
    done = sum(u.status["done"] for u in users if u.status)
    results = {
        "bench": "load",
        "date": datetime.date.today().isoformat(),
        "path": "20 users at once, each from its own loopback address: POST /api/v1/jobs, then GET "
                "/api/v1/jobs/{id} every 0.5 s, over HTTP to a threaded werkzeug server; Redis, "
                "gpu-queue worker (threads, 4) on the CPU, cpu-queue prefork worker (2)",
        "users": USERS, "images_per_job": IMAGES_PER_JOB, "size": list(SIZE),
        "images_done": done,
        "submit_ms": {"p50": round(percentile(submit, 50), 1), "p95": round(percentile(submit, 95), 1),
                      "max": round(max(submit), 1)},
        "total_s": round(total_s, 2),
        "images_per_second": round(done / total_s, 3),
        "http": {"requests": len(answers), "non_2xx": sum(not 200 <= c < 300 for c in answers)},
        "machine": {"cpus": os.cpu_count(), "processor": cpu_name(), "python": platform.python_version()},
    }
    print(json.dumps(results))  # seen with `pytest -s`
    if os.environ.get("CUTOUT_UPDATE_RESULTS") == "1":  # a test never writes into the checkout on its own
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return results
