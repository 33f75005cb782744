"""The Kubernetes manifests: valid for the API, and saying what the service needs."""

import re

import kubernetes_validate
import pytest

from tasks.queues import QUEUES, queue_lists
from tests.deploy.conftest import (
    K8S,
    KUBERNETES_VERSION,
    KUSTOMIZATIONS,
    WORKERS,
    base_objects,
    by_kind,
    component_objects,
    configmap_data,
    container_argv,
    documents,
    env_of,
    kustomization,
    literal_env,
    queue_of,
    render,
    resource_files,
    role_argv,
)

BUILT_IN = ("v1", "apps/v1", "policy/v1", "networking.k8s.io/v1", "autoscaling/v2")
PATCHES = [(d, p["path"]) for d in KUSTOMIZATIONS for p in kustomization(d).get("patches", []) if "path" in p]
RESOURCE_DOCS = [pytest.param(doc, id=f"{path.relative_to(K8S)}:{doc['kind']}/{doc['metadata']['name']}")
                 for d in KUSTOMIZATIONS for path in resource_files(d) for doc in documents(path)]
DEPLOYMENTS = by_kind(base_objects(), "Deployment")


def _container(name: str) -> dict:
    return DEPLOYMENTS[name]["spec"]["template"]["spec"]["containers"][0]


def _time_limit(objects) -> int:
    return int(configmap_data(objects)["CUTOUT_TIME_LIMIT"])


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_kustomization_references_only_files_that_exist(directory):
    k = kustomization(directory)
    for ref in k.get("resources", []) + k.get("components", []):
        target = K8S / directory / ref
        assert target.is_file() or (target / "kustomization.yaml").is_file(), f"{directory}: {ref} is missing"
    for patch in k.get("patches", []):
        assert "path" not in patch or (K8S / directory / patch["path"]).is_file(), f"{directory}: {patch}"


@pytest.mark.parametrize("doc", RESOURCE_DOCS)
def test_builtin_resource_matches_the_kubernetes_schema(doc):
    if doc["apiVersion"] not in BUILT_IN:
        pytest.skip(f"{doc['apiVersion']} is a CRD; checked structurally below")
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(("directory", "patch"), PATCHES)
def test_strategic_merge_patch_targets_a_base_resource(directory, patch):
    base = {(o["kind"], o["metadata"]["name"]) for o in base_objects()}
    for doc in documents(K8S / directory / patch):
        if "kind" in doc:  # JSON 6902 patches (lists of ops) name their target in the kustomization
            assert (doc["kind"], doc["metadata"]["name"]) in base, f"{patch} patches nothing in base"


def test_workers_consume_every_queue_of_the_app():
    assert sorted(queue_of(container_argv(DEPLOYMENTS[name])) for name in WORKERS) == sorted(QUEUES)


@pytest.mark.parametrize("name", WORKERS)
def test_worker_grace_period_outlasts_the_task_hard_time_limit(name):
    grace = DEPLOYMENTS[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > _time_limit(base_objects())


def _probe_argv(container: dict, probe: str) -> list[str]:
    """What an exec probe runs: `cutout-entrypoint probe ...` through the entrypoint, in the container's env."""
    command = container[probe]["exec"]["command"]
    assert command[0] == "cutout-entrypoint", command  # the probes compose's health checks run
    return role_argv(command[1:], literal_env(container))


@pytest.mark.parametrize("name", WORKERS)
def test_worker_is_named_after_its_pod_and_pinged_by_that_name(name):
    container = _container(name)
    argv = container_argv(DEPLOYMENTS[name])
    assert argv[argv.index("-n") + 1] == "worker@<metadata.name>"
    assert env_of(container)["WORKER_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    for probe in ("startupProbe", "readinessProbe"):
        ping = _probe_argv(container, probe)
        assert ping[:5] == ["celery", "-A", "tasks.app", "inspect", "ping"]
        assert ping[ping.index("-d") + 1] == "worker@<metadata.name>"


@pytest.mark.parametrize("name", WORKERS)
def test_worker_liveness_does_not_depend_on_redis(name):
    command = " ".join(_probe_argv(_container(name), "livenessProbe"))
    assert "/proc/1/status" in command and "celery" not in command and "redis" not in command


def test_gpu_worker_gets_a_gpu_node_and_refuses_to_run_without_one():
    spec = DEPLOYMENTS["worker-gpu"]["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    assert env_of(container)["CUTOUT_DEVICE"]["value"] == "cuda"


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_every_container_has_resources_probes_and_runs_unprivileged(name):
    spec = DEPLOYMENTS[name]["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert spec["enableServiceLinks"] is False  # Flower dies on injected FLOWER_* variables
    tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    for container in spec["containers"]:
        assert {"requests", "limits"} <= container["resources"].keys()
        assert "memory" in container["resources"]["limits"]
        assert {"readinessProbe", "livenessProbe"} <= container.keys()
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert any(m["mountPath"] == "/tmp" and m["name"] in tmp_volumes for m in container["volumeMounts"])
        assert "command" not in container, "command would bypass the image's entrypoint"


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_every_variable_in_args_is_defined_in_the_container(name):
    container = _container(name)
    for ref in re.findall(r"\$\((\w+)\)", " ".join(container["args"])):
        assert ref in env_of(container), f"$({ref}) would stay literal"


def test_keda_scales_each_worker_on_its_own_queue():
    objects = component_objects("keda")
    auths = by_kind(objects, "TriggerAuthentication")
    scaled = by_kind(objects, "ScaledObject")
    assert all(o["apiVersion"] == "keda.sh/v1alpha1" for o in objects)
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()} == set(WORKERS)
    for so in scaled.values():
        target = DEPLOYMENTS[so["spec"]["scaleTargetRef"]["name"]]
        # One trigger per priority list of the queue, summed by the scaling modifier (the waiting work).
        triggers = so["spec"]["triggers"]
        assert [t["metadata"]["listName"] for t in triggers] == queue_lists(queue_of(container_argv(target)))
        assert all(t["type"] == "redis" and t["authenticationRef"]["name"] in auths for t in triggers)
        modifier = so["spec"]["advanced"]["scalingModifiers"]
        assert modifier["formula"] == " + ".join(t["name"] for t in triggers)
        assert modifier["metricType"] == "AverageValue" and int(modifier["target"]) > 0
        assert "replicas" not in target["spec"], "the autoscaler owns the replica count"
    assert scaled["worker-gpu"]["spec"]["minReplicaCount"] == 0
    assert scaled["worker-cpu"]["spec"]["minReplicaCount"] >= 1


def test_keda_reads_redis_credentials_from_the_secret_the_pods_use():
    secret_keys = {d["key"] for d in by_kind(component_objects("keda"), "TriggerAuthentication")["cutout-redis"][
        "spec"]["secretTargetRef"]}
    template = documents(K8S / "base" / "secret.example.yaml")[0]
    assert secret_keys <= template["stringData"].keys()


def test_hpa_alternative_scales_each_worker_on_its_queue_length():
    hpas = by_kind(component_objects("hpa"), "HorizontalPodAutoscaler")
    assert set(hpas) == set(WORKERS)
    for hpa in hpas.values():
        (metric,) = hpa["spec"]["metrics"]
        assert metric["external"]["metric"]["name"] == "cutout_queue_length"
        target = DEPLOYMENTS[hpa["spec"]["scaleTargetRef"]["name"]]
        assert metric["external"]["metric"]["selector"]["matchLabels"]["queue"] == queue_of(container_argv(target))


def test_web_is_reachable_only_from_the_ingress_controller_and_prometheus():
    policies = by_kind(base_objects(), "NetworkPolicy")
    assert policies["default-deny-ingress"]["spec"]["podSelector"] == {}
    sources = policies["web"]["spec"]["ingress"][0]["from"]
    namespaces = {s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for s in sources}
    assert namespaces == {"ingress-nginx", "monitoring"}


def test_ingress_does_not_expose_the_metrics_endpoint():
    (rule,) = by_kind(base_objects(), "Ingress")["web"]["spec"]["rules"]
    metrics = [p for p in rule["http"]["paths"] if p["path"] == "/metrics"]
    assert metrics and metrics[0]["pathType"] == "Exact"
    assert metrics[0]["backend"]["service"]["name"] != "web"


def test_overlay_renders_to_valid_resources(rendered):
    _, objects = rendered
    for doc in objects:
        if doc["apiVersion"] in BUILT_IN:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_overlay_keeps_the_gpu_request_and_the_device_setting_together(rendered):
    _, objects = rendered
    container = by_kind(objects, "Deployment")["worker-gpu"]["spec"]["template"]["spec"]["containers"][0]
    has_gpu = "nvidia.com/gpu" in container["resources"].get("limits", {})
    assert env_of(container)["CUTOUT_DEVICE"]["value"] == ("cuda" if has_gpu else "cpu")


def test_prod_runs_in_production_mode_on_versioned_images_with_keda():
    objects = render("prod")
    assert configmap_data(objects)["CUTOUT_ENV"] == "production"
    images = {c["image"] for d in by_kind(objects, "Deployment").values() for c in d["spec"]["template"]["spec"][
        "containers"]}
    assert all(re.search(r":\d+\.\d+\.\d+$", image) for image in images), images
    assert set(by_kind(objects, "ScaledObject")) == set(WORKERS)
    for name in WORKERS:
        assert by_kind(objects, "Deployment")[name]["spec"]["template"]["spec"][
            "terminationGracePeriodSeconds"] > _time_limit(objects)


def test_cpu_workers_also_take_the_control_queue_that_starts_jobs():
    from tasks.queues import WORKER_QUEUES

    argv = container_argv(DEPLOYMENTS["worker-cpu"])
    assert argv[argv.index("-Q") + 1] == WORKER_QUEUES["cpu"] == "cpu,control"
