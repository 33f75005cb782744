"""Integration: real Redis, real `celery worker` processes for both queues, local and S3 storage."""

import io
import json
import os
import zipfile

import pytest
from PIL import Image

from matting_core.options import Options
from matting_core.registry import get_spec
from matting_core.weights import cutout_home
from tasks import context, keys
from tasks.local_cluster import Worker, wait_until
from tasks.settings import Settings
from tasks.storage import s3_client
from tasks.submit import create_job, recompose, record_job, retry_job
from tasks.work import finish, infer, package
from tests.conftest import DATA, PHOTOS, point_app_at
from tests.manifests import validated
from tests.tasks.conftest import REGION

# Tests about the broker, the workers or the model, not the store, run on local storage alone; those
# that read and write a job's objects run on both (tests/tasks/test_storage.py covers S3 itself).
LOCAL_ONLY = pytest.mark.parametrize("cluster", ["local"], indirect=True)
GOOD = [(f"{name}-{n}.jpg", (DATA / f"{name}.jpg").read_bytes()) for n in range(3) for name in PHOTOS][:10]
BAD = [("notes.jpg", b"shopping list: milk"), ("cut-off.jpg", (DATA / "coffee.jpg").read_bytes()[:5000])]
FAST = "u2netp"  # where the model is beside the point: ~3x quicker than the default u2net on this CPU


@pytest.fixture(scope="module", params=["local", "s3"])
def cluster(request, redis_url, tmp_path_factory):
    """One gpu-queue worker (on the CPU here) and one cpu-queue worker, on one storage backend."""
    endpoint = request.getfixturevalue("s3_server") if request.param == "s3" else None  # sets AWS_* first
    home = tmp_path_factory.mktemp("home")
    (home / "weights").symlink_to(cutout_home() / "weights")
    # A killed worker's messages come back after the visibility timeout: here just above the hard
    # limit (the least that keeps a running task from going to a second worker), not twice it.
    env = {**os.environ, "CUTOUT_BROKER_URL": redis_url, "CUTOUT_HOME": str(home), "CUTOUT_DEVICE": "cpu",
           "CUTOUT_SOFT_TIME_LIMIT": "8", "CUTOUT_TIME_LIMIT": "10", "CUTOUT_VISIBILITY_TIMEOUT": "12",
           "CUTOUT_STORAGE": request.param}
    if request.param == "s3":
        s3_client(endpoint, REGION).create_bucket(Bucket="jobs")
        env |= {"CUTOUT_S3_ENDPOINT_URL": endpoint, "CUTOUT_S3_BUCKET": "jobs", "CUTOUT_S3_REGION": REGION}
    point_app_at(Settings.from_env(env))
    logs = tmp_path_factory.mktemp("logs")
    workers = {"gpu": Worker("gpu", env, logs / "gpu.log"), "cpu": Worker("cpu", env, logs / "cpu.log")}
    yield {"env": env, "workers": workers, "logs": logs, "storage": context.storage(), "jobs": context.jobs()}
    for worker in workers.values():
        worker.stop()


def wait_for_job(cluster, job: str, timeout: float = 120) -> dict:
    store = cluster["jobs"]
    return wait_until(lambda: (r := store.job(job)) and r["status"] in ("done", "failed") and r, timeout,
                      f"job {job} did not finish; see {cluster['logs']}")


def zip_of(cluster, job: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(cluster["storage"].get(keys.zip_key(job))))


def manifest_of(cluster, job: str) -> dict:
    """The job's manifest.json, checked against the published schema (docs/manifest.schema.json)."""
    with zip_of(cluster, job) as zf:
        return validated(json.loads(zf.read("manifest.json")))


def model_entry(name: str) -> dict:
    return {"name": name, "weights_sha256": get_spec(name).sha256}


def test_a_ten_image_job_completes_with_every_image_in_the_zip(cluster):
    job = create_job(cluster["storage"], cluster["jobs"], "alice", GOOD, Options(), model=FAST)
    record = wait_for_job(cluster, job)
    assert (record["status"], record["done"], record["failed"]) == ("done", 10, 0)
    with zip_of(cluster, job) as zf:
        names = zf.namelist()
        manifest = json.loads(zf.read("manifest.json"))
        assert len(names) == 11 and names[-1] == "manifest.json"
        assert all(Image.open(io.BytesIO(zf.read(n))).mode == "RGBA" for n in names[:-1])
    assert [f["status"] for f in manifest["files"]] == ["done"] * 10
    assert manifest["model"] == model_entry("u2netp")
    assert manifest["model"]["weights_sha256"].startswith("309c8469")
    assert all(f["batch_size"] >= 1 and f["timings_ms"]["infer"] > 0 for f in manifest["files"])
    events = cluster["jobs"].events(job, block_ms=10)
    assert events[-1][1]["status"] == "done" and events[-1][1]["done"] == "10"


@LOCAL_ONLY
def test_a_job_naming_no_model_runs_the_default_u2net_beside_a_u2netp_job_in_one_worker(cluster):
    store = cluster["jobs"]
    default = create_job(cluster["storage"], store, "alice", GOOD[:2], Options())
    fast = create_job(cluster["storage"], store, "bob", GOOD[2:4], Options(), model=FAST)
    for job, model in [(default, "u2net"), (fast, "u2netp")]:
        record = wait_for_job(cluster, job)
        assert (record["status"], record["done"], record["model"]) == ("done", 2, model)
        assert manifest_of(cluster, job)["model"] == model_entry(model)
        # The worker records the model each alpha map came from.
        assert [item["model"] for item in store.items(job).values()] == [model, model]


def test_bad_files_fail_alone_and_retry_redoes_only_them(cluster):
    files = GOOD[:8] + BAD
    job = create_job(cluster["storage"], cluster["jobs"], "bob", files, Options(), model=FAST)
    record = wait_for_job(cluster, job)
    assert (record["status"], record["done"], record["failed"]) == ("done", 8, 2)
    items = cluster["jobs"].items(job)
    assert "notes.jpg" in items[8]["error"] and "cut-off.jpg" in items[9]["error"]
    with zip_of(cluster, job) as zf:
        assert len(zf.namelist()) == 9
    assert manifest_of(cluster, job)["summary"] == {"total": 10, "done": 8, "failed": 2}
    # Uploads that did not decode are deleted at once, not kept for the retention period; a retry
    # has nothing to run then, and leaves the done job as it is, its zip in place.
    assert [cluster["storage"].exists(keys.input_key(job, i)) for i in (0, 7, 8, 9)] == [True, True, False, False]
    zipped = cluster["storage"].get(keys.zip_key(job))
    assert retry_job(cluster["storage"], cluster["jobs"], job) == []
    assert cluster["jobs"].status(job) == "done" and cluster["storage"].get(keys.zip_key(job)) == zipped
    assert "notes.jpg" in cluster["jobs"].item(job, 8)["error"]
    # The user replaces the two broken uploads; retry runs those two and re-packages.
    first_output = cluster["storage"].get(items[0]["output_key"])
    for i in (8, 9):
        cluster["storage"].put(keys.input_key(job, i), GOOD[i][1])
    assert retry_job(cluster["storage"], cluster["jobs"], job) == [8, 9]
    record = wait_for_job(cluster, job)
    assert (record["status"], record["done"], record["failed"]) == ("done", 10, 0)
    # The retry ran the job's model, not the service's default.
    assert [cluster["jobs"].item(job, i)["model"] for i in (8, 9)] == [FAST, FAST]
    assert manifest_of(cluster, job)["model"] == model_entry(FAST)
    assert cluster["storage"].get(items[0]["output_key"]) == first_output
    with zip_of(cluster, job) as zf:
        assert len(zf.namelist()) == 11


@LOCAL_ONLY
def test_recompose_changes_the_colour_with_no_gpu_worker_running(cluster, tmp_path):
    job = create_job(cluster["storage"], cluster["jobs"], "carol", GOOD[:3], Options(), model=FAST)
    wait_for_job(cluster, job)
    alphas = [cluster["storage"].get(keys.alpha_key(job, i)) for i in range(3)]
    cluster["workers"]["gpu"].stop()  # any infer task would now wait forever
    try:
        green = Options(format="jpg", bg_color="#00ff00")
        assert recompose(cluster["storage"], cluster["jobs"], job, green) == [0, 1, 2]
        record = wait_for_job(cluster, job, timeout=60)
        assert record["status"] == "done" and record["options"]["bg_color"] == "#00ff00"
        with zip_of(cluster, job) as zf:
            jpgs = [n for n in zf.namelist() if n.endswith(".jpg")]
            corner = Image.open(io.BytesIO(zf.read(jpgs[0]))).convert("RGB").getpixel((0, 0))
        assert len(jpgs) == 3 and corner[1] > 200 and corner[0] < 60
        # Same model, same alpha maps: nothing was inferred again.
        assert record["model"] == FAST and manifest_of(cluster, job)["model"] == model_entry(FAST)
        assert [cluster["storage"].get(keys.alpha_key(job, i)) for i in range(3)] == alphas
    finally:
        cluster["workers"]["gpu"] = Worker("gpu", cluster["env"], cluster["logs"] / "gpu-2.log")


# Fault injection (~20 s, most of it the visibility timeout): make test-slow, beside the 40-image
# version in tests/reliability/test_faults.py. The fast tier keeps the redelivery tests below.
@pytest.mark.slow
@LOCAL_ONLY
def test_a_killed_gpu_worker_loses_and_duplicates_nothing(cluster):
    job = create_job(cluster["storage"], cluster["jobs"], "dave", GOOD, Options(), model=FAST)
    wait_until(lambda: cluster["jobs"].job(job)["done"] >= 1, 60, "no image finished")
    cluster["workers"]["gpu"].kill()
    assert cluster["jobs"].job(job)["done"] < 10
    cluster["workers"]["gpu"] = Worker("gpu", cluster["env"], cluster["logs"] / "gpu-3.log")
    record = wait_for_job(cluster, job, timeout=120)
    assert (record["status"], record["done"], record["failed"]) == ("done", 10, 0)
    with zip_of(cluster, job) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert len(zf.namelist()) == 11
    assert sorted(f["input"] for f in manifest["files"]) == sorted(name for name, _ in GOOD)


def _objects(storage, job: str, count: int, ext: str) -> list[bytes]:
    return [storage.get(k) for i in range(count) for k in (keys.alpha_key(job, i), keys.output_key(job, i, ext))]


def _without_timings(manifest: dict) -> dict:
    return {**manifest, "files": [{k: v for k, v in f.items() if k != "timings_ms"} for f in manifest["files"]]}


def _run_every_task(job: str) -> list[dict]:
    results = [finish.apply(args=(infer.apply(args=(job, i)).get(), job, i)).get() for i in range(3)]
    package.apply(args=(job,)).get()
    return results


def test_running_every_task_again_leaves_the_same_objects_and_manifest(cluster):
    storage, store = cluster["storage"], cluster["jobs"]
    job = record_job(storage, store, "erin", GOOD[:2] + BAD[:1], Options(), model=FAST)
    snapshots = []
    for _ in range(2):
        # A new run of every item, as a retry makes: all of them at first, then those whose upload is
        # still stored (one that did not decode was deleted; its item keeps its reason).
        store.requeue(job, [i for i in range(3) if storage.exists(keys.input_key(job, i))])
        results = _run_every_task(job)
        with zip_of(cluster, job) as zf:
            entries = {n: zf.read(n) for n in zf.namelist() if n != "manifest.json"}
            manifest = _without_timings(json.loads(zf.read("manifest.json")))
        snapshots.append((results, _objects(storage, job, 2, "png"), entries, manifest))
    assert snapshots[0] == snapshots[1]
    assert [r["status"] for r in snapshots[0][0]] == ["done", "done", "failed"]
    assert (store.job(job)["done"], store.job(job)["failed"]) == (2, 1)


def test_a_second_delivery_of_finished_work_changes_nothing(cluster):
    # A worker killed after an image's work, before the ack: Redis hands the task out again.
    storage, store = cluster["storage"], cluster["jobs"]
    job = record_job(storage, store, "erin", GOOD[:2] + BAD[:1], Options(), model=FAST)
    first = _run_every_task(job)
    items, events = store.items(job), len(store.events(job, block_ms=10))
    assert [infer.apply(args=(job, i)).get() for i in range(3)] == first
    assert [finish.apply(args=({"i": i, "status": "inferred"}, job, i)).get() for i in range(3)] == first
    assert store.items(job) == items  # timings included: nothing ran again
    assert len(store.events(job, block_ms=10)) == events
    assert (store.job(job)["done"], store.job(job)["failed"]) == (2, 1)


@LOCAL_ONLY
def test_a_worker_told_to_use_cuda_without_a_gpu_refuses_to_start(cluster, tmp_path):
    pytest.importorskip("torch").cuda.is_available() and pytest.skip("this host has a GPU")
    with pytest.raises(RuntimeError, match="no usable GPU"):
        Worker("gpu", {**cluster["env"], "CUTOUT_DEVICE": "cuda"}, tmp_path / "cuda.log")
