"""`make bench`: the whole service (`cutout serve`: Redis, workers, gunicorn) through its API, against the CLI.

On the same 1920×1080 JPEGs as bench/batch_speed.py:
1. throughput: one job of THROUGHPUT images posted to /api/v1/jobs, followed to `done`, and
   the in-process CLI on the same files in the same run; the ratio is the cluster's efficiency.
   Per image: latency from submit to done (p50/p95), per-stage ms, the batch size it ran in;
2. memory: one job of SOAK images with every process's RSS sampled as it runs (after
   WARMUP images, at the end, and the peak), progress followed live through the API;
3. the zip step: `package` run in a fresh process for the small and the large job;
4. Redis memory: before any job, at the end of the soak, and once the jobs are past their
   retention (CUTOUT_RETENTION_HOURS is set short here) and the sweep has run.
Results go to bench/results/cluster_speed.json.
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from tqdm import tqdm

from bench.batch_speed import make_inputs, ours
from bench.machine import cpu_name
from bench.served import Served, descendants, http, multipart, rss_mib
from matting_core.model import get_model, usable_cores
from tasks.app import app, configure
from tasks.local_cluster import wait_until
from tasks.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MODEL = "u2netp"
THROUGHPUT, SOAK, WARMUP = 100, 1000, 100  # 100: long enough that start and drain are a small part
RETENTION_S = 120  # jobs, their objects and Celery's results expire this soon after they are created


def submit(served: Served, key: str, files: list[tuple[str, bytes]]) -> tuple[str, float]:
    body, content_type = multipart(files)
    started = time.time()
    status, reply = http(served.url("/api/v1/jobs"), body, {"X-Api-Key": key, "Content-Type": content_type})
    if status != 202:
        raise RuntimeError(f"submit answered {status}: {reply[:500]!r}")
    return json.loads(reply)["job_id"], started


def follow(served: Served, key: str, job: str, total: int, label: str, on_progress=None) -> dict[int, float]:
    """Poll the job through the API until done; returns when each item was first seen done (unix time)."""
    seen: dict[int, float] = {}
    with tqdm(total=total, desc=label, unit="img", dynamic_ncols=True) as bar:
        while True:
            record = json.loads(http(served.url(f"/api/v1/jobs/{job}"), headers={"X-Api-Key": key})[1])
            now = time.time()
            for item in record["items"]:
                if item["state"] in ("done", "failed") and item["index"] not in seen:
                    seen[item["index"]] = now
            bar.update(len(seen) - bar.n)
            if on_progress:
                on_progress(len(seen))
            if record["status"] in ("done", "failed"):
                if (record["status"], record["done"]) != ("done", total):
                    raise RuntimeError(f"job {job} ended {record['status']} with {record['done']}/{total} done")
                return seen
            time.sleep(0.25)


def processes(served: Served) -> dict[str, int]:
    """Every process of the service by a stable name: worker-cpu-child-0, web-child-1, ..."""
    named = {}
    for name in ("redis", "worker-gpu", "worker-cpu", "web"):
        pid = served.pid_of(name)
        named[name] = pid
        named |= {f"{name}-child-{n}": child for n, child in enumerate(sorted(descendants(pid)))}
    return named


def job_stats(served: Served, key: str, job: str, started: float, seen: dict[int, float]) -> dict:
    record = json.loads(http(served.url(f"/api/v1/jobs/{job}"), headers={"X-Api-Key": key})[1])
    items = record["items"]
    latency = sorted((seen[i] - started) * 1000 for i in seen)
    stages = sorted({s for it in items for s in (it["timings_ms"] or {})})
    return {"latency_ms": {"p50": round(statistics.median(latency)), "p95": round(latency[int(0.95 * len(latency))])},
            "stage_ms": {s: round(statistics.mean((it["timings_ms"] or {}).get(s, 0) for it in items), 1)
                         for s in stages},
            "inference_batch_sizes": sorted({it["batch_size"] for it in items if it["batch_size"]})}


def zip_peak_rss(served: Served, job: str) -> dict:
    """Peak RSS (MiB) of a fresh process that imports the workers' code, before and after packaging `job`."""
    code = ("import resource, sys; from tasks import context; from tasks.packaging import write_zip; "
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            "key = write_zip(context.storage(), context.jobs(), sys.argv[1]); "
            "print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, context.storage().root / key)")
    env = {**os.environ, "CUTOUT_HOME": str(served.home),
           "CUTOUT_BROKER_URL": f"redis://127.0.0.1:{served.ports['REDIS_PORT']}/0"}
    out = subprocess.run([sys.executable, "-c", code, job], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.split()
    before, peak = (round(int(v) / 1024, 1) for v in out[-3:-1])
    return {"zip_mib": round(Path(out[-1]).stat().st_size / 2**20, 1), "after_imports": before,
            "after_packaging": peak}


def window_median(samples, procs, low: int, high: int) -> dict[str, float]:
    """Each process's median RSS over the samples taken while `low` to `high` images were done."""
    window = [rss for finished, rss in samples if low <= finished < high]
    return {name: statistics.median(rss[name] for rss in window) for name in procs} if window else {}


def redis_used_mib(client: redis.Redis) -> float:
    return round(client.info("memory")["used_memory"] / 2**20, 2)


def expire_and_sweep(served: Served, client: redis.Redis, last_write: float) -> float:
    """Wait out the retention after the last result was stored (Celery's results and the attempt
    counters expire with it), run the sweep (beat would, hourly); Redis's used memory then."""
    time.sleep(max(0.0, last_write + RETENTION_S + 2 - time.time()))
    configure(app, Settings.from_env({"CUTOUT_BROKER_URL": f"redis://127.0.0.1:{served.ports['REDIS_PORT']}/0"}))
    app.send_task("cutout.sweep")
    wait_until(lambda: not client.zcard("cutout:jobs"), 120, "the sweep did not delete the jobs")
    time.sleep(5)  # the sweep's own result and the last attempt counters expire with the retention
    return redis_used_mib(client)


def main() -> None:
    cores = usable_cores()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        paths = make_inputs(tmp / "in", THROUGHPUT)
        files = [(p.name, p.read_bytes()) for p in paths]
        # u2netp on both sides: this measures what the service adds to the CLI, and keeps the
        # 1,000-image soak (and its numbers since 2026-11-28) comparable.
        served = Served(tmp / "home", {"CUTOUT_LOG_FORMAT": "json", "CUTOUT_MAX_FILES": str(SOAK),
                                        "CUTOUT_DEFAULT_MODEL": MODEL,
                                        "CUTOUT_RETENTION_HOURS": str(RETENTION_S / 3600)}).wait_ready()
        redis_client = redis.Redis(port=served.ports["REDIS_PORT"])
        try:
            redis_baseline = redis_used_mib(redis_client)
            key = served.demo()["api_key"]
            warm, started = submit(served, key, files[:4])  # loads the model in the gpu worker
            follow(served, key, warm, 4, "warm-up")
            small, started = submit(served, key, files)
            seen = follow(served, key, small, len(files), "throughput")
            seconds = max(seen.values()) - started
            cluster = {"seconds": round(seconds, 2), "images_per_second": round(len(files) / seconds, 3),
                       **job_stats(served, key, small, started, seen)}

            procs = processes(served)
            soak_files = [(f"{i:04d}-{files[i % len(files)][0]}", files[i % len(files)][1]) for i in range(SOAK)]
            samples: list[tuple[int, dict[str, float]]] = []  # (images finished, RSS of each process)

            def sample(finished: int) -> None:
                samples.append((finished, {name: rss_mib(pid) for name, pid in procs.items()}))

            big, soak_started = submit(served, key, soak_files)
            soak_seen = follow(served, key, big, SOAK, "soak", on_progress=sample)
            soak_seconds = max(soak_seen.values()) - soak_started
            # A process's RSS swings with the image it holds when sampled: compare the median over
            # the WARMUP images after warm-up with the median over the last WARMUP images.
            warm_rss = window_median(samples, procs, WARMUP, 2 * WARMUP)
            end_rss = window_median(samples, procs, SOAK - WARMUP, SOAK + 1)
            # The kernel's high-water mark, not the samples: an upload's peak passes between two samples.
            peak_rss = {name: rss_mib(pid, "VmHWM") for name, pid in procs.items()}
            zip_rss = {f"{THROUGHPUT}_images": zip_peak_rss(served, small), f"{SOAK}_images": zip_peak_rss(served, big)}
            redis_memory = {"before_any_job": redis_baseline, "after_soak": redis_used_mib(redis_client),
                            "after_expiry_and_sweep": expire_and_sweep(served, redis_client, max(soak_seen.values()))}
        finally:
            served.stop()
        cli = ours(tmp / "in", tmp / "cli-out", get_model(MODEL, device="cpu").load())
    growth = {name: round(end_rss[name] / warm_rss[name] - 1, 3) for name in end_rss if warm_rss.get(name)}
    workers = {k: v for k, v in growth.items() if k.startswith("worker")}
    result = {
        "bench": "cluster_speed", "date": time.strftime("%Y-%m-%d"), "images": THROUGHPUT, "size": [1920, 1080],
        "output": "RGBA PNG, default options", "path": "POST /api/v1/jobs on cutout serve (gunicorn, Redis, "
                                                      "gpu-queue worker on the CPU, cpu-queue prefork worker)",
        "machine": {"cpus": cores, "processor": cpu_name(), "python": platform.python_version()},
        "cluster": cluster, "cli": {k: cli[k] for k in ("seconds", "images_per_second", "precision")},
        "cluster_vs_cli": round(cluster["images_per_second"] / cli["images_per_second"], 3),
        "soak": {"images": SOAK, "seconds": round(soak_seconds, 1), "images_per_second": round(SOAK / soak_seconds, 3),
                 f"rss_mib_median_images_{WARMUP}_to_{2 * WARMUP}": {k: round(v, 1) for k, v in warm_rss.items()},
                 f"rss_mib_median_last_{WARMUP}_images": {k: round(v, 1) for k, v in end_rss.items()},
                 "peak_rss_mib": {k: round(v, 1) for k, v in peak_rss.items()},
                 "rss_growth": growth, "max_worker_rss_growth": max(workers.values()),
                 "web_peak_rss_mib": round(sum(v for k, v in peak_rss.items() if k.startswith("web")), 1)},
        "zip_step_peak_rss_mib": zip_rss,
        "redis_used_memory_mib": redis_memory,
    }
    out = ROOT / "bench" / "results" / "cluster_speed.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
