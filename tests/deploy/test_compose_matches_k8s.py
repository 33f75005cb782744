"""The Deployments run what the compose test exercised: the same entrypoint roles, command lines,
probes and settings (docker/entrypoint.sh turns a role into the command line for both)."""

import pytest

from tests.deploy.conftest import (
    K8S,
    base_objects,
    by_kind,
    compose_default,
    configmap_data,
    container_argv,
    documents,
    literal_env,
    role_argv,
)
from tests.deploy.test_compose import SERVICES

# compose service -> Deployment (base, or the dev overlay's gpu worker on the CPU image)
PAIRS = {"web": "web", "worker-cpu": "worker-cpu", "worker-gpu": "worker-gpu", "beat": "beat", "flower": "flower"}
DEPLOYMENTS = by_kind(base_objects(), "Deployment")
# Settings whose values must agree; the rest (addresses, secrets, limits) differ by design.
SAME_VALUE = ("CUTOUT_DEVICE", "CUTOUT_MODELS", "CUTOUT_WARMUP", "CUTOUT_METRICS_PORT", "CUTOUT_METRICS_ADDR")
# The one deliberate difference: the web pods sit behind the ingress, whose X-Forwarded-* they
# trust (gunicorn's --forwarded-allow-ips); compose publishes the web port directly.
BEHIND_INGRESS = ("FORWARDED_ALLOW_IPS",)
SECRET_KEYS = documents(K8S / "base" / "secret.example.yaml")[0]["stringData"].keys()


def _container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _compose_env(service: str) -> dict[str, str]:
    return {k: compose_default(v) for k, v in SERVICES[service]["environment"].items()}


def _compose_argv(service: str, node: str, extra: dict[str, str]) -> list[str]:
    return role_argv(SERVICES[service]["command"], _compose_env(service) | {"WORKER_NAME": node} | extra)


def _assert_same_process(service: str, deployment: dict) -> None:
    container = _container(deployment)
    env = literal_env(container)
    assert container["args"] == SERVICES[service]["command"], "one role, named the same in both"
    ingress = {name: env[name] for name in BEHIND_INGRESS if name in env}
    assert container_argv(deployment) == _compose_argv(service, "<metadata.name>", ingress)
    for name in SAME_VALUE:
        assert env.get(name) == _compose_env(service).get(name), name


@pytest.mark.parametrize(("service", "deployment"), PAIRS.items())
def test_deployment_runs_the_compose_service_command_line(service, deployment):
    _assert_same_process(service, DEPLOYMENTS[deployment])


def test_dev_overlay_gpu_worker_runs_what_compose_runs_without_a_gpu(rendered):
    overlay, objects = rendered
    if overlay != "dev":
        pytest.skip("only the dev overlay runs the gpu queue on the CPU image")
    _assert_same_process("worker-gpu-on-cpu", by_kind(objects, "Deployment")["worker-gpu"])


@pytest.mark.parametrize(("service", "deployment"), PAIRS.items())
def test_exec_probes_are_the_compose_health_check(service, deployment):
    container = _container(DEPLOYMENTS[deployment])
    check = SERVICES[service]["healthcheck"]["test"]
    assert check[0] == "CMD"
    if "exec" in container["readinessProbe"]:
        assert container["readinessProbe"]["exec"]["command"] == check[1:]
    else:  # an HTTP probe: the same port and path the compose check fetches
        get = container["readinessProbe"]["httpGet"]
        port = {p["name"]: p["containerPort"] for p in container["ports"]}[get["port"]]
        assert f"http://127.0.0.1:{port}{get['path']}'" in " ".join(role_argv(check[2:]))


def test_every_compose_setting_reaches_the_pods():
    """What compose sets, the pods get: from their own env, the ConfigMap or the Secret."""
    shared = configmap_data(base_objects()).keys() | SECRET_KEYS
    for service, deployment in PAIRS.items():
        own = literal_env(_container(DEPLOYMENTS[deployment])).keys()
        missing = set(SERVICES[service]["environment"]) - own - shared
        assert not missing, f"{service}: {sorted(missing)} set in compose, not in the {deployment} pods"
