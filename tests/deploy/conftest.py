"""Readers for the deployment files: kustomizations, their YAML documents, worker commands."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUSTOMIZATIONS = ("base", "components/keda", "components/hpa", "overlays/dev", "overlays/prod")
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.30"  # the oldest release the manifests promise to apply to
WORKERS = ("worker-cpu", "worker-gpu")


def documents(path: Path) -> list[dict]:
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def kustomization(directory: str) -> dict:
    return documents(K8S / directory / "kustomization.yaml")[0]


def resource_files(directory: str) -> list[Path]:
    """The files (not directories) a kustomization lists as resources."""
    return [K8S / directory / r for r in kustomization(directory).get("resources", [])
            if (K8S / directory / r).is_file()]


def base_objects() -> list[dict]:
    return [doc for path in resource_files("base") for doc in documents(path)]


def component_objects(name: str) -> list[dict]:
    return [doc for path in resource_files(f"components/{name}") for doc in documents(path)]


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


def role_argv(args: list[str], env: dict[str, str] | None = None) -> list[str]:
    """What docker/entrypoint.sh runs for `args` (a role, `probe ...`, or a command) in `env`."""
    full = {"PATH": os.environ["PATH"], "CUTOUT_ENTRYPOINT_PRINT": "1", "WORKER_NAME": "NODE", **(env or {})}
    done = subprocess.run(["sh", str(ENTRYPOINT), *args], env=full, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def literal_env(container: dict) -> dict[str, str]:
    """A container's env with values; a field reference reads `<fieldPath>`."""
    return {e["name"]: e["value"] if "value" in e else f"<{e['valueFrom']['fieldRef']['fieldPath']}>"
            for e in container.get("env", []) if "value" in e or "fieldRef" in e.get("valueFrom", {})}


def container_argv(deployment: dict) -> list[str]:
    """The command line the Deployment's container runs: its args through the image's entrypoint."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return role_argv(container.get("command", []) + container.get("args", []), literal_env(container))


def compose_default(value: str) -> str:
    """A compose value as it runs with nothing set: `${VAR:-default}` is its default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))


def queue_of(argv: list[str]) -> str:
    """The queue a `celery worker -Q NAME` command consumes (one queue per worker)."""
    return argv[argv.index("-Q") + 1].split(",")[0]  # the work queue; cpu workers also take "control"


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def configmap_data(objects: list[dict]) -> dict[str, str]:
    return by_kind(objects, "ConfigMap")["cutout"]["data"]


def render(overlay: str) -> list[dict]:
    """`kustomize build` of an overlay, with kubectl's built-in kustomize or kustomize itself."""
    if shutil.which("kustomize"):
        cmd = ["kustomize", "build", str(K8S / "overlays" / overlay)]
    elif shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", str(K8S / "overlays" / overlay)]
    else:
        pytest.skip("neither kustomize nor kubectl is installed; the unrendered files are still checked")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="session", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(request.param)
