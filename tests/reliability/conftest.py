"""A disposable cluster per fault test: its own Redis (and moto_server), fresh workers, torn down even on failure."""

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import redis
from PIL import Image

from bench.served import Served
from matting_core.weights import cutout_home
from tasks import context, keys
from tasks.local_cluster import Worker, free_port, start_redis, stop_redis, wait_until
from tasks.settings import Settings
from tasks.storage import s3_client
from tests.conftest import DATA, PHOTOS, point_app_at, starts_servers
from tests.tasks.conftest import REGION, _wait_until_answering
from tests.web.conftest import app, client, stack_env, users, workers  # noqa: F401 - fixtures, over this web_env

MOTO_SERVER = Path(sys.executable).parent / "moto_server"
BUCKET = "jobs"


def small_photos(count: int = 40, size: tuple[int, int] = (320, 240)) -> list[tuple[str, bytes]]:
    """`count` JPEGs of the bundled photos with distinct names: at 320×240, ~0.3 s of model time each
    on this CPU."""
    small = {}
    for name in PHOTOS:
        out = io.BytesIO()
        Image.open(DATA / f"{name}.jpg").convert("RGB").resize(size).save(out, "JPEG", quality=85)
        small[name] = out.getvalue()
    return [(f"{PHOTOS[n % 4]}-{n:03d}.jpg", small[PHOTOS[n % 4]]) for n in range(count)]


def serve_for_module(tmp_path_factory, env: dict | None = None):
    """A real `cutout serve` (u2netp unless `env` says otherwise) for a module's tests, stopped after."""
    served = Served(tmp_path_factory.mktemp("serve"), env={"CUTOUT_DEFAULT_MODEL": "u2netp", **(env or {})})
    try:
        yield served.wait_ready()
    finally:
        served.stop()


class Moto:
    """A moto_server on a fixed port that can be stopped and started again there (it keeps data in memory)."""

    def __init__(self, log: Path):
        self.port, self.log, self.proc = free_port(), log, None
        self.url = f"http://127.0.0.1:{self.port}"
        self.start()

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=out, stderr=subprocess.STDOUT)
        _wait_until_answering(self.url, self.proc, self.log)
        s3_client(self.url, REGION).create_bucket(Bucket=BUCKET)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Cluster:
    """Redis, a gpu-queue and a cpu-queue worker, and the submitting side's app, storage and job store."""

    def __init__(self, root: Path, storage: str, moto: Moto | None):
        self.root, self.logs = root, root / "logs"
        self.logs.mkdir(parents=True)
        self.redis_dir = root / "redis"
        self.redis, url = start_redis(self.redis_dir)
        self.redis_port = int(url.rsplit(":", 1)[1].split("/")[0])
        home = root / "home"
        home.mkdir()
        (home / "weights").symlink_to(cutout_home() / "weights")
        # 8/10 s limits: Redis redelivers a dead worker's tasks after 20 s (the visibility timeout).
        self.env = {**os.environ, "CUTOUT_BROKER_URL": url, "CUTOUT_HOME": str(home), "CUTOUT_DEVICE": "cpu",
                    "CUTOUT_SOFT_TIME_LIMIT": "8", "CUTOUT_TIME_LIMIT": "10", "CUTOUT_STORAGE": storage,
                    "CUTOUT_LOG_FORMAT": "text"}
        if moto:
            self.env |= {"CUTOUT_S3_ENDPOINT_URL": moto.url, "CUTOUT_S3_BUCKET": BUCKET, "CUTOUT_S3_REGION": REGION}
        point_app_at(Settings.from_env(self.env))
        self.storage, self.jobs = context.storage(), context.jobs()
        self.workers: dict[str, Worker] = {}
        self._started = 0

    def start_worker(self, queue: str) -> Worker:
        self._started += 1
        self.workers[queue] = Worker(queue, self.env, self.logs / f"{queue}-{self._started}.log")
        return self.workers[queue]

    def restart_redis(self, down_s: float) -> None:
        """SIGTERM (Redis fsyncs its AOF), `down_s` of outage, then the same port and directory again."""
        stop_redis(self.redis)  # waits until it exited
        time.sleep(down_s)
        self.redis, _ = start_redis(self.redis_dir, port=self.redis_port)

    def wait_for(self, job: str, states=("done", "failed"), timeout: float = 150) -> dict:
        def finished():
            try:
                record = self.jobs.job(job)
            except redis.ConnectionError:
                return None  # the broker is restarting: ask again
            return record if record and record["status"] in states else None

        return wait_until(finished, timeout, f"job {job} did not reach {states} in {timeout} s; see {self.logs}",
                          interval=0.25)

    def progress(self, job: str) -> int:
        return self.jobs.job(job)["done"]

    def close(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        stop_redis(self.redis)

    def zip_of(self, job: str) -> zipfile.ZipFile:
        return zipfile.ZipFile(io.BytesIO(self.storage.get(keys.zip_key(job))))

    def assert_every_image_once(self, job: str, files: list[tuple[str, bytes]]) -> None:
        record = self.jobs.job(job)
        assert (record["status"], record["done"], record["failed"]) == ("done", len(files), 0), record
        with self.zip_of(job) as zf:
            names = zf.namelist()
            manifest = json.loads(zf.read("manifest.json"))
        assert len(names) == len(set(names)) == len(files) + 1 and names[-1] == "manifest.json"
        entries = manifest["files"]
        assert sorted(f["input"] for f in entries) == sorted(name for name, _ in files)
        assert [f["status"] for f in entries] == ["done"] * len(files)
        assert sorted(f["output"] for f in entries) == sorted(names[:-1])
        assert manifest["summary"] == {"total": len(files), "done": len(files), "failed": 0}


@pytest.fixture
@starts_servers
def moto(tmp_path, monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    server = Moto(tmp_path / "moto_server.log")
    yield server
    server.stop()


@pytest.fixture
@starts_servers
def make_cluster(tmp_path):
    """make_cluster(storage="local", moto=None) -> a Cluster with both workers started."""
    made = []

    def make(storage: str = "local", moto: Moto | None = None) -> Cluster:
        cluster = Cluster(tmp_path / f"cluster-{len(made)}", storage, moto)
        made.append(cluster)
        cluster.start_worker("gpu")
        cluster.start_worker("cpu")
        return cluster

    yield make
    for cluster in made:
        cluster.close()


# --- the web app's stack (test_hostile_inputs, test_security, test_load) ------------------------------
# tests/web/conftest.py's fixtures, declared again over its helpers rather than imported: an
# imported fixture is a second fixture with its own session instance, so in one run the web
# tests' workers (database 3, their own CUTOUT_HOME) would meet these. Database 5 keeps the two stacks apart.

WEB_REDIS_DB = 5


@pytest.fixture(scope="session")
def web_env(redis_url, tmp_path_factory) -> dict:
    return stack_env(redis_url, tmp_path_factory.mktemp("reliability-home"), WEB_REDIS_DB)


@pytest.fixture(scope="session")
def idle_env(redis_url, tmp_path_factory) -> dict:
    """The stack of this tier's tests that start no workers (the `app` fixture picks it): database 6."""
    return stack_env(redis_url, tmp_path_factory.mktemp("reliability-idle-home"), WEB_REDIS_DB + 1)
