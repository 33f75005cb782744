"""`make bench`: the peak resident memory of a prefork cpu-queue worker's pool children.

A real Redis and real `celery worker` processes, started as the tests start them
(tasks/local_cluster.py): a gpu-queue worker (threads, on this host's CPU) runs the model, a
cpu-queue worker (prefork, two children) takes the job's launch, finish (refine, compose,
encode) and package tasks. The cpu worker's environment names no device, as `cutout serve`
starts it, so whatever it imports for CUTOUT_DEVICE=auto counts.
Three jobs, one after the other, the children's VmHWM (the kernel's peak RSS) read after
each: the four test photos at their own sizes with default options; six 1920x1080 JPEGs made
from them (bench/cpu_stages.py); the same six with refine on. Then whether libtorch is mapped
into each child. The goal is under 150 MB per child: a worker that imported torch to name a
model held ~280 MB in every child. Results go to bench/results/worker_memory.json.
"""

import os
import platform
import tempfile
from pathlib import Path

from bench.cpu_stages import make_inputs
from bench.machine import cpu_name, save_result
from bench.served import rss_mib
from matting_core.options import Options
from matting_core.weights import cutout_home
from tasks import context
from tasks.app import app, configure
from tasks.local_cluster import Worker, start_redis, stop_redis, wait_until
from tasks.settings import Settings
from tasks.submit import create_job

ROOT = Path(__file__).resolve().parent.parent
IMAGES, CHILDREN, GOAL_MB = 6, 2, 150
MODEL = "u2netp"  # the model runs in the gpu worker, not measured here; the quicker one will do
DATA = ROOT / "tests" / "data"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")  # their own sizes, 451x300 to 640x427


def _large_photos() -> list[tuple[str, bytes]]:
    return [(f"photo-{i}.jpg", jpeg) for i, (jpeg, _) in enumerate(make_inputs(IMAGES))]


def torch_mapped(pid: int) -> bool:
    """Whether torch's shared library is in the process (imported by it, or by its parent before the fork)."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


JOBS = {  # run in this order, each peak read after it: a high-water mark only grows
    "test photos, default options": (lambda: [(f"{n}.jpg", (DATA / f"{n}.jpg").read_bytes()) for n in PHOTOS],
                                     Options()),
    f"{IMAGES} 1920x1080 JPEGs, default options": (_large_photos, Options()),
    f"{IMAGES} 1920x1080 JPEGs, refine on": (_large_photos, Options(refine=True)),
}


def _peaks(pids: list[int]) -> list[float]:
    return [round(rss_mib(pid, "VmHWM"), 1) for pid in pids]


def measure(tmp: Path) -> dict:
    proc, url = start_redis(tmp / "redis")
    home = tmp / "home"
    home.mkdir()
    (home / "weights").symlink_to(cutout_home() / "weights")
    env = {k: v for k, v in os.environ.items() if k != "CUTOUT_DEVICE"}
    env |= {"CUTOUT_BROKER_URL": url, "CUTOUT_HOME": str(home), "CUTOUT_STORAGE": "local"}
    configure(app, Settings.from_env(env))
    workers = []
    try:
        workers.append(Worker("gpu", env | {"CUTOUT_DEVICE": "cpu"}, tmp / "gpu.log"))
        cpu = Worker("cpu", env, tmp / "cpu.log", concurrency=CHILDREN)
        workers.append(cpu)
        children = cpu.pool_children()
        result = {"idle_children_rss_mb": [round(rss_mib(pid), 1) for pid in children], "jobs": {}}
        for what, (files, options) in JOBS.items():
            job = create_job(context.storage(), context.jobs(), "bench", files(), options, model=MODEL)
            record = wait_until(lambda j=job: (r := context.jobs().job(j)) and r["status"] in ("done", "failed") and r,
                                300, f"the job did not finish; see {tmp}")
            result["jobs"][what] = {"status": record["status"], "done": record["done"], "failed": record["failed"],
                                    "children_peak_rss_mb": _peaks(children)}
        assert cpu.pool_children() == children, "a pool child was replaced mid-run; its peak is lost"
        result |= {"parent_peak_rss_mb": _peaks([cpu.proc.pid])[0],
                   "torch_in_children": [torch_mapped(pid) for pid in children]}
        return result
    finally:
        for worker in workers:
            worker.stop()
        stop_redis(proc)


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="cutout-worker-memory-") as tmp:
        measured = measure(Path(tmp))
    result = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "what": f"a prefork cpu worker with {CHILDREN} children, its environment naming no device; {MODEL}, png",
        "goal_mb": GOAL_MB,
        **measured,
        "under_goal": {what: max(job["children_peak_rss_mb"]) < GOAL_MB for what, job in measured["jobs"].items()},
    }
    save_result("worker_memory", result)
    return result


if __name__ == "__main__":
    main()
