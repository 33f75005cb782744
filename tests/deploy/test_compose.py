"""docker-compose.yml: valid Compose, and the cluster it describes."""

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from tasks.queues import QUEUES
from tests.deploy.conftest import ROOT, compose_default, role_argv

SCHEMA = Path(__file__).parent / "compose-spec" / "compose-spec.json"  # Apache-2.0, see NOTICE.md there
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
AIRGAP = yaml.safe_load((ROOT / "docker-compose.airgap.yml").read_text())
SERVICES = COMPOSE["services"]
WORKERS = ("worker-cpu", "worker-gpu", "worker-gpu-on-cpu")
LONG_RUNNING = ("redis", "minio", "web", "beat", "flower", *WORKERS)
CUTOUT = ("web", "beat", "flower", *WORKERS)  # the services on cutout's own images


def argv(name: str) -> list[str]:
    """What the service runs: its command through the image's entrypoint, with compose's defaults."""
    env = {k: compose_default(v) for k, v in SERVICES[name]["environment"].items()}
    return role_argv(SERVICES[name]["command"], env)


def _seconds(duration: str) -> float:
    """A Compose duration (`420s`, `7m`, `1m30s`) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


@pytest.mark.parametrize("document", [COMPOSE, AIRGAP], ids=["docker-compose.yml", "docker-compose.airgap.yml"])
def test_compose_file_matches_the_compose_spec_schema(document):
    schema = json.loads(SCHEMA.read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(document)


def test_airgap_override_replaces_only_the_pulled_images():
    assert set(AIRGAP["services"]) == {"redis", "minio", "createbuckets"}
    assert {s["image"] for s in AIRGAP["services"].values()} == {"cutout-standins:dev"}


@pytest.mark.parametrize("name", CUTOUT)
def test_cutout_service_runs_as_the_pods_do(name):
    service = SERVICES[name]
    assert service["user"] == "10001:10001" and service["read_only"] is True
    assert service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"]
    assert service["tmpfs"] == ["/tmp"]
    assert service["healthcheck"]["test"][:3] == ["CMD", "cutout-entrypoint", "probe"]


def test_zip_download_streams_through_the_web_app_unless_a_public_store_address_is_set():
    env = SERVICES["web"]["environment"]
    assert env["CUTOUT_S3_ENDPOINT_URL"] == "http://minio:9000"  # only the compose network resolves it
    assert compose_default(env["CUTOUT_S3_PUBLIC_ENDPOINT_URL"]) == ""


def test_compose_runs_every_part_of_the_cluster():
    assert set(LONG_RUNNING) | {"createbuckets"} <= SERVICES.keys()


@pytest.mark.parametrize("name", WORKERS)
def test_worker_stop_grace_period_outlasts_the_task_hard_time_limit(name):
    limit = int(compose_default(SERVICES[name]["environment"]["CUTOUT_TIME_LIMIT"]))
    assert _seconds(SERVICES[name]["stop_grace_period"]) > limit


def test_workers_consume_every_queue_of_the_app():
    queues = {argv(name)[argv(name).index("-Q") + 1].split(",")[0] for name in WORKERS}
    assert queues == set(QUEUES)


def test_gpu_worker_reserves_a_gpu_and_refuses_to_run_without_one():
    gpu = SERVICES["worker-gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["environment"]["CUTOUT_DEVICE"] == "cuda"
    assert SERVICES["worker-gpu-on-cpu"]["environment"]["CUTOUT_DEVICE"] == "cpu"
    # Exactly one of the two runs, chosen by profile.
    assert set(gpu["profiles"]).isdisjoint(SERVICES["worker-gpu-on-cpu"]["profiles"])


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_service_has_a_healthcheck(name):
    assert SERVICES[name]["healthcheck"]["test"]


def test_services_wait_for_redis_and_the_bucket():
    for name in ("web", "worker-cpu", "worker-gpu", "flower", "beat"):
        depends = SERVICES[name]["depends_on"]
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["createbuckets"]["condition"] == "service_completed_successfully"


def test_redis_runs_with_the_project_config():
    mounts = [v.split(":") for v in SERVICES["redis"]["volumes"]]
    (conf,) = [target for source, target, *_ in mounts if source == "./tasks/redis.conf"]
    assert conf in SERVICES["redis"]["command"] and (ROOT / "tasks" / "redis.conf").is_file()


@pytest.mark.parametrize("name", ("web", "worker-cpu", "worker-gpu", "flower"))
def test_service_gets_broker_storage_and_secret_settings(name):
    env = SERVICES[name]["environment"]
    for variable in ("CUTOUT_BROKER_URL", "CUTOUT_S3_BUCKET", "CUTOUT_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                     "AWS_SECRET_ACCESS_KEY", "CUTOUT_SECRET_KEY"):
        assert env[variable], variable
