"""Naming a model imports no torch: only code that runs a model does.

Each process that never runs one (the cpu worker, the web app, `cutout users`, `cutout serve`'s
supervisor, `cutout weights` with the weights cached) is checked in a fresh interpreter, and a
real prefork cpu worker's children are checked for torch's library after a real job.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from matting_core.options import Options
from matting_core.weights import cutout_home
from tasks import context
from tasks.local_cluster import Worker, start_redis, stop_redis, wait_until
from tasks.settings import Settings
from tasks.submit import create_job
from tests.conftest import DATA, starts_servers
from tests.tasks.conftest import point_app_at

TORCH_FREE = {
    "the cpu worker's task modules": "import tasks.app, tasks.work, tasks.upkeep",
    "the web app": "from web import create_app; create_app().test_client().get('/')",
    "the CLI's parser": "from cutout_cli.main import _parser; _parser().format_help()",
    "cutout users list": "from cutout_cli.main import main; main(['users', 'list'])",
    "cutout weights, weights cached": "from cutout_cli.main import main; main(['weights', '--model', 'u2netp'])",
    "cutout serve's supervisor": "import os; from cutout_cli.serve import plan; plan(dict(os.environ))",
}


def plain_env(home: Path, redis_url: str) -> dict:
    """The environment with a CUTOUT_HOME of its own (the cached weights linked in) and no device
    named, so `auto`, as `cutout serve` and the manifests leave it."""
    home.mkdir()
    (home / "weights").symlink_to(cutout_home() / "weights")
    plain = {k: v for k, v in os.environ.items() if k != "CUTOUT_DEVICE"}
    return plain | {"CUTOUT_HOME": str(home), "CUTOUT_REDIS_URL": redis_url, "CUTOUT_BROKER_URL": redis_url}


@pytest.fixture
def env(tmp_path, redis_url) -> dict:
    return plain_env(tmp_path / "home", redis_url)


def torch_modules(code: str, env: dict) -> list[str]:
    """The torch modules a fresh interpreter holds after running `code`."""
    probe = f"{code}\nimport json, sys; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')))"
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("code", TORCH_FREE.values(), ids=TORCH_FREE.keys())
def test_a_process_that_runs_no_model_imports_no_torch(code, env):
    assert torch_modules(code, env) == []


def test_the_probe_sees_torch_where_a_model_is_built(env):
    assert "torch" in torch_modules("import matting_core.model", env)


@pytest.fixture(scope="module")
@starts_servers
def cluster(tmp_path_factory):
    """A Redis of its own, a gpu-queue worker on the CPU, and a prefork cpu-queue worker started as
    `cutout serve` starts it: no CUTOUT_DEVICE, so the setting is `auto`."""
    tmp = tmp_path_factory.mktemp("cluster")
    proc, url = start_redis(tmp / "redis")
    env = plain_env(tmp / "home", url) | {"CUTOUT_STORAGE": "local"}
    point_app_at(Settings.from_env(env))
    workers = []
    try:
        workers.append(Worker("gpu", env | {"CUTOUT_DEVICE": "cpu"}, tmp / "gpu.log"))
        workers.append(Worker("cpu", env, tmp / "cpu.log"))
        yield {"env": env, "cpu": workers[1], "tmp": tmp}
    finally:
        for worker in workers:
            worker.stop()
        stop_redis(proc)


def test_a_prefork_cpu_worker_finishes_and_packages_a_job_without_torch_in_its_children(cluster):
    files = [(f"{name}.jpg", (DATA / f"{name}.jpg").read_bytes()) for name in ("chelsea", "rocket")]
    job = create_job(context.storage(), context.jobs(), "alice", files, Options(refine=True), model="u2netp")
    record = wait_until(lambda: (r := context.jobs().job(job)) and r["status"] in ("done", "failed") and r, 120,
                        "the job did not finish")
    assert (record["status"], record["done"]) == ("done", 2)
    children = cluster["cpu"].pool_children()
    assert children
    assert [("libtorch" in Path(f"/proc/{pid}/maps").read_text()) for pid in children] == [False] * len(children)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a GPU")
def test_a_gpu_worker_told_to_use_cuda_without_a_gpu_still_refuses_to_start(cluster):
    # The cpu worker skips the device check (it imports torch); the worker that runs models must not.
    with pytest.raises(RuntimeError, match="no usable GPU"):
        Worker("gpu", cluster["env"] | {"CUTOUT_DEVICE": "cuda"}, cluster["tmp"] / "cuda.log")
