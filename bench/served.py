"""A `cutout serve` in a subprocess, on free ports and its own CUTOUT_HOME, and an HTTP client for it.

Used by `make bench` (the cluster measured through its API) and by the tests of `make run`.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

from matting_core.weights import cutout_home
from tasks.local_cluster import free_port, wait_until

CUTOUT = [sys.executable, "-m", "cutout_cli"]  # works wherever the console script is (or is not) installed


def _free_pair() -> int:
    """A port whose successor is free too (the two workers' metrics ports)."""
    for _ in range(100):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports found")


class Served:
    """A running `cutout serve` with its output collected line by line."""

    def __init__(self, home: Path, env: dict | None = None):
        home.mkdir(parents=True, exist_ok=True)
        if not (home / "weights").exists():
            (home / "weights").symlink_to(cutout_home() / "weights")
        self.ports = {"PORT": free_port(), "FLOWER_PORT": free_port(), "REDIS_PORT": free_port(),
                      "METRICS_PORT": _free_pair()}
        full_env = {**os.environ, "CUTOUT_HOME": str(home), "CUTOUT_DEVICE": "cpu", **(env or {})}
        full_env |= {f"CUTOUT_{name}": str(port) for name, port in self.ports.items()}
        self.home, self.lines = home, []
        self.proc = subprocess.Popen([*CUTOUT, "serve"], env=full_env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float = 120) -> "Served":
        wait_until(lambda: "Ctrl-C stops everything" in self.output() or self.proc.poll() is not None, timeout,
                   "cutout serve did not come up")
        if self.proc.poll() is not None:
            raise RuntimeError(f"cutout serve exited:\n{self.output()}")
        wait_until(lambda: http(self.url("/healthz"))[0] == 200, 60, "the portal did not answer")
        return self

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
        return self.proc.returncode

    def output(self) -> str:
        return "\n".join(self.lines)

    def pid_of(self, name: str) -> int:
        return int(re.findall(rf"{name} (\d+)", self.output())[-1])

    def url(self, path: str, port: str = "PORT") -> str:
        return f"http://127.0.0.1:{self.ports[port]}{path}"

    def demo(self) -> dict:
        return json.loads((self.home / "demo-user.json").read_text())


def http(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 120) -> tuple[int, bytes]:
    """(status, body); status 0 when nothing listens yet."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return 0, b""


def multipart(files: list[tuple[str, bytes]], field: str = "images") -> tuple[bytes, str]:
    """A multipart/form-data body of `files` under one field, and its Content-Type."""
    boundary = "cutout-bench-boundary-7f3a"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
             f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n" for name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (children, their children, ...)."""
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = {int(c) for c in (task / "children").read_text().split()}
            except FileNotFoundError:
                continue
            todo.extend(children - found)
            found |= children
    return found


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory now, or with field="VmHWM" its peak so far (the kernel's count)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0
