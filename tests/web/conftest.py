"""The web app on the real stack: Redis, a gpu-queue and a cpu-queue `celery worker`, local storage.

Web tests use Redis databases 3 (where the session's workers run) and 8 (where none ever do), so their
queues and records never meet the tasks tests'.
"""

import os

import pytest

from matting_core.weights import cutout_home
from tasks.local_cluster import Worker
from tasks.settings import Settings
from tests.conftest import point_app_at, starts_servers
from web import create_app
from web.extensions import limiter

FAST = "u2netp"


def stack_env(redis_url: str, home, db: int) -> dict:
    """The environment of a web stack on Redis database `db` with its own CUTOUT_HOME.

    A request that names no model runs u2netp here, ~3x quicker than the service's default:
    most of these tests are about anything but the model (tests/web/test_models.py runs u2net).
    """
    (home / "weights").symlink_to(cutout_home() / "weights")
    url = redis_url.rsplit("/", 1)[0] + f"/{db}"
    return {**os.environ, "CUTOUT_BROKER_URL": url, "CUTOUT_HOME": str(home), "CUTOUT_DEVICE": "cpu",
            "CUTOUT_SOFT_TIME_LIMIT": "25", "CUTOUT_TIME_LIMIT": "30", "CUTOUT_DEFAULT_MODEL": FAST}


def start_workers(env: dict, logs) -> dict:
    """A gpu-queue (threads) and a cpu-queue (prefork) `celery worker` for that environment."""
    return {"gpu": Worker("gpu", env, logs / "gpu.log", concurrency=4),
            "cpu": Worker("cpu", env, logs / "cpu.log", concurrency=2)}


_TWO_USERS: dict = {}  # the first two_users' secrets and the records it wrote, for every later call


def two_users(app) -> dict:
    """{"alice": {"password", "api_key", "headers"}, "bob": ...}, in the app's user store (just emptied by make_app).

    Made once per test process and written back from then on: each add hashes its password with scrypt (~0.25 s
    a user here), and some 200 tests want them. The records are the store's own, so the same
    passwords and keys work; a test that changes one changes only its copy."""
    store = app.extensions["cutout"].users
    if not _TWO_USERS:
        made = {}
        for name in ("alice", "bob"):
            password, key = store.add(name)
            made[name] = {"password": password, "api_key": key, "headers": {"X-Api-Key": key}}
        records = {k: store.r.hgetall(k) for k in store.r.keys("*")}
        assert all(store.r.type(k) == "hash" for k in records), "two_users copies hashes only"
        _TWO_USERS.update(made=made, records=records)
    else:
        pipe = store.r.pipeline()
        for key, fields in _TWO_USERS["records"].items():
            pipe.delete(key)
            pipe.hset(key, mapping=fields)
        pipe.execute()
    return {name: {**secrets, "headers": dict(secrets["headers"])} for name, secrets in _TWO_USERS["made"].items()}


@pytest.fixture(scope="session")
def web_env(redis_url, tmp_path_factory) -> dict:
    return stack_env(redis_url, tmp_path_factory.mktemp("web-home"), 3)


@pytest.fixture(scope="session")
@starts_servers
def workers(web_env, tmp_path_factory):
    """Real workers for both queues, started once for every web test that needs jobs to finish."""
    started = start_workers(web_env, tmp_path_factory.mktemp("web-logs"))
    yield started
    for worker in started.values():
        worker.stop()


def make_app(web_env: dict, **overrides):
    settings = overrides.get("CUTOUT_SETTINGS") or Settings.from_env(web_env)
    point_app_at(settings)  # other test modules pointed this process's Celery app at their own Redis
    config = {"TESTING": True, "CUTOUT_SETTINGS": settings, "SECRET_KEY": "test-secret",
              "RATELIMIT_STORAGE_URI": settings.redis_url, "SYNC_TIMEOUT": 60.0}
    app = create_app(config | overrides)
    app.extensions["cutout"].jobs.r.flushdb()  # users, jobs, queues and rate counters of earlier tests
    return app


@pytest.fixture(scope="session")
def idle_env(redis_url, tmp_path_factory) -> dict:
    """A stack on Redis database 8 with its own CUTOUT_HOME, where no worker ever runs: what a test submits
    there stays queued, however many workers the session has started for database 3 by then."""
    return stack_env(redis_url, tmp_path_factory.mktemp("idle-home"), 8)


@pytest.fixture
def app(request, web_env):
    """The web app on the workers' stack when the test asks for `workers`, else on the idle one (its
    assertions on queued items and stored uploads must not race a worker that another module started)."""
    app = make_app(web_env if "workers" in request.fixturenames else request.getfixturevalue("idle_env"))
    yield app
    limiter.reset()


@pytest.fixture
def users(app) -> dict:
    return two_users(app)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def settings_with(web_env):
    """Settings for the web env with some fields replaced."""
    return lambda **changes: Settings.from_env(web_env).replace(**changes)
