"""`cutout serve` (what `make run` starts): the whole service on one machine, supervised.

Redis (the project's config: AOF, noeviction; data under $CUTOUT_HOME/redis), a
gpu-queue worker (on the CPU without a GPU), a cpu-queue worker with the beat
schedule, Flower and the portal under gunicorn. A child that dies is restarted;
Ctrl-C or SIGTERM stops them all, workers first with a warm shutdown, Redis last.
Each child runs in its own process group and is told to die with this process,
so nothing is left behind.
"""

import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from matting_core.devices import usable_cores
from matting_core.registry import model_names
from tasks.queues import WORKER_QUEUES
from tasks.recovery import requeue_unacked
from tasks.redis_server import REDIS_CONF, redis_binary
from tasks.settings import Settings, local_redis_url
from web.users import UserStore

RESTART_BACKOFF_S = (1, 2, 5, 10, 30)
STOP_GRACE_S = 30  # a warm shutdown finishes the images in hand; the hard limit is the worst case
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child before exec: if the supervisor is killed outright (kill -9),
    # the kernel sends SIGTERM to the child instead of leaving an orphan.
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass  # not Linux: Ctrl-C and SIGTERM still stop everything


@dataclass
class Child:
    name: str
    cmd: list[str]
    env: dict
    log: Path
    queue: str | None = None  # the queue a worker consumes alone, to hand back its tasks when it dies
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started: float = 0.0
    restart_at: float | None = None  # when a dead child is due to start again

    def start(self) -> None:
        metrics_dir = self.env.get("PROMETHEUS_MULTIPROC_DIR")
        if metrics_dir:  # samples of an earlier run's processes would be merged in as if alive
            shutil.rmtree(metrics_dir, ignore_errors=True)
            os.makedirs(metrics_dir)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self.started = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float) -> None:
        if not self.alive():
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _check_free(port: int, name: str) -> None:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise SystemExit(f"cutout serve: port {port} is in use; set CUTOUT_{name} to a free one") from None


def _secret(home: Path, name: str) -> str:
    """A secret kept under $CUTOUT_HOME, so sessions and the Flower login survive a restart."""
    path = home / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def _demo_user(redis_url: str, home: Path) -> dict:
    path = home / "demo-user.json"
    users = UserStore.from_url(redis_url)
    if path.exists() and users.exists("demo"):
        return json.loads(path.read_text())
    if users.exists("demo"):
        credentials = {"name": "demo", "password": None, "api_key": users.revoke_key("demo")}
    else:
        password, key = users.add("demo")
        credentials = {"name": "demo", "password": password, "api_key": key}
    path.write_text(json.dumps(credentials))
    path.chmod(0o600)
    return credentials


def plan(env: dict, settings: Settings | None = None) -> tuple[dict, list[Child]]:
    """The ports, URLs and children for this environment and its settings (no process started).

    The children read their own settings from the environment given to them: this one plus the
    Redis started here and the secrets kept under $CUTOUT_HOME."""
    settings = Settings.from_env(env) if settings is None else settings
    home = settings.home
    for sub in ("redis", "logs"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    ports = {"PORT": settings.port, "FLOWER_PORT": settings.flower_port, "REDIS_PORT": settings.redis_port,
             "METRICS_PORT": settings.metrics_port or 9101}
    # The URL `cutout users` and any process with no CUTOUT_BROKER_URL derive from CUTOUT_REDIS_PORT too.
    redis_url = local_redis_url(settings.redis_port)
    flower_user = settings.flower_user
    flower_password = settings.flower_password or _secret(home, "flower-password")
    child_env = {**env, "CUTOUT_BROKER_URL": redis_url, "CUTOUT_RESULT_BACKEND": redis_url,
                 "CUTOUT_REDIS_URL": redis_url, "CUTOUT_HOME": str(home),
                 "CUTOUT_SECRET_KEY": settings.secret_key or _secret(home, "secret-key")}
    # `python -m`: the same interpreter and packages as this process, wherever its scripts are installed.
    celery = [sys.executable, "-m", "celery", "-A", "tasks.app"]
    log = home / "logs"
    cores = usable_cores()
    children = [
        Child("redis", [redis_binary(), str(REDIS_CONF), "--port", str(ports["REDIS_PORT"]),
                        "--dir", str(home / "redis"), "--bind", "127.0.0.1"], child_env, log / "redis.log"),
        # The gpu worker's threads only decode and wait on the batcher: enough to fill two batches.
        Child("worker-gpu", celery + ["worker", "-Q", "gpu", "--pool", "threads",
                                      "-c", str(_gpu_threads(settings)),
                                      "-n", f"gpu-{ports['PORT']}@%h", "-l", "INFO"],
              child_env, log / "worker-gpu.log", queue="gpu"),
        Child("worker-cpu", celery + ["worker", "-Q", WORKER_QUEUES["cpu"], "--pool", "prefork", "-c", str(cores),
                                      "-n", f"cpu-{ports['PORT']}@%h", "-l", "INFO", "-B",
                                      "-s", str(home / "redis" / "beat-schedule")],
              child_env, log / "worker-cpu.log", queue="cpu"),
        Child("flower", celery + ["flower", f"--port={ports['FLOWER_PORT']}", "--address=127.0.0.1"],
              child_env, log / "flower.log"),
        Child("web", [sys.executable, "-m", "gunicorn", "-c", "python:web.gunicorn_conf", "--workers", "2",
                      "--bind", f"127.0.0.1:{ports['PORT']}", "web:create_app()"], child_env, log / "web.log"),
    ]
    for n, child in enumerate(c for c in children if c.name != "redis"):
        child.env = {**child_env, "PROMETHEUS_MULTIPROC_DIR": str(home / "metrics" / child.name)}
        if child.queue:  # each worker serves its /metrics on its own port: METRICS_PORT, METRICS_PORT + 1
            child.env["CUTOUT_METRICS_PORT"] = str(ports["METRICS_PORT"] + n)
        if child.queue == "gpu":  # the model loads (and compiles) before the worker takes images
            child.env["CUTOUT_WARMUP"] = env.get("CUTOUT_WARMUP") or "1"
        if child.name == "flower":  # from its environment, not argv: a command line is visible to anyone (ps)
            child.env["FLOWER_BASIC_AUTH"] = _flower_auth(flower_user, flower_password)
    # The model settings (CUTOUT_DEFAULT_MODEL, CUTOUT_MODELS) reach every child with the environment,
    # checked above by Settings: the web app picks the default, the gpu worker preloads.
    info = {"ports": ports, "redis_url": redis_url, "home": str(home), "flower_user": flower_user,
            "flower_password": flower_password, "models": _models_line(settings)}
    return info, children


def _flower_auth(user: str, password: str) -> str:
    # Flower splits FLOWER_BASIC_AUTH at commas (several logins) and each login at its first colon.
    if "," in user + password or ":" in user:
        raise SystemExit("cutout serve: CUTOUT_FLOWER_USER may not contain ':' or ',' and CUTOUT_FLOWER_PASSWORD "
                         "may not contain ','; choose others")
    return f"{user}:{password}"


def _models_line(settings: Settings) -> str:
    others = [name for name in model_names() if name != settings.default_model]
    return f"{settings.default_model} (default), {', '.join(others)} (on request)"


def _gpu_threads(settings: Settings) -> int:
    cores = usable_cores()
    if settings.device == "cpu" or not _torch_sees_a_gpu():
        return 2 * cores + 2
    return max(2 * cores + 2, 2 * (settings.batch_size or 64))


def _torch_sees_a_gpu() -> bool:
    """Asked of a short-lived interpreter: this supervisor lives as long as the service and has no
    use for torch's ~150 MB itself; the model loads in the gpu worker."""
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True, timeout=120, check=False)
    return probe.stdout.strip() == "True"


def _wait_for_redis(url: str, redis_child: Child, timeout: float = 20) -> None:
    import redis

    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not redis_child.alive():
            raise SystemExit(f"cutout serve: redis-server exited; see {redis_child.log}")
        try:
            if client.ping():
                return
        except redis.ConnectionError:
            time.sleep(0.1)
    raise SystemExit(f"cutout serve: redis-server did not answer within {timeout:.0f} s; see {redis_child.log}")


def serve(env: dict | None = None, settings: Settings | None = None) -> int:
    """Run the service for `env` (os.environ) and its `settings` (read from it when not given)."""
    env = dict(os.environ if env is None else env)
    info, children = plan(env, settings)
    for name, port in info["ports"].items():
        _check_free(port, name)
    _check_free(info["ports"]["METRICS_PORT"] + 1, "METRICS_PORT")
    stopping = False

    def _stop(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    redis_child, others = children[0], children[1:]
    try:
        redis_child.start()
        _wait_for_redis(info["redis_url"], redis_child)
        demo = _demo_user(info["redis_url"], Path(info["home"]))
        for child in others:
            child.start()
        _announce(info, demo, children)
        while not stopping:
            for child in children:
                if not child.alive():
                    _restart_when_due(child)
            time.sleep(0.2)
    finally:
        print("cutout serve: stopping (workers finish the images in hand)...", flush=True)
        for child in reversed(others):
            child.stop(STOP_GRACE_S)
        redis_child.stop(STOP_GRACE_S)  # SIGTERM: Redis syncs its AOF and exits
        print("cutout serve: stopped", flush=True)
    return 0


def _restart_when_due(child: Child) -> None:
    """Restart a dead child after a backoff that grows while it keeps dying young."""
    now = time.monotonic()
    if child.restart_at is None:
        if now - child.started > 60:
            child.restarts = 0  # it ran a while: a fresh failure, not a crash loop
        delay = RESTART_BACKOFF_S[min(child.restarts, len(RESTART_BACKOFF_S) - 1)]
        child.restart_at = now + delay
        print(f"cutout serve: {child.name} exited ({child.proc.returncode}); restarting in {delay} s "
              f"(log: {child.log})", flush=True)
    elif now >= child.restart_at:
        child.restart_at = None
        if child.queue:
            _hand_back(child)
        child.restarts += 1
        child.start()
        print(f"cutout serve: {child.name} restarted as pid {child.proc.pid}", flush=True)


def _hand_back(child: Child) -> None:
    try:
        count = sum(requeue_unacked(child.env["CUTOUT_BROKER_URL"], queue)
                    for queue in WORKER_QUEUES[child.queue].split(","))
    except OSError as err:  # Redis down too: it restarts, and the visibility timeout still applies
        print(f"cutout serve: could not requeue {child.name}'s tasks now ({err})", flush=True)
        return
    if count:
        print(f"cutout serve: put {count} unfinished {child.queue} tasks of {child.name} back on the queue",
              flush=True)


def _announce(info: dict, demo: dict, children: list[Child]) -> None:
    ports = info["ports"]
    lines = [
        "",
        f"  cutout portal   http://127.0.0.1:{ports['PORT']}/",
        f"  demo user       {demo['name']} / {demo['password'] or '(password shown when it was created)'}",
        f"  demo API key    {demo['api_key']}",
        f"  Flower          http://127.0.0.1:{ports['FLOWER_PORT']}/  ({info['flower_user']} / "
        f"{info['flower_password']})",
        f"  Redis           {info['redis_url']}",
        f"  models          {info['models']}",
        f"  metrics         http://127.0.0.1:{ports['PORT']}/metrics, workers on :{ports['METRICS_PORT']} (gpu) "
        f"and :{ports['METRICS_PORT'] + 1} (cpu)",
        f"  data and logs   {info['home']}",
        "  processes       " + ", ".join(f"{c.name} {c.proc.pid}" for c in children),
        "",
        "  Ctrl-C stops everything.",
        "",
    ]
    print("\n".join(lines), flush=True)
