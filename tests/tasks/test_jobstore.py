"""JobStore against a real Redis: records, idempotent counters, the progress stream, the indexes; and the manifest."""

import json
import time
from dataclasses import asdict

import pytest

from matting_core.options import Options
from matting_core.registry import get_spec
from tasks import keys
from tasks.jobs import JobStore, new_job_id
from tasks.packaging import manifest
from tests.manifests import validated

RETENTION_S = 3600


@pytest.fixture
def store(redis_url) -> JobStore:
    """A JobStore on an emptied database of its own (db 1), so tests neither see nor disturb others."""
    store = JobStore.from_url(redis_url.rsplit("/", 1)[0] + "/1", retention_s=RETENTION_S)
    store.r.flushdb()
    return store


@pytest.fixture
def job(store) -> str:
    job = new_job_id()
    store.create(job, "alice", ["a.jpg", "b.png", "c.webp"], {"format": "png"})
    return job


def test_create_records_a_queued_job_with_its_owner_options_and_items(store):
    before = time.time()
    store.create("j1", "alice", ["a.jpg", "b.png"], {"format": "webp", "bg_color": "#fff"})
    record = store.job("j1")
    assert record["owner"] == "alice"
    assert record["options"] == {"format": "webp", "bg_color": "#fff"}
    assert record["total"] == 2
    assert before <= record["created"] <= time.time()
    assert (record["status"], record["done"], record["failed"], record["error"]) == ("queued", 0, 0, "")
    assert store.items("j1") == {0: {"name": "a.jpg", "state": "queued"}, 1: {"name": "b.png", "state": "queued"}}
    assert store.exists("j1")


def test_a_job_records_its_model_and_without_one_named_the_default(store):
    store.create("j1", "alice", ["a.jpg"], {}, model="u2netp")
    store.create("j2", "alice", ["a.jpg"], {})
    assert (store.job("j1")["model"], store.model("j1")) == ("u2netp", "u2netp")
    assert (store.job("j2")["model"], store.model("j2")) == ("u2net", "u2net")


def test_a_job_recorded_before_jobs_named_a_model_reads_as_u2netp_what_it_ran(store):
    store.create("old", "alice", ["a.jpg"], {"format": "png"})
    store.r.hdel("cutout:job:old", "model")  # the record as the service wrote it until now
    assert (store.job("old")["model"], store.model("old")) == ("u2netp", "u2netp")
    assert manifest(store, "old")[0]["model"] == {"name": "u2netp", "weights_sha256": get_spec("u2netp").sha256}


def test_a_retry_or_recompose_keeps_the_model(store):
    store.create("j1", "alice", ["a.jpg"], {"format": "png"}, model="u2netp")
    store.update_item("j1", 0, "done")
    store.requeue("j1", [0])
    store.set_options("j1", {"format": "jpg"})
    store.set_status("j1", "queued")
    assert store.job("j1")["model"] == "u2netp"


def test_an_unknown_job_has_no_record(store):
    assert store.job("nope") is None
    assert not store.exists("nope")
    assert store.items("nope") == {}


def test_marking_an_item_done_twice_counts_it_once(store, job):
    store.update_item(job, 0, "done", output_key="k0")
    store.update_item(job, 0, "done", output_key="k0")
    record = store.job(job)
    assert (record["done"], record["failed"]) == (1, 0)


def test_a_done_item_whose_output_was_lost_is_forced_to_failed(store, job):
    store.update_item(job, 0, "done")
    store.update_item(job, 1, "done")
    assert not store.update_item(job, 0, "failed", error="late")  # a duplicate's failure
    assert store.update_item(job, 0, "failed", force=True, error="output lost")
    record = store.job(job)
    assert (record["done"], record["failed"]) == (1, 1)
    assert store.item(job, 0)["error"] == "output lost"


def test_a_failed_item_that_a_second_delivery_finishes_counts_as_done(store, job):
    store.update_item(job, 0, "failed", error="took too long")
    assert store.update_item(job, 0, "done", output_key="k0")
    record = store.job(job)
    assert (record["done"], record["failed"]) == (1, 0)


@pytest.mark.parametrize("final", ["done", "failed"])
@pytest.mark.parametrize("again", ["queued", "inferring", "finishing"])
def test_a_finished_item_is_not_moved_back_to_running(store, job, final, again):
    store.update_item(job, 0, final, output_key="k0")
    events_before = len(store.events(job, block_ms=10))
    assert not store.update_item(job, 0, again, batch_size=8)
    record = store.job(job)
    assert (record["done"], record["failed"]) == ((1, 0) if final == "done" else (0, 1))
    assert store.item(job, 0) == {"name": "a.jpg", "state": final, "output_key": "k0"}
    assert len(store.events(job, block_ms=10)) == events_before


@pytest.mark.parametrize("final", ["done", "failed"])
def test_requeue_starts_finished_items_over(store, job, final):
    store.update_item(job, 0, final, output_key="k0", error="bad")
    store.update_item(job, 1, "done")
    store.requeue(job, [0])
    record = store.job(job)
    assert (record["done"], record["failed"]) == (1, 0)
    assert store.item(job, 0) == {"name": "a.jpg", "state": "queued", "output_key": "k0"}
    assert store.update_item(job, 0, "inferring")


def test_the_first_update_starts_the_job(store, job):
    store.update_item(job, 2, "inferring")
    assert store.job(job)["status"] == "running"


def test_an_update_does_not_reopen_a_finished_job(store, job):
    store.set_status(job, "done")
    store.update_item(job, 0, "done")
    assert store.job(job)["status"] == "done"


def test_update_keeps_earlier_fields_and_replaces_the_state(store, job):
    store.update_item(job, 1, "inferring", batch_size=4, timings={"infer": 12.5})
    store.update_item(job, 1, "done", output_key="jobs/x/out/1.png")
    assert store.item(job, 1) == {"name": "b.png", "state": "done", "batch_size": 4, "timings": {"infer": 12.5},
                                  "output_key": "jobs/x/out/1.png"}


def test_an_item_keeps_its_error_only_while_failed(store, job):
    store.update_item(job, 0, "failed", error="a.jpg: not an image")
    assert store.item(job, 0)["error"] == "a.jpg: not an image"
    store.update_item(job, 0, "done")
    assert "error" not in store.item(job, 0)


def test_names_and_fields_survive_the_update_unchanged(store, job):
    fields = {"batch_size": 4, "timings": {"infer": 12.5, "decode": 0.1}, "output_key": "jobs/x/out/1.png"}
    store.r.hset(f"cutout:job:{job}:items", "1", json.dumps({"name": "Zürich café/1 \"x\".jpg", "state": "queued"}))
    store.update_item(job, 1, "done", **fields)
    assert store.item(job, 1) == {"name": "Zürich café/1 \"x\".jpg", "state": "done", **fields}


def test_every_update_appends_an_event_with_the_counts(store, job):
    store.update_item(job, 0, "done")
    store.update_item(job, 1, "failed", error="b.png: truncated")
    events = [fields for _, fields in store.events(job, block_ms=100)]
    assert events == [
        {"i": "0", "state": "done", "error": "", "status": "running", "done": "1", "failed": "0", "total": "3"},
        {"i": "1", "state": "failed", "error": "b.png: truncated", "status": "running", "done": "1", "failed": "1",
         "total": "3"},
    ]


def test_a_status_change_appends_an_event(store, job):
    store.update_item(job, 0, "done")
    store.set_status(job, "failed", error="packaging failed")
    _, last = store.events(job, block_ms=100)[-1]
    assert (last["status"], last["error"], last["done"], last["total"]) == ("failed", "packaging failed", "1", "3")


def test_events_after_an_id_are_only_the_newer_ones(store, job):
    store.update_item(job, 0, "done")
    [(first_id, _)] = store.events(job, block_ms=100)
    store.update_item(job, 1, "done")
    store.update_item(job, 2, "done")
    newer = store.events(job, last_id=first_id, block_ms=100)
    assert [fields["i"] for _, fields in newer] == ["1", "2"]
    assert all(eid > first_id for eid, _ in newer)


def test_events_wait_at_most_block_ms_then_return_nothing(store, job):
    store.update_item(job, 0, "done")
    [(last_id, _)] = store.events(job, block_ms=100)
    start = time.monotonic()
    assert store.events(job, last_id=last_id, block_ms=200) == []
    assert 0.15 <= time.monotonic() - start < 2


def test_the_event_stream_expires_an_hour_after_the_retention(store, job):
    store.update_item(job, 0, "done")
    assert RETENTION_S < store.r.ttl(f"cutout:job:{job}:events") <= RETENTION_S + 3600


def test_jobs_of_lists_an_owners_jobs_newest_first_and_no_one_elses(store):
    for job, owner in [("a1", "alice"), ("b1", "bob"), ("a2", "alice"), ("a3", "alice")]:
        store.create(job, owner, ["x.jpg"], {})
    assert store.jobs_of("alice") == ["a3", "a2", "a1"]
    assert store.jobs_of("alice", limit=2) == ["a3", "a2"]
    assert store.jobs_of("bob") == ["b1"]
    assert store.jobs_of("carol") == []


def test_created_before_lists_only_jobs_older_than_the_cutoff(store):
    store.create("old", "alice", ["x.jpg"], {})
    store.create("old-too", "bob", ["x.jpg"], {})
    cutoff = time.time()
    store.create("new", "alice", ["x.jpg"], {})
    assert sorted(store.created_before(cutoff)) == ["old", "old-too"]


def test_delete_removes_every_key_of_the_job_and_its_index_entries(store, job):
    store.create("other", "alice", ["x.jpg"], {})
    store.update_item(job, 0, "done")
    store.update_item(job, 1, "failed", error="bad")
    assert len(store.r.keys(f"cutout:job:{job}*")) == 5  # record, items, done, failed, events
    store.delete(job)
    assert store.r.keys(f"cutout:job:{job}*") == []
    assert store.jobs_of("alice") == ["other"]
    assert store.created_before(time.time()) == ["other"]
    assert store.job("other")["total"] == 1


def test_count_attempt_counts_each_start_and_expires(store):
    assert [store.count_attempt("task-1", ttl_s=600) for _ in range(3)] == [1, 2, 3]
    assert store.count_attempt("task-2", ttl_s=600) == 1
    assert 0 < store.r.ttl("cutout:attempts:task-1") <= 600


@pytest.fixture
def finished_job(store) -> str:
    """A job whose items ended done or failed, with awkward input names."""
    job = new_job_id()
    names = ["cat.jpg", "Cat.jpeg", "../../etc/passwd.png", "notes.jpg", "con.jpg", "cat.heic"]
    store.create(job, "alice", names, {"format": "png"}, model="u2netp")
    exts = {0: "png", 1: "png", 2: "png", 4: "png", 5: "webp"}
    for i, ext in exts.items():
        store.update_item(job, i, "inferring", batch_size=2, timings={"infer": 30.0})
        store.update_item(job, i, "done", output_key=keys.output_key(job, i, ext))
    store.update_item(job, 3, "failed", error="notes.jpg: not an image")
    return job


def test_manifest_names_outputs_after_inputs_uniquely_and_safely(store, finished_job):
    body, entries = manifest(store, finished_job)
    assert entries == [
        (keys.output_key(finished_job, 0, "png"), "cat.png"),
        (keys.output_key(finished_job, 1, "png"), "Cat-2.png"),
        (keys.output_key(finished_job, 2, "png"), "passwd.png"),
        (keys.output_key(finished_job, 4, "png"), "_con.png"),
        (keys.output_key(finished_job, 5, "webp"), "cat.webp"),
    ]
    assert [f["output"] for f in body["files"]] == ["cat.png", "Cat-2.png", "passwd.png", None, "_con.png", "cat.webp"]


def test_manifest_records_the_job_model_summary_and_each_files_outcome(store, finished_job):
    spec = get_spec("u2netp")
    body, _ = manifest(store, finished_job)
    validated(body)
    assert body["job"] == finished_job
    assert body["options"] == asdict(Options(format="png"))  # every option, the defaults too
    assert body["model"] == {"name": "u2netp", "weights_sha256": spec.sha256}
    assert body["summary"] == {"total": 6, "done": 5, "failed": 1}
    assert body["files"][0] == {"input": "cat.jpg", "output": "cat.png", "status": "done", "error": None,
                                "batch_size": 2, "timings_ms": {"infer": 30.0}}
    assert body["files"][3] == {"input": "notes.jpg", "output": None, "status": "failed",
                                "error": "notes.jpg: not an image", "batch_size": None, "timings_ms": {}}


def test_an_update_after_the_job_was_deleted_leaves_nothing_behind(store):
    store.create("gone", "alice", ["a.jpg"], {})
    store.delete("gone")
    store.update_item("gone", 0, "done")
    assert store.r.keys("cutout:job:gone*") == []


def test_no_write_after_the_job_was_deleted_makes_a_record_again(store, job):
    # A task or a fan-out still running at the DELETE: had any of these made a record holding only
    # its own field, reading the job would have failed (a 500 on every route that reads it).
    store.delete(job)
    store.set_status(job, "done", zip_key="z")
    store.set_options(job, {"format": "png"})
    store.launched(job, time.time(), "gpu", 0)
    store.update_item(job, 0, "done")
    assert store.r.keys(f"cutout:job:{job}*") == [] and store.job(job) is None  # the record, and its stream
    assert job not in store.r.zrange("cutout:jobs:active", 0, -1)


def test_a_record_left_with_only_a_late_field_reads_as_no_job(store):
    store.r.hset("cutout:job:late", "last_progress", 1.0)  # as a write after a DELETE once left it
    assert store.job("late") is None


def test_a_deleted_job_leaves_a_tombstone_for_the_retention_period_and_awaits_its_purge(store, job):
    assert not store.deleted(job)
    store.delete(job)
    assert store.deleted(job) and not store.exists(job)
    assert RETENTION_S - 5 <= store.r.ttl(f"cutout:deleted:{job}") <= RETENTION_S
    assert store.deleted_before(time.time() - 60) == [] and store.deleted_before(time.time()) == [job]
    store.purged([job])
    assert store.deleted_before(time.time()) == [] and store.deleted(job)  # the tombstone stays


def test_live_jobs_counts_an_owners_queued_and_running_jobs_only(store, job):
    for name in ("running", "done", "failed"):
        store.create(name, "alice", ["x.jpg"], {})
    store.create("bobs", "bob", ["x.jpg"], {})
    store.update_item("running", 0, "inferring")
    store.set_status("done", "done")
    store.set_status("failed", "failed", error="x")
    assert store.live_jobs("alice") == 2 and store.live_jobs("bob") == 1 and store.live_jobs("carol") == 0


def test_a_queued_job_never_launched_is_stalled_even_while_others_progress(store, job):
    store.create("waiting", "bob", ["x.jpg"], {})
    store.launched("waiting", time.time())
    store.create("busy", "carol", ["x.jpg"], {})
    time.sleep(1.1)
    store.update_item("busy", 0, "inferring")  # the service is working, on someone else's job
    assert store.stalled(time.time(), 1) == [job]  # lost; "waiting" was launched, so it waits its turn
    store.launched("waiting", None)  # a retry clears the mark until its launch runs
    assert sorted(store.stalled(time.time(), 1)) == sorted([job, "waiting"])


def test_a_launch_that_ends_after_the_job_was_deleted_makes_no_record_again(store, job):
    store.delete(job)
    store.launched(job, time.time())
    assert store.r.keys(f"cutout:job:{job}*") == [] and job not in store.r.zrange("cutout:jobs:active", 0, -1)
