"""Device and thread choices as plain data: the CLI's parser, `cutout serve` and the web app
name them without importing torch (~1,200 modules, ~150 MB), which only the model needs."""

import math
import os
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may use: its CPU set, capped by its cgroup's CPU quota, rounded up.

    A container or pod with a CPU limit (`cpus: 1`, `limits.cpu`) sees every host core in its CPU set
    but gets only the quota's worth of time; one model thread per host core there is throttled."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cpu_quota(cgroup)
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def _cpu_quota(cgroup: Path) -> float | None:
    """The cgroup's CPU limit in cores (v2 cpu.max, else v1 cfs_quota_us / cfs_period_us); None: no limit."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]  # "max 100000" when unlimited
    except (OSError, ValueError):
        try:
            quota = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip()  # -1 when unlimited
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return None
    return int(quota) / int(period)


def torch_threads(device_type: str, cores: int, workers: int) -> int:
    """Intra-op threads for the model: on the CPU the cores are shared out among the workers."""
    return max(1, cores // workers) if device_type == "cpu" else max(1, cores)
