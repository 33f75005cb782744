"""A cluster on one machine: a Redis with the project's config and `celery worker` processes.

The integration tests and `make bench` start their servers with this, on free
loopback ports, so that what they exercise is what runs in production.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from tasks.queues import WORKER_QUEUES
from tasks.redis_server import REDIS_CONF, redis_binary

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(workdir: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """A redis-server with tasks/redis.conf in `workdir`; pass the old `port` (and the same
    workdir) to restart one: AOF brings its queues and job records back."""
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / "redis.log", "ab") as log:  # appended, so a restart keeps the first run's log
        proc = subprocess.Popen(
            [redis_binary(), str(REDIS_CONF), "--port", str(port), "--dir", str(workdir),
             "--bind", "127.0.0.1"],
            stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    wait_until(lambda: _pings(client), 10, "redis-server did not start; see redis.log")
    return proc, url


def stop_redis(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, as an orchestrator stops it: Redis fsyncs the AOF and exits."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pings(client: redis.Redis) -> bool:
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


class Worker:
    """One `celery worker` process for one queue, logging to a file."""

    def __init__(self, queue: str, env: dict, log: Path, concurrency: int = 2, startup_timeout: float = 60):
        self.log = log
        # As deployed: GPU workers run a thread pool feeding one batcher, CPU workers prefork
        # (so the hard time limit can kill a stuck child).
        pool = "threads" if queue == "gpu" else "prefork"
        queues = WORKER_QUEUES.get(queue, queue)
        cmd = [sys.executable, "-m", "celery", "-A", "tasks.app", "worker", "-Q", queues, "--pool", pool,
               "-c", str(concurrency), "-n", f"{queue}-{time.monotonic_ns()}@%h", "-l", "INFO",
               "--without-gossip", "--without-mingle"]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_until(lambda: "ready." in log.read_text(errors="replace") or self.proc.poll() is not None, startup_timeout,
                   f"celery worker for {queue} did not start; see {log}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"celery worker for {queue} exited: {log.read_text(errors='replace')[-2000:]}")

    def kill(self) -> None:
        """kill -9: no warm shutdown, no acks, exactly what an OOM kill or a lost node does."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def warm_shutdown(self, timeout: float = 30) -> None:
        """SIGTERM to the main process only, as Kubernetes or Docker sends it to PID 1: running tasks
        finish, the messages it had reserved go back to the queue."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def pool_children(self) -> list[int]:
        """The pids of a prefork worker's pool processes (Linux)."""
        pid = self.proc.pid
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_until(predicate, timeout: float, message: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(message)
