"""One typed configuration for the workers and the web app, read from CUTOUT_* variables at the edge."""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from matting_core.decode import DEFAULT_MAX_PIXELS
from matting_core.registry import DEFAULT_MODEL, get_spec
from matting_core.weights import cutout_home

REDIS = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class Settings:
    broker_url: str = REDIS
    result_backend: str = REDIS
    redis_url: str = REDIS  # job records and progress streams
    home: Path = Path("~/.cache/cutout").expanduser()
    storage: str = "local"  # local | s3
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    # Where clients outside reach the store, for presigned links (compose's http://minio:9000 means
    # nothing to a browser); unset with an endpoint of its own, the web app streams downloads itself.
    s3_public_endpoint_url: str | None = None
    s3_region: str | None = None
    retention_hours: float = 24
    device: str = "auto"
    precision: str = "auto"
    gpu: str | None = None  # pins this worker to one GPU (CUDA_VISIBLE_DEVICES)
    batch_size: int = 0  # 0: 8 on CUDA, 1 on the CPU
    max_wait_ms: int = 20  # how long a partial model batch waits for company
    max_pixels: int = DEFAULT_MAX_PIXELS
    soft_time_limit: int = 300  # s; one image's stage, with room for a 50 MP decode on a busy CPU
    time_limit: int = 360  # the soft limit's handler needs time to record the item as failed
    max_attempts: int = 3  # deliveries of one task before its item is failed as a poison
    compile: str = "auto"  # torch.compile the model: auto (on CUDA), on, off
    warm_up: bool = False  # gpu workers: load, run (and compile) each preloaded model before reporting ready
    stall_s: int = 0  # the watchdog fails a job with no progress for this long; 0: derived (stall_timeout)
    # Redis hands an unacked message (its worker died) out again after this long; 0: twice the hard
    # limit. Tests with a short hard limit set it just above, to see a killed worker's images sooner.
    visibility_s: int = 0
    models: tuple[str, ...] = ()  # gpu workers: models loaded at start (the rest load on first use)
    default_model: str = DEFAULT_MODEL  # what a request that names no model runs
    # Workers' /metrics: loopback, like every other port of `cutout serve`; containers scraped on the
    # pod's address set 0.0.0.0.
    metrics_addr: str = "127.0.0.1"
    # The sweep deletes a storage prefix with no job record once its newest object is this old: an
    # upload still being stored (objects first, then the record) is younger than this.
    orphan_s: int = 600

    def __post_init__(self):
        named = [("CUTOUT_DEFAULT_MODEL", self.default_model)] + [("CUTOUT_MODELS", n) for n in self.models]
        for variable, name in named:
            try:
                get_spec(name)
            except ValueError as err:
                raise ValueError(f"{variable}: {err}") from None
        if not 0 < self.soft_time_limit < self.time_limit:
            raise ValueError(
                f"CUTOUT_SOFT_TIME_LIMIT ({self.soft_time_limit} s) must be positive and below CUTOUT_TIME_LIMIT "
                f"({self.time_limit} s), or the hard limit kills a task before it can record why")
        if self.visibility_s and self.visibility_s <= self.time_limit:
            raise ValueError(
                f"CUTOUT_VISIBILITY_TIMEOUT ({self.visibility_s} s) must be above CUTOUT_TIME_LIMIT "
                f"({self.time_limit} s), or Redis hands a task still running to a second worker")

    @property
    def visibility_timeout(self) -> int:
        # Longer than the hard limit, or Redis hands a still-running task to a second worker.
        return self.visibility_s or self.time_limit * 2

    @property
    def stall_timeout(self) -> int:
        # A lost message comes back after the visibility timeout and may then run up to the hard
        # limit, up to max_attempts times (each start is progress); a few hard limits on top cover
        # a package of a large job. Defaults: 3 × 360 + 720 s = 30 min.
        return self.stall_s or 3 * self.time_limit + self.visibility_timeout

    @property
    def preload(self) -> tuple[str, ...]:
        """The models a gpu worker loads before it takes images: those named, else with warm-up
        the default one (what most jobs will ask for), else none (each loads on first use)."""
        return self.models or ((self.default_model,) if self.warm_up else ())

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        get = lambda name, default=None: env.get(f"CUTOUT_{name}") or default  # noqa: E731

        def number(name: str, default, kind=int):
            value = get(name, default)
            try:
                return kind(value)
            except ValueError:
                raise ValueError(f"CUTOUT_{name}={value!r} is not a number; set it to e.g. {default}") from None

        hard = number("TIME_LIMIT", 360)
        broker = get("BROKER_URL", REDIS)
        return cls(
            broker_url=broker,
            result_backend=get("RESULT_BACKEND", broker),
            redis_url=get("REDIS_URL", broker),
            home=cutout_home(env),
            storage=get("STORAGE", "s3" if get("S3_BUCKET") else "local"),
            s3_bucket=get("S3_BUCKET"),
            s3_endpoint_url=get("S3_ENDPOINT_URL"),
            s3_public_endpoint_url=get("S3_PUBLIC_ENDPOINT_URL"),
            s3_region=get("S3_REGION"),
            retention_hours=number("RETENTION_HOURS", 24, float),
            device=get("DEVICE", "auto"),
            precision=get("PRECISION", "auto"),
            gpu=get("GPU"),
            batch_size=number("BATCH_SIZE", 0),
            max_wait_ms=number("MAX_WAIT_MS", 20),
            max_pixels=number("MAX_PIXELS", DEFAULT_MAX_PIXELS),
            # Without its own setting, the soft limit leaves the hard one a sixth for the cleanup.
            soft_time_limit=number("SOFT_TIME_LIMIT", hard * 5 // 6),
            time_limit=hard,
            max_attempts=number("MAX_ATTEMPTS", 3),
            compile=(get("COMPILE", "auto")).lower(),
            warm_up=(get("WARMUP", "0")).lower() in ("1", "true", "yes", "on"),
            stall_s=number("STALL_TIMEOUT", 0),
            visibility_s=number("VISIBILITY_TIMEOUT", 0),
            models=tuple(name.strip().lower() for name in get("MODELS", "").split(",") if name.strip()),
            default_model=get("DEFAULT_MODEL", DEFAULT_MODEL).strip().lower(),
            metrics_addr=get("METRICS_ADDR", "127.0.0.1"),
            orphan_s=number("ORPHAN_AGE", 600),
        )
