"""Waiting for a job from a request (the synchronous endpoints), on its progress stream, not by polling."""

import time

from tasks.jobs import JobStore


def wait_for_job(store: JobStore, job: str, timeout: float) -> dict | None:
    """The finished job record, or None if it is still running after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = "0"
    while True:
        record = store.job(job)
        if record and record["status"] in ("done", "failed"):
            return record
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        events = store.events(job, last, block_ms=max(1, int(min(left, 5) * 1000)))
        if events:
            last = events[-1][0]
