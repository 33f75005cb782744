"""The compose stack (docker-compose.yml + docker-compose.airgap.yml, profile cpu-only) driven from
the host, as a user would: `docker compose` (v2) where it is installed, else `docker-compose` 1.29.

Used by tests/deploy/test_stack.py (a job from outside, a worker killed) and bench/deploy_scale.py
(one vs two containers of each worker). Needs a Docker daemon and the images of `make images`.
"""

import io
import json
import os
import subprocess
import time
import zipfile
from pathlib import Path

import requests
from PIL import Image

from tasks.local_cluster import free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
FILES = ("docker-compose.yml", "docker-compose.airgap.yml")
IMAGES = ("cutout-cpu:dev", "cutout-standins:dev")
WORKERS = ("worker-cpu", "worker-gpu-on-cpu")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def compose_command() -> list[str]:
    """`docker compose` (v2) if the plugin answers, else Debian's docker-compose 1.29."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


def photos(count: int, size: tuple[int, int] = (320, 240)) -> list[tuple[str, bytes]]:
    """`count` JPEGs of the bundled photos with distinct names."""
    small = {}
    for name in PHOTOS:
        out = io.BytesIO()
        Image.open(ROOT / "tests" / "data" / f"{name}.jpg").convert("RGB").resize(size).save(out, "JPEG", quality=85)
        small[name] = out.getvalue()
    return [(f"{PHOTOS[n % 4]}-{n:03d}.jpg", small[PHOTOS[n % 4]]) for n in range(count)]


class Stack:
    """One compose project on free host ports; `down()` removes its containers and volumes."""

    def __init__(self, project: str, extra_files: tuple[str, ...] = (), env: dict | None = None):
        missing = [i for i in IMAGES if subprocess.run(["docker", "image", "inspect", i],
                                                       capture_output=True).returncode != 0]
        if missing:
            raise RuntimeError(f"images {', '.join(missing)} are not built; run `make images` first")
        self.project = project
        self.port = free_port()
        files = [arg for f in (*FILES, *extra_files) for arg in ("-f", str(ROOT / f))]
        self.base = [*compose_command(), "-p", project, *files, "--profile", "cpu-only"]
        self.env = {**os.environ, "CUTOUT_WEB_PORT": str(self.port), "CUTOUT_FLOWER_PORT": str(free_port()),
                    "CUTOUT_MINIO_CONSOLE_PORT": str(free_port()), **(env or {})}
        self.url = f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        done = subprocess.run([*self.base, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.stderr[-2000:]}")
        return done.stdout

    def up(self, scale: int = 1, timeout: float = 240) -> "Stack":
        scaled = [arg for name in WORKERS for arg in ("--scale", f"{name}={scale}")]
        self.compose("up", "-d", "--no-build", *scaled, timeout=timeout)
        try:
            wait_until(self.healthy, timeout, "the stack did not become healthy", interval=2)
        except TimeoutError:
            states = self.states()
            sick = {name.split("_")[-2] for name, s in states.items() if s not in ("healthy", "exited")}
            tails = "\n".join(f"--- {name}\n{self.logs(name)[-1500:]}" for name in sorted(sick))
            raise TimeoutError(f"the stack did not become healthy in {timeout} s: {states}\n{tails}") from None
        return self

    def containers(self, service: str | None = None) -> list[str]:
        labels = [f"label=com.docker.compose.project={self.project}"]
        if service:
            labels.append(f"label=com.docker.compose.service={service}")
        out = subprocess.run(["docker", "ps", "-aq", *[a for label in labels for a in ("--filter", label)]],
                             capture_output=True, text=True, check=True).stdout
        return out.split()

    def inspect(self, ids: list[str]) -> list[dict]:
        if not ids:
            return []
        out = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, check=True).stdout
        return json.loads(out)

    def states(self) -> dict[str, str]:
        """container name -> health (or state, for those without a health check)."""
        return {c["Name"].lstrip("/"): (c["State"].get("Health") or {}).get("Status") or c["State"]["Status"]
                for c in self.inspect(self.containers())}

    def healthy(self) -> bool:
        states = self.states()
        running = {name: s for name, s in states.items() if "createbuckets" not in name}
        return bool(running) and all(s == "healthy" for s in running.values())

    def exec(self, service: str, *argv: str) -> str:
        return self.compose("exec", "-T", service, *argv, timeout=60)

    def logs(self, service: str) -> str:
        return self.compose("logs", "--no-color", "--tail", "200", service, check=False)

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "--timeout", "20", timeout=300)

    def user(self, name: str) -> dict:
        """A user made from the host through the web container: `cutout users add NAME --json`."""
        made = json.loads(self.exec("web", "cutout", "users", "add", name, "--json"))
        return {"X-Api-Key": made["api_key"]}

    def submit(self, headers: dict, files: list[tuple[str, bytes]], **form) -> dict:
        r = requests.post(f"{self.url}/api/v1/jobs", headers=headers, data=form, timeout=120,
                          files=[("images", (name, data, "image/jpeg")) for name, data in files])
        assert r.status_code == 202, r.text
        return r.json()

    def follow(self, headers: dict, job: dict, timeout: float = 600, on_event=None) -> list[dict]:
        """The job's SSE stream read until its end; every event's data, in order."""
        events, name = [], None
        with requests.get(self.url + job["events_url"], headers=headers, stream=True, timeout=timeout) as r:
            assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream"), r.text
            for line in r.iter_lines(decode_unicode=True):
                if line.startswith("event: "):
                    name = line[len("event: "):]
                elif line.startswith("data: "):
                    events.append({"event": name, **json.loads(line[len("data: "):])})
                    if on_event:
                        on_event(events[-1])
        return events

    def status(self, headers: dict, job: dict) -> dict:
        r = requests.get(self.url + job["status_url"], headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_done(self, headers: dict, job: dict, timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(headers, job)
            if status["status"] in ("done", "failed"):
                return status
            time.sleep(0.5)
        raise TimeoutError(f"job {job['job_id']} not done in {timeout} s")

    def download(self, headers: dict, status: dict) -> zipfile.ZipFile:
        """The zip through the link the API gave (a redirect to the store is followed, as a browser does)."""
        r = requests.get(self.url + status["download_url"], headers=headers, timeout=120)
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/zip", r.text[:500]
        return zipfile.ZipFile(io.BytesIO(r.content))
