"""Prometheus metrics, all `cutout_*`; labels are bounded (stage, outcome, queue, endpoint, model),
never job or user ids.

Prefork children and gunicorn workers are separate processes: with
PROMETHEUS_MULTIPROC_DIR set (cutout serve and the containers set it), each writes
its samples there and the scraped process merges them (prometheus_client's
multiprocess mode). Without it, the process's own registry is served.
"""

import os
import time

import redis
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from tasks.queues import queue_lists

STAGES = ("decode", "infer", "refine", "compose", "encode", "store", "package")
# Seconds: a stage of one 1080p image is 5-500 ms on a CPU; packaging a big batch takes minutes.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

jobs_total = Counter("cutout_jobs_total", "Jobs finished, by outcome", ["outcome"])
images_total = Counter("cutout_images_total", "Images finished, by outcome", ["outcome"])
stage_duration = Histogram("cutout_stage_duration_seconds", "Time per pipeline stage of one image",
                           ["stage"], buckets=_BUCKETS)
queue_wait = Histogram("cutout_queue_wait_seconds", "Time a task waited in its queue", ["queue"],
                       buckets=_BUCKETS)
batch_size = Histogram("cutout_inference_batch_size", "Images per model call, by model", ["model"],
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
# The infer stage of stage_duration again, by model (observed by the gpu worker; stage_duration keeps
# its one label so existing queries hold): u2net takes ~3x u2netp's time on a CPU.
infer_duration = Histogram("cutout_infer_duration_seconds",
                           "Time one image spent in the infer stage (waiting for its batch, then the model), by model",
                           ["model"], buckets=_BUCKETS)
gpu_memory = Gauge("cutout_gpu_memory_allocated_bytes", "GPU memory held by tensors after the last batch",
                   multiprocess_mode="max")
http_duration = Histogram("cutout_http_request_duration_seconds", "Web requests, by endpoint",
                          ["method", "endpoint", "status"], buckets=_BUCKETS)


def observe_timings(ms: dict[str, float]) -> None:
    """One image's Timings.ms: the stages that Prometheus names, in seconds."""
    merged = {"decode": ms.get("decode", 0) + ms.get("decode_small", 0) + ms.get("preprocess", 0)}
    merged |= {stage: ms[stage] for stage in STAGES if stage in ms and stage != "decode"}
    for stage, value in merged.items():
        if value:
            stage_duration.labels(stage).observe(value / 1000)


def observe_queue_wait(queue: str, sent_at: float | None) -> None:
    if sent_at:
        queue_wait.labels(queue).observe(max(0.0, time.time() - float(sent_at)))


class QueueLengths:
    """cutout_queue_length{queue}: the messages waiting in the queue, read when scraped (what the HPA
    scales on): the sum over its priority lists (tasks/app.py queue_lists), not counting the few each
    worker holds unacked."""

    def __init__(self, broker_url: str, queues=("gpu", "cpu")):
        self.client = redis.Redis.from_url(broker_url, socket_timeout=2)
        self.queues = queues

    def collect(self):
        family = GaugeMetricFamily("cutout_queue_length", "Messages waiting in each queue, all priorities",
                                   labels=["queue"])
        for queue in self.queues:
            try:
                pipe = self.client.pipeline(transaction=False)
                for name in queue_lists(queue):
                    pipe.llen(name)
                family.add_metric([queue], sum(pipe.execute()))
            except redis.RedisError:
                continue  # a scrape during a Redis outage shows the gap rather than failing
        yield family


class _ThisProcess:
    def collect(self):
        return REGISTRY.collect()


def registry(broker_url: str | None = None) -> CollectorRegistry:
    """What to serve on /metrics: every process's samples, plus queue lengths if a broker is given."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        reg = CollectorRegistry()
        MultiProcessCollector(reg)
    else:
        reg = CollectorRegistry(auto_describe=False)
        reg.register(_ThisProcess())
    if broker_url:
        reg.register(QueueLengths(broker_url))
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
