"""`cutout batch` and the service name outputs alike and write manifests of one schema
(matting_core/manifest.py, docs/manifest.schema.json): a real CLI run, and the service's packaging
of a job with the same inputs on a real Redis."""

import json
from pathlib import Path

import pytest

from cutout_cli.main import main
from matting_core.registry import get_spec
from tasks import keys
from tasks.jobs import JobStore, new_job_id
from tasks.packaging import manifest
from tests.conftest import DATA
from tests.manifests import validated

# Awkward names on purpose: a Windows device name, case-insensitive twins, one stem with two
# input formats, a decomposed accent; and one file that is not an image.
NAMES = {"CON.jpg": "chelsea", "cat.jpg": "coffee", "Cat.JPEG": "rocket", "photo.jpg": "astronaut",
         "photo.jpeg": "chelsea", "cafe\u0301.jpg": "coffee"}


@pytest.fixture(scope="module")
def cli_manifest(tmp_path_factory) -> dict:
    """The manifest of one `cutout batch --model u2netp` over NAMES and a text file posing as a JPEG."""
    folder = tmp_path_factory.mktemp("in")
    for name, photo in NAMES.items():
        (folder / name).write_bytes((DATA / f"{photo}.jpg").read_bytes())
    (folder / "notes.jpg").write_text("shopping list: milk")
    out = tmp_path_factory.mktemp("out") / "cutouts"
    assert main(["batch", str(folder), "-o", str(out), "--model", "u2netp", "--quiet"]) == 1  # one failed
    body = json.loads((out / "manifest.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted([f["output"] for f in body["files"] if f["output"]]
                                                           + ["manifest.json"])
    return body


def test_a_cli_runs_manifest_follows_the_published_schema(cli_manifest):
    validated(cli_manifest)
    assert cli_manifest["model"]["name"] == "u2netp"
    assert cli_manifest["model"]["weights_sha256"] == get_spec("u2netp").sha256
    assert cli_manifest["summary"] | {"seconds": 0, "images_per_second": 0} == {
        "total": 7, "done": 6, "failed": 1, "seconds": 0, "images_per_second": 0}
    assert all(f["batch_size"] == 1 for f in cli_manifest["files"] if f["status"] == "done")


def test_the_service_names_a_jobs_outputs_as_the_cli_named_the_same_inputs(cli_manifest, redis_url):
    store = JobStore.from_url(redis_url.rsplit("/", 1)[0] + "/3", retention_s=600)
    inputs = [Path(f["input"]).name for f in cli_manifest["files"]]
    job = new_job_id()
    store.create(job, "alice", inputs, {"format": "png"}, model="u2netp")
    for i, f in enumerate(cli_manifest["files"]):
        if f["status"] == "done":
            store.update_item(job, i, "done", output_key=keys.output_key(job, i, "png"))
        else:
            store.update_item(job, i, "failed", error=f["error"])
    try:
        body, entries = manifest(store, job)
    finally:
        store.delete(job)
    validated(body)
    outputs = [f["output"] for f in body["files"]]
    assert outputs == [f["output"] for f in cli_manifest["files"]]
    assert [name for _, name in entries] == [o for o in outputs if o]
    # In the order a folder is read (sorted: "Cat.JPEG" before "cat.jpg").
    assert {"_CON.png", "Cat.png", "cat-2.png", "photo.png", "photo-2.png", "caf\u00e9.png"} <= set(outputs)
    assert body["options"] == cli_manifest["options"]
