"""`python -m bench.deploy_scale`: scale-out of the compose stack, measured on the real engine.

The stack of tests/deploy/test_stack.py (docker-compose.yml with the air-gapped stand-ins, the
cpu-only profile) with each worker container limited to one CPU (docker/compose.bench.yml),
first with one container of each worker, then with two of each (`--scale`). Per layout: a
warm-up job, then the same 100-image job RUNS times, timed from its submit to its end as the
API reports it. The ratios of the median and of the best images/s (two of each over one of
each), with the load average around each run, go to
bench/results/deploy_scale.json with every run's numbers and the machine. Needs a Docker
daemon and `make images`; minutes.
"""

import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.deploy_stack import Stack, photos
from bench.machine import cpu_name, save_result

ROOT = Path(__file__).resolve().parent.parent
IMAGES, RUNS, MODEL = 100, 3, "u2netp"
GOAL = 1.7


def measure(scale: int) -> dict:
    stack = Stack(f"cutout-scale-{os.getpid()}-{scale}", extra_files=("docker/compose.bench.yml",))
    started = time.monotonic()
    stack.up(scale=scale)
    try:
        user = stack.user("bench")
        up_s = time.monotonic() - started
        stack.wait_done(user, stack.submit(user, photos(4 * scale), model=MODEL))  # every worker has loaded
        files, runs = photos(IMAGES), []
        for _ in range(RUNS):
            load = os.getloadavg()[0]
            t0 = time.monotonic()
            status = stack.wait_done(user, stack.submit(user, files, model=MODEL), timeout=1200)
            wall = time.monotonic() - t0
            assert (status["status"], status["done"]) == ("done", IMAGES), status
            runs.append({"wall_s": round(wall, 2), "images_per_s": round(IMAGES / wall, 3),
                         "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)})
            print(f"{scale} of each worker: {IMAGES} images in {wall:.1f} s ({IMAGES / wall:.2f} img/s)", flush=True)
        rates = [r["images_per_s"] for r in runs]
        # The best run is the one other work on the machine disturbed least; the median is kept too.
        return {"containers_per_worker": scale, "stack_up_s": round(up_s, 1), "runs": runs,
                "images_per_s": round(statistics.median(rates), 3), "best_images_per_s": max(rates)}
    finally:
        stack.down()


def main() -> None:
    one, two = measure(1), measure(2)
    ratio = round(two["images_per_s"] / one["images_per_s"], 2)
    best_ratio = round(two["best_images_per_s"] / one["best_images_per_s"], 2)
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": cpu_name(),
              "cores": os.cpu_count(), "python": platform.python_version(), "model": MODEL, "images": IMAGES,
              "image_size": "320x240 JPEG", "cpus_per_worker_container": 1, "one_of_each": one,
              "two_of_each": two, "ratio": ratio, "ratio_of_best_runs": best_ratio, "goal": GOAL}
    out = save_result("deploy_scale", result, echo=False)
    print(f"two of each / one of each: {ratio}x median, {best_ratio}x best runs (goal {GOAL}x) -> "
          f"{out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
