"""A gpu-queue worker and its models at start: CUTOUT_MODELS loads each in the worker process before
it takes images; an unknown name stops the worker, naming the choices. Real `celery worker` processes."""

import os

import pytest

from matting_core.weights import cutout_home
from tasks.local_cluster import Worker


def worker_env(redis_url: str, tmp_path, **variables) -> dict:
    """A worker's environment on Redis database 7, where no test enqueues anything."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "weights").symlink_to(cutout_home() / "weights")
    url = redis_url.rsplit("/", 1)[0] + "/7"
    return {**os.environ, "CUTOUT_BROKER_URL": url, "CUTOUT_HOME": str(home), "CUTOUT_DEVICE": "cpu", **variables}


def test_a_gpu_worker_loads_every_model_of_cutout_models_before_it_is_ready(redis_url, tmp_path):
    log = tmp_path / "gpu.log"
    worker = Worker("gpu", worker_env(redis_url, tmp_path, CUTOUT_MODELS="u2net,u2netp"), log)
    try:
        text = log.read_text()
        assert text.index("cutout worker: u2net loaded") < text.index("ready.")
        assert text.index("cutout worker: u2netp loaded") < text.index("ready.")
    finally:
        worker.stop()


@pytest.mark.parametrize("variable", ["CUTOUT_MODELS", "CUTOUT_DEFAULT_MODEL"])
def test_a_worker_with_an_unknown_model_refuses_to_start_naming_the_choices(redis_url, tmp_path, variable):
    env = worker_env(redis_url, tmp_path, **{variable: "modnet"})
    with pytest.raises(RuntimeError, match=f"{variable}: unknown model 'modnet'; choose one of u2net, u2netp"):
        Worker("gpu", env, tmp_path / "gpu.log")
