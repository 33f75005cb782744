"""A process's resources, built from Settings in one place: storage, the job store, the model batchers.

Made at a process's edge (tasks/app.py configure: the workers, beat, the web app's factory, the
CLI, tests) and handed down; each part is built on first use, so a prefork parent that holds a
Resources holds no Redis connection, boto3 client or model that its children would inherit: each
child gets a Resources of its own at worker_process_init.
"""

import functools
import threading

from tasks.batcher import Batcher, Batchers
from tasks.jobs import JobStore
from tasks.settings import Settings
from tasks.storage import Storage, make_storage


class Resources:
    def __init__(self, settings: Settings):
        self.settings = settings
        # A worker's first tasks arrive on several threads at once: a second Batchers would load
        # every model again.
        self._batchers_lock = threading.Lock()
        self._batchers: Batchers | None = None

    @functools.cached_property
    def storage(self) -> Storage:
        s = self.settings
        return make_storage(s.storage, home=s.home, bucket=s.s3_bucket, endpoint_url=s.s3_endpoint_url,
                            region=s.s3_region)

    @functools.cached_property
    def jobs(self) -> JobStore:
        return JobStore.from_url(self.settings.redis_url, retention_s=self.settings.retention_hours * 3600)

    @property
    def batchers(self) -> Batchers:
        """The model batchers of this process, one per model, each made when a job first needs it."""
        with self._batchers_lock:
            if self._batchers is None:
                self._batchers = Batchers(self._new_batcher)
            return self._batchers

    def _new_batcher(self, name: str) -> Batcher:
        import torch  # here, not at import: the web app and cpu workers build Resources without a model

        from matting_core.model import get_model, torch_threads, usable_cores

        s = self.settings
        model = get_model(name, device=s.device, home=s.home, precision=s.precision)
        if model.device.type == "cuda":
            # Measured on an H200 (issue 6): compiled fp16 runs 3,282 img/s at batch 64, eager 1,424.
            model.compiled = s.compile in ("auto", "on", "1", "true")
            return Batcher(model, s.batch_size or 64, s.max_wait_ms)
        cores = usable_cores()
        # One intra-op thread per model thread. With both models busy at once their runners share the
        # cores (2x threads), which costs latency, not throughput.
        torch.set_num_threads(torch_threads("cpu", cores, cores))
        return Batcher(model, s.batch_size or 1, s.max_wait_ms, runners=cores)
