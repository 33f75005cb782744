"""`make bench`: the cluster path (Redis + gpu and cpu workers + local storage) against the CLI.

Three measurements on the same 1920×1080 JPEGs as bench/batch_speed.py:
1. throughput: one job of THROUGHPUT images through real workers, and the in-process
   CLI on the same files in the same run; the ratio is the cluster's efficiency;
2. memory: one job of SOAK images with every worker process's RSS sampled as it runs
   (after WARMUP images and at the end), progress read live from the job's Redis stream;
3. the zip step: `package` run in a fresh process for the small and the large job,
   peak RSS compared.
Results go to bench/results/cluster_speed.json.
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from bench.batch_speed import _cpu_name, make_inputs, ours
from matting_core.model import get_model, usable_cores
from matting_core.options import Options
from matting_core.weights import cutout_home
from tasks import keys
from tasks.app import app, configure
from tasks.jobs import JobStore
from tasks.local_cluster import Worker, start_redis
from tasks.settings import Settings
from tasks.storage import LocalStorage
from tasks.submit import create_job

ROOT = Path(__file__).resolve().parent.parent
THROUGHPUT, SOAK, WARMUP = 100, 500, 50  # 100: long enough that start and drain are a small part
GPU_THREADS = 4  # infer tasks in flight in the gpu worker: enough to keep the batcher fed


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker_processes(workers: dict[str, Worker]) -> dict[str, int]:
    """Each worker's main process and, for prefork, its pool children."""
    procs = {}
    for queue, worker in workers.items():
        procs[f"{queue}-main"] = worker.proc.pid
        children = Path(f"/proc/{worker.proc.pid}/task/{worker.proc.pid}/children").read_text().split()
        procs |= {f"{queue}-child-{n}": int(pid) for n, pid in enumerate(children)}
    return procs


def run_job(store: JobStore, storage: LocalStorage, files: list[tuple[str, bytes]], label: str,
            on_progress=None) -> tuple[str, float]:
    """Submit, follow the job's progress stream until it is done; returns (job, seconds)."""
    start = time.perf_counter()
    job = create_job(storage, store, "bench", files, Options())
    after, finished = "0", 0
    with tqdm(total=len(files), desc=label, unit="img", dynamic_ncols=True) as bar:
        while True:
            for event_id, event in store.events(job, after, block_ms=1000):
                after = event_id
                done = int(event["done"]) + int(event["failed"])
                bar.update(done - finished)
                finished = done
                if on_progress:
                    on_progress(finished)
                if event["status"] in ("done", "failed") and "i" not in event:
                    seconds = time.perf_counter() - start
                    record = store.job(job)
                    assert record["status"] == "done" and record["done"] == len(files), record
                    return job, seconds


def zip_peak_rss(env: dict, storage: LocalStorage, job: str) -> dict:
    """Peak RSS (MiB) of a fresh process that imports the workers' code, before and after packaging `job`."""
    code = ("import resource, sys; from tasks import context; from tasks.packaging import write_zip; "
            "from matting_core.registry import get_spec; "
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            "write_zip(context.storage(), context.jobs(), sys.argv[1], get_spec('u2netp')); "
            "print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, job], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.split()
    before, peak = (round(int(v) / 1024, 1) for v in out[-2:])
    zip_mib = round((storage.root / keys.zip_key(job)).stat().st_size / 2**20, 1)
    return {"zip_mib": zip_mib, "after_imports": before, "after_packaging": peak}


def main() -> None:
    cores = usable_cores()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        paths = make_inputs(tmp / "in", THROUGHPUT)
        redis_proc, url = start_redis(tmp / "redis")
        home = tmp / "home"
        home.mkdir()
        (home / "weights").symlink_to(cutout_home() / "weights")
        env = {**os.environ, "CUTOUT_BROKER_URL": url, "CUTOUT_HOME": str(home), "CUTOUT_DEVICE": "cpu"}
        settings = Settings.from_env(env)
        configure(app, settings)
        store = JobStore.from_url(url)
        storage = LocalStorage(home / "storage")
        workers = {"gpu": Worker("gpu", env, tmp / "gpu.log", concurrency=GPU_THREADS),
                   "cpu": Worker("cpu", env, tmp / "cpu.log", concurrency=cores)}
        try:
            files = [(p.name, p.read_bytes()) for p in paths]
            run_job(store, storage, files[:4], "warm-up")  # loads the model in the gpu worker
            small_job, seconds = run_job(store, storage, files, "throughput")
            cluster = {"seconds": round(seconds, 2), "images_per_second": round(len(files) / seconds, 3),
                       "gpu_threads": GPU_THREADS, "cpu_processes": cores}
            batch_sizes = [it.get("batch_size") for it in store.items(small_job).values()]

            procs = worker_processes(workers)
            soak_files = [(f"{i:04d}-{files[i % len(files)][0]}", files[i % len(files)][1]) for i in range(SOAK)]
            warm_rss: dict[str, float] = {}

            def sample(finished: int) -> None:
                if finished >= WARMUP and not warm_rss:
                    warm_rss.update({name: rss_mib(pid) for name, pid in procs.items()})

            big_job, soak_seconds = run_job(store, storage, soak_files, "soak", on_progress=sample)
            end_rss = {name: rss_mib(pid) for name, pid in procs.items()}
            zip_rss = {f"{n}_images": zip_peak_rss(env, storage, job)
                       for n, job in ((THROUGHPUT, small_job), (SOAK, big_job))}
        finally:
            for worker in workers.values():
                worker.stop()
            redis_proc.terminate()
            redis_proc.wait(10)
        cli = ours(tmp / "in", tmp / "cli-out", get_model("u2netp", device="cpu").load())
    growth = {name: round(end_rss[name] / warm_rss[name] - 1, 3) for name in end_rss}
    result = {
        "bench": "cluster_speed", "images": THROUGHPUT, "size": [1920, 1080], "output": "RGBA PNG, default options",
        "machine": {"cpus": cores, "processor": _cpu_name(), "python": platform.python_version()},
        "cluster": cluster, "cli": {k: cli[k] for k in ("seconds", "images_per_second", "precision")},
        "cluster_vs_cli": round(cluster["images_per_second"] / cli["images_per_second"], 3),
        "inference_batch_sizes": sorted(set(batch_sizes)),
        "soak": {"images": SOAK, "seconds": round(soak_seconds, 1),
                 "images_per_second": round(SOAK / soak_seconds, 3),
                 f"rss_mib_after_{WARMUP}": {k: round(v, 1) for k, v in warm_rss.items()},
                 "rss_mib_at_end": {k: round(v, 1) for k, v in end_rss.items()},
                 "rss_growth": growth, "max_rss_growth": max(growth.values())},
        "zip_step_peak_rss_mib": zip_rss,
    }
    out = ROOT / "bench" / "results" / "cluster_speed.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
