"""Device and thread choices as plain data: the CLI's parser, `cutout serve` and the web app
name them without importing torch (~1,200 modules, ~150 MB), which only the model needs."""

import os

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def usable_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def torch_threads(device_type: str, cores: int, workers: int) -> int:
    """Intra-op threads for the model: on the CPU the cores are shared out among the workers."""
    return max(1, cores // workers) if device_type == "cpu" else max(1, cores)
