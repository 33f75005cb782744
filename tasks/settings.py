"""The one configuration of every cutout process, read from CUTOUT_* variables once, at the process's edge.

The edge is where a process starts: the worker, beat and Flower (`celery -A tasks.app`, tasks/app.py),
gunicorn's app factory (web.create_app), `cutout serve` and `cutout users`. Each calls
`Settings.from_env()` once and passes the result down; nothing deeper reads the environment.
`Settings()` alone is the defaults: constructing one never reads the environment.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from matting_core.decode import DEFAULT_MAX_PIXELS
from matting_core.registry import DEFAULT_MODEL, get_spec

PREFIX = "CUTOUT_"
REDIS_PORT = 6379


def local_redis_url(port: int) -> str:
    """The Redis `cutout serve` starts on CUTOUT_REDIS_PORT: what every process dials unless told otherwise."""
    return f"redis://127.0.0.1:{port}/0"


REDIS = local_redis_url(REDIS_PORT)


def _named(variable: str, default: Any, description: str) -> Any:
    # A field whose variable is not CUTOUT_ + its upper-cased name (validate_by_name: both are accepted).
    return Field(default, description=description, validation_alias=variable)


class Settings(BaseSettings):
    """Every CUTOUT_* setting; the README's settings table lists each (tests/tasks/test_settings.py checks)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="ignore", validate_by_name=True)

    # Queues, job records, storage
    redis_port: int = Field(REDIS_PORT, description="port of the Redis `cutout serve` starts; the Redis every "
                                                    "process dials when CUTOUT_BROKER_URL is not set")
    broker_url: str = Field(REDIS, description="Celery broker (default: redis://127.0.0.1:CUTOUT_REDIS_PORT/0)")
    result_backend: str = Field(REDIS, description="task results (default: the broker URL)")
    redis_url: str = Field(REDIS, description="job records, progress streams, users (default: the broker URL)")
    home: Path = Field(Path("~/.cache/cutout").expanduser(),
                       description="weights, and local storage under storage/")
    storage: str = Field("local", description="storage backend: s3 if a bucket is set, else local")
    s3_bucket: str | None = Field(None, description="S3 bucket (any S3-compatible store)")
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint (MinIO...); AWS's when unset")
    # Compose's http://minio:9000 means nothing to a browser; unset with an endpoint of its own,
    # the web app streams downloads itself.
    s3_public_endpoint_url: str | None = Field(None, description="where clients outside reach the store, for "
                                                                 "presigned links")
    s3_region: str | None = Field(None, description="S3 region")
    retention_hours: float = Field(24, description="when jobs, their objects and results expire")
    orphan_s: int = _named("CUTOUT_ORPHAN_AGE", 600, "s; the sweep deletes a storage prefix with no job record "
                                                     "once its newest object is this old")

    # Models and workers
    device: str = Field("auto", description="model device: auto, cpu, cuda, cuda:N")
    precision: str = Field("auto", description="model precision: auto, fp32, fp16, bf16")
    gpu: str | None = Field(None, description="pins this worker to one GPU (sets CUDA_VISIBLE_DEVICES)")
    batch_size: int = Field(0, description="micro-batch size of the gpu worker; 0: 64 on CUDA, 1 on the CPU")
    max_wait_ms: int = Field(20, description="how long a partial model batch waits for company")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, description="larger images are refused from their header")
    soft_time_limit: int = Field(300, description="s per task stage (default: five sixths of the hard limit)")
    time_limit: int = Field(360, description="s; the hard limit, with room for the soft limit's handler")
    max_attempts: int = Field(3, description="deliveries of one task before its item is failed as poison")
    compile: str = Field("auto", description="torch.compile the model: auto (on CUDA), on, off")
    warm_up: bool = _named("CUTOUT_WARMUP", False, "gpu workers: load, run and compile each preloaded model "
                                                   "before taking images")
    stall_s: int = _named("CUTOUT_STALL_TIMEOUT", 0, "s without progress before the watchdog fails a job; "
                                                     "0: 3 x hard limit + visibility timeout")
    # Tests with a short hard limit set it just above, to see a killed worker's images sooner.
    visibility_s: int = _named("CUTOUT_VISIBILITY_TIMEOUT", 0, "s before Redis hands out again a message whose "
                                                               "worker died; 0: twice the hard limit")
    models: tuple[str, ...] = Field((), description="gpu workers: models loaded at start, e.g. u2net,u2netp")
    default_model: str = Field(DEFAULT_MODEL, description="the model of a request that names none")
    # Loopback like every other port of `cutout serve`; containers scraped on the pod's address set 0.0.0.0.
    metrics_addr: str = Field("127.0.0.1", description="address the workers' /metrics listen on")
    log_format: str = Field("json", description="json lines, or text: Celery's and Flask's plain lines "
                                                "(for a terminal)")
    metrics_port: int | None = Field(None, description="workers' /metrics port (none when unset; `cutout serve`: "
                                                       "9101 and the next)")

    # `cutout serve`
    port: int = Field(8000, description="`cutout serve`: the portal's port")
    flower_port: int = Field(5555, description="`cutout serve`: Flower's port")
    flower_user: str = Field("admin", description="`cutout serve`: Flower's login")
    flower_password: str | None = Field(None, description="`cutout serve`: Flower's password (default: one "
                                                          "generated into $CUTOUT_HOME/flower-password)")

    # The web server (gunicorn's master reads these: web/gunicorn_conf.py, web/server.py)
    worker_connections: int = Field(4000, description="web server: connections (greenlets) per gunicorn worker")
    header_timeout: float = Field(10.0, description="web server: s for a request's whole head")
    body_timeout: float = Field(30.0, description="web server: s a request body may stay idle before a 408")
    max_connections_per_ip: int = Field(128, description="web server: open connections from one address; 0: none")

    # The web app
    env: str = Field("development", description="web: `production` requires CUTOUT_SECRET_KEY and secure cookies")
    secret_key: str | None = Field(None, description="web: signs sessions; 32+ random characters, required in "
                                                     "production (default: random per process)")
    max_file_mb: float = Field(25, description="web: one uploaded file")
    max_files: int = Field(500, description="web: files in one request")
    max_request_mb: float = Field(1024, description="web: one request's body (413 before it is read)")
    max_archive_mb: float = Field(2048, description="web: what a zip's members claim once inflated")
    max_inflated_mb: float = Field(1024, description="web: what one request may store in all, zips inflated")
    user_quota_mb: float = Field(4096, description="web: stored uploads of one user's retained jobs; 0: none")
    max_active_jobs: int = Field(10, description="web: running jobs per user")
    max_streams_per_user: int = Field(8, description="web: event streams one user holds open")
    stream_seconds: float = Field(300, description="web: an event stream's lifetime before the browser resumes it")
    rate_limit: str = Field("600 per minute", description="web: requests per user (or address)")
    submit_rate_limit: str = Field("60 per minute", description="web: job submissions per user")
    sync_timeout: float = Field(120, description="web: s the synchronous endpoints wait for workers")
    fetch_max_mb: float = Field(25, description="web: an image fetched from a URL")
    fetch_timeout: float = Field(15, description="web: s to fetch an image from a URL")
    session_hours: float = Field(12, description="web: a portal session ends this long after sign-in")
    login_failures: int = Field(5, description="web: failed sign-ins per account before each try waits")
    login_failures_per_ip: int = Field(50, description="web: failed sign-ins per address before each try waits")
    login_wait_s: float = Field(30, description="web: the first wait, doubled per further failure up to 15 min")
    trusted_proxy_hops: int = Field(0, description="web: proxies whose X-Forwarded-For is believed; 0: the socket")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what the caller passes: from_env is the one reader of the environment.
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Read once at a process's edge: os.environ, or the mapping given (a child's env, a test's)."""
        import os

        values = Variables(cls, os.environ if env is None else env)()
        try:
            return cls(**values)
        except ValidationError as err:
            raise ValueError(_explain(cls, err, values)) from None

    def replace(self, **changes: Any) -> "Settings":
        """A copy with some fields changed, checked like any other (tests, `cutout serve`'s children)."""
        return type(self)(**(self.model_dump() | changes))

    @classmethod
    def variable(cls, name: str) -> str:
        """The environment variable of field `name`."""
        alias = cls.model_fields[name].validation_alias
        return alias if isinstance(alias, str) else PREFIX + name.upper()

    @model_validator(mode="before")
    @classmethod
    def _derived_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        port = data.get("redis_port", REDIS_PORT)
        if "broker_url" not in data and str(port).isdigit():
            data["broker_url"] = local_redis_url(int(port))
        for follower in ("result_backend", "redis_url"):
            if "broker_url" in data:
                data.setdefault(follower, data["broker_url"])
        data.setdefault("storage", "s3" if data.get("s3_bucket") else "local")
        hard = data.get("time_limit", 360)
        if "soft_time_limit" not in data and str(hard).isdigit():
            # Without its own setting, the soft limit leaves the hard one a sixth for the cleanup.
            data["soft_time_limit"] = int(hard) * 5 // 6
        return data

    @field_validator("home", mode="after")
    @classmethod
    def _expand(cls, home: Path) -> Path:
        return home.expanduser()

    @field_validator("models", mode="before")
    @classmethod
    def _split(cls, models: Any) -> Any:
        if isinstance(models, str):
            models = models.split(",")
        return tuple(name.strip().lower() for name in models if name.strip())

    @field_validator("default_model", "compile", "env", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
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
        return self

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


class Variables(PydanticBaseSettingsSource):
    """The CUTOUT_* variables of one mapping, by field name; an empty variable counts as unset."""

    settings_cls: type[Settings]  # the base class types it as any BaseSettings; this source reads ours

    def __init__(self, settings_cls: type[Settings], env: Mapping[str, str]):
        super().__init__(settings_cls)
        self.env = env

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        value = self.env.get(self.settings_cls.variable(field_name))
        return value, field_name, False

    def __call__(self) -> dict[str, Any]:
        values = {}
        for name, field in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(field, name)
            if value:
                values[name] = value
        return values


def _explain(cls: type[Settings], err: ValidationError, values: dict) -> str:
    """One line per bad variable: its name, what it held, and what it takes."""
    lines = []
    for problem in err.errors():
        name = next((str(part) for part in problem["loc"] if str(part) in cls.model_fields), None)
        if name is None:  # a check across fields: its message names the variables already
            lines.append(problem["msg"].removeprefix("Value error, "))
            continue
        field = cls.model_fields[name]
        kind = "a number" if field.annotation in (int, float, int | None) else "valid"
        lines.append(f"{cls.variable(name)}={values.get(name)!r} is not {kind}; set it to e.g. "
                     f"{field.default!r} ({field.description})")
    return "\n".join(lines)
