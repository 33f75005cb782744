"""Real servers for tasks/ tests: a Redis, a local directory and an S3-compatible server (moto_server)."""

import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tasks.local_cluster import free_port
from tasks.storage import LocalStorage, S3Storage, s3_client
from tests.conftest import point_app_at, starts_servers

MOTO_SERVER = Path(sys.executable).parent / "moto_server"
REGION = "us-east-1"  # the one region where create_bucket needs no LocationConstraint


def _wait_until_answering(url: str, server: subprocess.Popen, log: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"moto_server exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer means it is serving
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"moto_server did not answer at {url} within {timeout:.0f} s:\n{log.read_text()}")


@pytest.fixture(scope="session")
@starts_servers
def s3_server(tmp_path_factory):
    """Endpoint URL of a real moto_server on a free loopback port, with dummy AWS credentials."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", REGION)
        # Keep a developer's own AWS profile and files out of the tests.
        env.delenv("AWS_PROFILE", raising=False)
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        env.setenv("AWS_CONFIG_FILE", str(tmp_path_factory.mktemp("aws") / "config"))
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path_factory.mktemp("aws") / "credentials"))
        port = free_port()
        log = tmp_path_factory.mktemp("moto") / "moto_server.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
            )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_answering(url, server, log)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh, empty bucket for one test."""
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    s3_client(s3_server, REGION).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def local_storage(tmp_path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


@pytest.fixture
def s3_storage(s3_server, s3_bucket) -> S3Storage:
    return S3Storage(s3_bucket, endpoint_url=s3_server, region=REGION)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def storage(request):
    """Each backend in turn; the S3 server starts only when an s3 case runs."""
    return request.getfixturevalue(f"{request.param}_storage")


@pytest.fixture
@starts_servers
def own_redis(tmp_path):
    """A Redis of this test's own (nothing else's messages in its queues) and the env pointing at it."""
    import os

    from tasks.local_cluster import start_redis, stop_redis
    from tasks.settings import Settings

    proc, url = start_redis(tmp_path / "redis")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "CUTOUT_BROKER_URL": url, "CUTOUT_HOME": str(home), "CUTOUT_STORAGE": "local",
           "CUTOUT_DEVICE": "cpu"}
    point_app_at(Settings.from_env(env))
    try:
        yield env
    finally:
        stop_redis(proc)
