"""REST API v1 through the Flask test client, on real Redis, real workers and local storage."""

import io
import json
import time
import tracemalloc
import zipfile

import pytest
from PIL import Image

from bench.served import multipart
from tasks import keys
from tests.conftest import DATA
from web import uploads


def small_jpeg(name: str = "coffee", size=(320, 240)) -> bytes:
    """A small real photo: the model's cost is fixed, the rest is quicker on fewer pixels."""
    out = io.BytesIO()
    Image.open(DATA / f"{name}.jpg").convert("RGB").resize(size).save(out, "JPEG", quality=90)
    return out.getvalue()


def files(*named: tuple[str, bytes], field: str = "images") -> dict:
    return {field: [(io.BytesIO(data), name) for name, data in named]}


def post_job(client, headers, *named, **form):
    return client.post("/api/v1/jobs", data=files(*named) | form, headers=headers, content_type="multipart/form-data")


def wait_done(client, headers, job: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get(f"/api/v1/jobs/{job}", headers=headers).get_json()
        if status["status"] in ("done", "failed"):
            return status
        time.sleep(0.2)
    raise TimeoutError(f"job {job} did not finish")


def error_of(response) -> dict:
    return response.get_json()["error"]


# --- without workers: validation, limits, isolation, states ------------------------------------------

def test_a_job_is_accepted_with_links_to_follow_it(client, users):
    r = post_job(client, users["alice"]["headers"], ("a.jpg", small_jpeg()), ("b.jpg", small_jpeg("chelsea")))
    assert r.status_code == 202
    body = r.get_json()
    assert body["total"] == 2 and len(body["job_id"]) == 32  # 128 random bits, hex
    assert body["status_url"] == f"/api/v1/jobs/{body['job_id']}" == r.headers["Location"]
    assert body["events_url"] == f"/api/v1/jobs/{body['job_id']}/events"


@pytest.mark.parametrize("form, message", [
    ({"format": "gif"}, "format='gif' is not one of png, jpg, webp"),
    ({"alpha_threshold": "lots"}, "alpha_threshold='lots' must be a whole number"),
    ({"alpha_threshold": "300"}, "alpha_threshold 300 must be within 0-255"),
    ({"feather_edge": "maybe"}, "feather_edge='maybe' must be true or false"),
    ({"bg_color": "blurple"}, "bg_color='blurple' is not a colour"),
    ({"preset": "poster"}, "preset='poster' is not one of id-photo, ecommerce, avatar"),
    # Strict integers: Python's int() takes each of these; the document says ASCII digits.
    ({"erode_kernel": " 7 "}, "erode_kernel=' 7 ' must be a whole number written in ASCII digits"),
    ({"erode_kernel": "\u0667"}, "must be a whole number"),
    ({"quality": "1_0"}, "quality='1_0' must be a whole number"),
    ({"quality": "0"}, "quality 0 must be within 1-100"),
    ({"feather_radius": ""}, "feather_radius='' must be a whole number"),  # sent means set: empty is not unset
    ({"format": "jpg", "bg_color": "#ff000080"}, "translucent"),
])
def test_a_bad_option_is_refused_naming_it(client, users, form, message):
    r = post_job(client, users["alice"]["headers"], ("a.jpg", small_jpeg()), **form)
    assert r.status_code == 400 and error_of(r)["code"] == "invalid_option"
    assert message in error_of(r)["message"]


@pytest.mark.parametrize(("field", "values"), [("format", ["png", "webp"]), ("model", ["u2netp", "u2net"]),
                                             ("preset", ["avatar", "avatar"])])
def test_an_option_sent_twice_is_refused_naming_it_and_nothing_is_stored(client, users, field, values):
    # Each value alone is good: the first one must not be taken silently for the client.
    headers = users["alice"]["headers"]
    r = post_job(client, headers, ("a.jpg", small_jpeg()), **{field: values})
    assert r.status_code == 400
    assert error_of(r) == {"code": "repeated_field", "message": f"{field} is sent 2 times; send it once"}
    assert client.get("/api/v1/jobs", headers=headers).get_json()["jobs"] == []


def test_no_files_says_which_fields_to_send(client, users):
    r = client.post("/api/v1/jobs", data={"format": "png"}, headers=users["alice"]["headers"])
    assert r.status_code == 400 and "'images'" in error_of(r)["message"] and "'archive'" in error_of(r)["message"]


def test_too_many_files_is_413(app, client, users):
    app.config["MAX_FILES"] = 2
    r = post_job(client, users["alice"]["headers"], *[(f"{i}.jpg", b"x") for i in range(3)])
    assert r.status_code == 413 and "more than 2 files" in error_of(r)["message"]


def test_a_request_over_the_total_size_is_413(app, client, users):
    app.config["MAX_CONTENT_LENGTH"] = 50_000
    r = post_job(client, users["alice"]["headers"], ("big.jpg", b"x" * 60_000))
    assert r.status_code == 413 and error_of(r)["code"] == "request_entity_too_large"


def _photos_past_the_spool_size() -> list[tuple[str, bytes]]:
    photo = small_jpeg(size=(1024, 768))
    return [(f"{i}.jpg", photo) for i in range(uploads.SPOOL_REQUEST_BYTES // len(photo) + 10)]


def _upload_peak(client, headers, body: bytes, content_type: str):
    """The response, and the most memory Python held while the web app took the upload."""
    tracemalloc.start()
    try:
        r = client.post("/api/v1/jobs", data=body, headers=headers, content_type=content_type)
        return r, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("spool_above, in_memory", [(uploads.SPOOL_REQUEST_BYTES, False), (10**12, True)])
def test_a_large_upload_goes_to_disk_not_into_the_web_process(client, users, monkeypatch, spool_above, in_memory):
    # The second case shows the measure can tell: files kept in memory (werkzeug's default).
    photos = _photos_past_the_spool_size()
    monkeypatch.setattr(uploads, "SPOOL_REQUEST_BYTES", spool_above)
    body, content_type = multipart(photos)
    r, peak = _upload_peak(client, users["alice"]["headers"], body, content_type)
    assert r.status_code == 202 and r.get_json()["total"] == len(photos)
    assert (peak > len(body)) if in_memory else (peak < len(body) / 4), f"peak {peak} for a {len(body)}-byte upload"


def test_the_members_of_an_uploaded_zip_go_to_disk_one_by_one(client, users):
    photos = _photos_past_the_spool_size()
    body, content_type = multipart([("photos.zip", zip_of(dict(photos)))], field="archive")
    r, peak = _upload_peak(client, users["alice"]["headers"], body, content_type)
    assert r.status_code == 202 and r.get_json()["total"] == len(photos)
    assert peak < len(body) / 4, f"peak {peak} for a {len(body)}-byte zip"


def test_a_file_over_the_size_limit_fails_alone_naming_the_file(app, client, users):
    app.config["MAX_FILE_BYTES"] = 100_000
    headers = users["alice"]["headers"]
    r = post_job(client, headers, ("huge.jpg", b"x" * 100_001), ("ok.jpg", small_jpeg()))
    status = client.get(r.get_json()["status_url"], headers=headers).get_json()
    huge, ok = status["items"]
    assert huge["state"] == "failed" and "huge.jpg" in huge["error"] and "0.0953674 MB limit" in huge["error"]
    assert huge["input_url"] is None and ok["state"] == "queued"


def zip_of(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return out.getvalue()


def test_a_zip_upload_refuses_unsafe_and_nested_entries_and_keeps_the_rest(client, users):
    archive = zip_of({"shots/a.jpg": small_jpeg(), "../../etc/passwd.jpg": small_jpeg(), "inner.zip": b"PK",
                      "__MACOSX/._a.jpg": b"junk", ".DS_Store": b"junk", "notes.txt": b"hello"})
    headers = users["alice"]["headers"]
    r = client.post("/api/v1/jobs", data={"archive": (io.BytesIO(archive), "batch.zip")}, headers=headers)
    assert r.status_code == 202 and r.get_json()["total"] == 4
    items = {it["name"]: it for it in client.get(r.get_json()["status_url"], headers=headers).get_json()["items"]}
    assert items["batch.zip!shots/a.jpg"]["state"] == "queued"
    assert "unsafe path" in items["batch.zip!../../etc/passwd.jpg"]["error"]
    assert "archives inside archives" in items["batch.zip!inner.zip"]["error"]
    assert items["batch.zip!notes.txt"]["state"] == "queued"  # the worker says it is not an image


def test_a_zip_bomb_is_refused_before_inflating(app, client, users):
    app.config["MAX_ARCHIVE_BYTES"] = 1_000_000
    bomb = zip_of({"zeros.png": bytes(2_000_000)})  # ~2 KB on the wire
    r = client.post("/api/v1/jobs", data={"archive": (io.BytesIO(bomb), "bomb.zip")},
                    headers=users["alice"]["headers"])
    assert r.status_code == 413 and "bomb.zip inflates to" in error_of(r)["message"]


def test_a_broken_zip_becomes_one_failed_item(client, users):
    headers = users["alice"]["headers"]
    r = client.post("/api/v1/jobs", data={"archive": (io.BytesIO(b"PK\x03\x04 no"), "broken.zip")}, headers=headers)
    [item] = client.get(r.get_json()["status_url"], headers=headers).get_json()["items"]
    assert item["state"] == "failed" and "not a readable .zip" in item["error"]


def test_running_jobs_per_user_are_capped_with_retry_after(app, client, users):
    app.config["MAX_ACTIVE_JOBS"] = 2
    for _ in range(2):
        assert post_job(client, users["alice"]["headers"], ("a.jpg", b"x")).status_code == 202
    r = post_job(client, users["alice"]["headers"], ("a.jpg", b"x"))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 30 and "limit 2" in error_of(r)["message"]
    assert post_job(client, users["bob"]["headers"], ("a.jpg", b"x")).status_code == 202  # per user
    # The cap is met before the body is read (reading it spools every file to disk): a request
    # past it is refused as such even when its form is wrong, on every endpoint that starts a job.
    alice = users["alice"]["headers"]
    assert post_job(client, alice, ("a.jpg", b"x"), quality="x").status_code == 429
    for url, field in (("/api/v1/remove", "image"), ("/v1.0/removebg", "image_file")):
        r = client.post(url, data={field: (io.BytesIO(b"x"), "a.jpg"), "quality": "x", "size": "bogus"},
                        headers=alice, content_type="multipart/form-data")
        assert r.status_code == 429, (url, r.get_data(as_text=True))


def test_submissions_are_rate_limited_per_user_with_retry_after(app, client, users):
    app.config["SUBMIT_RATE_LIMIT"] = "2 per minute"
    codes = [post_job(client, users["alice"]["headers"], ("a.jpg", b"x")).status_code for _ in range(3)]
    r = post_job(client, users["alice"]["headers"], ("a.jpg", b"x"))
    assert codes == [202, 202, 429] and r.status_code == 429 and int(r.headers["Retry-After"]) > 0


def test_a_queued_job_has_no_zip_and_cannot_be_retried_yet(client, users):
    headers = users["alice"]["headers"]
    job = post_job(client, headers, ("a.jpg", small_jpeg())).get_json()["job_id"]
    assert client.get(f"/api/v1/jobs/{job}/download", headers=headers).status_code == 409
    assert client.get(f"/api/v1/jobs/{job}/items/0", headers=headers).status_code == 409
    r = client.post(f"/api/v1/jobs/{job}/retry", headers=headers)
    assert r.status_code == 409 and "still queued" in error_of(r)["message"]


def test_my_jobs_lists_only_mine_newest_first(client, users):
    mine = [post_job(client, users["alice"]["headers"], ("a.jpg", b"x")).get_json()["job_id"] for _ in range(2)]
    post_job(client, users["bob"]["headers"], ("b.jpg", b"x"))
    listed = client.get("/api/v1/jobs", headers=users["alice"]["headers"]).get_json()["jobs"]
    assert [j["job_id"] for j in listed] == mine[::-1]


def job_routes(job: str) -> list[tuple[str, str]]:
    base = f"/api/v1/jobs/{job}"
    return [("GET", base), ("GET", f"{base}/events"), ("GET", f"{base}/download"), ("GET", f"{base}/items/0"),
            ("GET", f"{base}/items/0?variant=input"), ("POST", f"{base}/retry"), ("POST", f"{base}/recompose"),
            ("DELETE", base)]


def test_another_users_job_is_404_on_every_route_and_survives(client, users):
    job = post_job(client, users["alice"]["headers"], ("a.jpg", small_jpeg())).get_json()["job_id"]
    for method, url in job_routes(job):
        r = client.open(url, method=method, headers=users["bob"]["headers"])
        assert r.status_code == 404 and error_of(r)["code"] == "job_not_found", (method, url)
    assert client.get(f"/api/v1/jobs/{job}", headers=users["alice"]["headers"]).status_code == 200


def test_an_unknown_or_malformed_job_id_is_the_same_404(client, users):
    for job in ("0" * 32, "a.b", "x" * 100):
        r = client.get(f"/api/v1/jobs/{job}", headers=users["alice"]["headers"])
        assert r.status_code == 404 and error_of(r)["code"] == "job_not_found"


def test_every_api_route_without_credentials_is_401(app, client):
    rules = [r for r in app.url_map.iter_rules() if r.rule.startswith(("/api/", "/v1.0/"))]
    assert len(rules) >= 12
    for rule in rules:
        url = rule.rule.replace("<job>", "0" * 32).replace("<int:i>", "0")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            r = client.open(url, method=method)
            assert r.status_code == 401, (method, url)
            body = r.get_json()
            message = body["errors"][0]["detail"] if url.startswith("/v1.0/") else body["error"]["message"]
            assert "X-Api-Key" in message and r.headers["WWW-Authenticate"].startswith("Bearer")


def test_healthz_needs_no_user_and_pages_carry_security_headers(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.get_json() == {"status": "ok"}
    assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]


def test_openapi_describes_every_route(app, client, users):
    spec = client.get("/api/v1/openapi.json", headers=users["alice"]["headers"]).get_json()
    documented = set(spec["paths"])
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(("/api/", "/v1.0/")):
            path = rule.rule.replace("<job>", "{job}").replace("<int:i>", "{i}")
            assert path in documented, path


# --- with workers: the whole path -------------------------------------------------------------------

def test_a_job_runs_to_a_zip_with_every_item_and_its_images(client, users, workers):
    headers = users["alice"]["headers"]
    photo = small_jpeg()
    r = post_job(client, headers, ("coffee.jpg", photo), ("notes.jpg", b"not an image"), format="webp")
    status = wait_done(client, headers, r.get_json()["job_id"])
    assert (status["status"], status["done"], status["failed"]) == ("done", 1, 1)
    ok, bad = status["items"]
    assert "notes.jpg" in bad["error"] and bad["output_url"] is None
    assert client.get(ok["input_url"], headers=headers).data == photo
    output = client.get(ok["output_url"], headers=headers)
    assert output.mimetype == "image/webp" and Image.open(io.BytesIO(output.data)).size == (320, 240)
    alpha = Image.open(io.BytesIO(client.get(ok["alpha_url"], headers=headers).data))
    assert alpha.mode == "L" and alpha.size == (320, 320)
    download = client.get(status["download_url"], headers=headers)
    assert download.mimetype == "application/zip" and "attachment" in download.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(download.data)) as zf:
        assert zf.namelist() == ["coffee.webp", "manifest.json"]
        assert json.loads(zf.read("manifest.json"))["summary"] == {"total": 2, "done": 1, "failed": 1}


def test_events_stream_a_snapshot_then_progress_until_done(client, users, workers):
    headers = users["alice"]["headers"]
    job = post_job(client, headers, ("a.jpg", small_jpeg()), ("b.jpg", small_jpeg("chelsea"))).get_json()["job_id"]
    r = client.get(f"/api/v1/jobs/{job}/events", headers=headers)
    assert r.mimetype == "text/event-stream" and r.headers["Cache-Control"] == "no-cache"
    events = [block for block in r.get_data(as_text=True).split("\n\n") if block.startswith(("event:", "id:"))]
    assert events[0].startswith("event: snapshot")
    last = json.loads(events[-1].rsplit("data: ", 1)[1])
    assert last["status"] == "done" and last["done"] == 2 and last["total"] == 2
    # A finished job's stream is its snapshot alone.
    again = client.get(f"/api/v1/jobs/{job}/events", headers=headers).get_data(as_text=True)
    assert again.count("event: ") == 1 and '"status": "done"' in again


def test_recompose_changes_the_format_and_retry_reruns_only_failures(client, users, workers):
    headers = users["alice"]["headers"]
    job = post_job(client, headers, ("a.jpg", small_jpeg()), ("bad.jpg", b"junk")).get_json()["job_id"]
    wait_done(client, headers, job)
    r = client.post(f"/api/v1/jobs/{job}/recompose", data={"format": "jpg", "bg_color": "#00ff00"}, headers=headers)
    assert r.status_code == 202 and r.get_json()["recomposed"] == [0]
    status = wait_done(client, headers, job)
    assert status["options"]["bg_color"] == "#00ff00" and status["items"][0]["output_url"]
    jpg = Image.open(io.BytesIO(client.get(status["items"][0]["output_url"], headers=headers).data))
    assert jpg.format == "JPEG" and jpg.convert("RGB").getpixel((0, 0))[1] > 200
    storage = client.application.extensions["cutout"].storage
    storage.put(keys.input_key(job, 1), small_jpeg("chelsea"))  # the user's fixed file
    r = client.post(f"/api/v1/jobs/{job}/retry", headers=headers)
    assert r.status_code == 202 and r.get_json()["retried"] == [1]
    assert wait_done(client, headers, job)["done"] == 2


def test_delete_removes_the_record_and_every_file(client, users, workers):
    headers = users["alice"]["headers"]
    job = post_job(client, headers, ("a.jpg", small_jpeg())).get_json()["job_id"]
    wait_done(client, headers, job)
    storage = client.application.extensions["cutout"].storage
    assert storage.exists(keys.zip_key(job))
    assert client.delete(f"/api/v1/jobs/{job}", headers=headers).status_code == 204
    assert client.get(f"/api/v1/jobs/{job}", headers=headers).status_code == 404
    assert not (storage.root / keys.job_prefix(job)).exists()


def test_remove_answers_one_image_with_its_cutout(client, users, workers):
    headers = users["alice"]["headers"]
    r = client.post("/api/v1/remove", data={"image": (io.BytesIO(small_jpeg()), "c.jpg"), "format": "png"},
                    headers=headers)
    assert r.status_code == 200 and r.mimetype == "image/png"
    assert Image.open(io.BytesIO(r.data)).mode == "RGBA"


def test_remove_explains_an_image_that_fails(client, users, workers):
    r = client.post("/api/v1/remove", data={"image": (io.BytesIO(b"%PDF-1.7"), "scan.jpg")},
                    headers=users["alice"]["headers"])
    assert r.status_code == 422 and "scan.jpg" in error_of(r)["message"]


def test_remove_takes_exactly_one_image(client, users):
    two = {"image": [(io.BytesIO(b"x"), "a.jpg"), (io.BytesIO(b"y"), "b.jpg")]}
    r = client.post("/api/v1/remove", data=two, headers=users["alice"]["headers"])
    assert r.status_code == 400 and "exactly one file" in error_of(r)["message"]


def test_transparent_beats_a_presets_background(client, users):
    headers = users["alice"]["headers"]
    r = post_job(client, headers, ("a.jpg", b"x"), preset="id-photo", format="png", bg_color="transparent")
    options = client.get(r.get_json()["status_url"], headers=headers).get_json()["options"]
    assert options["bg_color"] is None and options["alpha_threshold"] == 15


# --- event streams: positions, the per-user cap, the lifetime -----------------------------


@pytest.mark.parametrize("bad", ["garbage", "1-", "-1", "$", "1-2-3", "0x10", "9" * 30])
@pytest.mark.parametrize("where", ["after", "Last-Event-ID"])
def test_a_bad_stream_position_is_400_before_the_stream_starts(client, users, bad, where):
    headers = users["alice"]["headers"]
    job = post_job(client, headers, ("a.jpg", b"x")).get_json()["job_id"]
    if where == "after":
        r = client.get(f"/api/v1/jobs/{job}/events", query_string={"after": bad}, headers=headers)
    else:
        r = client.get(f"/api/v1/jobs/{job}/events", headers=headers | {"Last-Event-ID": bad})
    assert r.status_code == 400 and r.mimetype == "application/json"
    assert error_of(r)["code"] == "invalid_position" and where in error_of(r)["message"]


def open_stream(client, headers, job, **extra):
    """An event stream whose body is not read yet: it holds its place until closed."""
    return client.get(f"/api/v1/jobs/{job}/events", headers=headers | extra, buffered=False)


def test_event_streams_per_user_are_capped_and_a_closed_one_frees_its_place(app, client, users):
    app.config["MAX_STREAMS_PER_USER"] = 2
    alice, bob = users["alice"]["headers"], users["bob"]["headers"]
    job = post_job(client, alice, ("a.jpg", b"x")).get_json()["job_id"]
    held = [open_stream(client, alice, job) for _ in range(2)]
    assert [r.status_code for r in held] == [200, 200]
    r = client.get(f"/api/v1/jobs/{job}/events", headers=alice)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    assert "limit 2" in error_of(r)["message"] and "CUTOUT_MAX_STREAMS_PER_USER" in error_of(r)["message"]
    bobs = post_job(client, bob, ("b.jpg", b"x")).get_json()["job_id"]
    other = open_stream(client, bob, bobs)
    assert other.status_code == 200  # per user
    other.close()
    held[0].close()
    again = open_stream(client, alice, job)
    assert again.status_code == 200
    for r in (held[1], again):
        r.close()


def test_a_stream_place_whose_web_process_died_lapses(app, client, users):
    from web.streams import StreamSlot

    app.config["MAX_STREAMS_PER_USER"] = 1
    alice = users["alice"]["headers"]
    job = post_job(client, alice, ("a.jpg", b"x")).get_json()["job_id"]
    r = app.extensions["cutout"].jobs.r
    orphan = StreamSlot.acquire(r, "alice", 1)  # a stream of a process killed before it could release it
    assert client.get(f"/api/v1/jobs/{job}/events", headers=alice).status_code == 429
    r.zadd(orphan.key, {orphan.member: time.time() - 1})  # its heartbeat is not renewed: it lapses
    stream = open_stream(client, alice, job)
    assert stream.status_code == 200
    stream.close()


def test_a_stream_ends_at_its_lifetime_and_resumes_from_last_event_id_without_losing_an_event(app, client, users):
    app.config["STREAM_SECONDS"] = 1
    headers, store = users["alice"]["headers"], app.extensions["cutout"].jobs
    job = "f" * 32
    store.create(job, "alice", ["a.jpg", "b.jpg"], {})  # recorded, never enqueued: only this test moves it
    started = time.monotonic()
    first = client.get(f"/api/v1/jobs/{job}/events", headers=headers).get_data(as_text=True)
    assert time.monotonic() - started < 5 and first.startswith("retry: ")
    [snapshot] = [block for block in first.split("\n\n") if block.startswith("event: snapshot")]
    last_id = snapshot.split("id: ", 1)[1].split("\n", 1)[0]
    # While the browser is away, the job moves on.
    store.update_item(job, 0, "inferring")
    store.update_item(job, 1, "failed", error="not an image")
    resumed = client.get(f"/api/v1/jobs/{job}/events", headers=headers | {"Last-Event-ID": last_id})
    blocks = [b for b in resumed.get_data(as_text=True).split("\n\n") if "event: progress" in b]
    events = [json.loads(b.rsplit("data: ", 1)[1]) for b in blocks]
    assert "event: snapshot" not in resumed.get_data(as_text=True)
    assert [(e["i"], e["state"]) for e in events] == [(0, "inferring"), (1, "failed")]
    assert events[-1]["failed"] == 1


# --- paging -------------------------------------------------------------------------------------------


def test_my_jobs_come_in_pages_that_new_jobs_do_not_shift(client, users):
    headers = users["alice"]["headers"]
    made = [post_job(client, headers, ("a.jpg", b"x")).get_json()["job_id"] for _ in range(5)]
    first = client.get("/api/v1/jobs?limit=2", headers=headers).get_json()
    assert [j["job_id"] for j in first["jobs"]] == made[:-3:-1] and first["next_cursor"]
    newer = post_job(client, headers, ("a.jpg", b"x")).get_json()["job_id"]  # arrives on top, shifts nothing
    second = client.get(first["next"], headers=headers).get_json()
    third = client.get(second["next"], headers=headers).get_json()
    assert [j["job_id"] for j in second["jobs"] + third["jobs"]] == made[2::-1]
    assert third["next"] is None and third["next_cursor"] is None
    everything = client.get("/api/v1/jobs", headers=headers).get_json()  # no limit: today's answer
    assert [j["job_id"] for j in everything["jobs"]] == [newer, *made[::-1]] and everything["next"] is None


# '²' and '٧' pass str.isdigit(); the forged cursors hold a NaN time, a negative time, a bool index.
@pytest.mark.parametrize("query", ["limit=", "limit=0", "limit=501", "limit=ten", "limit=%C2%B2", "limit=%D9%A7",
                                   "cursor=garbage", "cursor=eyJ0IjoxfQ", "cursor=eyJ0IjpOYU4sImlkIjoieCJ9",
                                   "cursor=eyJ0IjotMSwiaWQiOiJ4In0"])
def test_a_bad_limit_or_cursor_is_400_naming_it(client, users, query):
    r = client.get(f"/api/v1/jobs?{query}", headers=users["alice"]["headers"])
    assert r.status_code == 400 and query.split("=")[0] in error_of(r)["message"]


# A parameter given twice: each value alone is good, so only the repetition can make these 400s.
@pytest.mark.parametrize(("path", "query"), [("", "limit=5&limit=50"), ("", "cursor=&cursor="),
                                             ("/{job}", "items_limit=1&items_limit=2"),
                                             ("/{job}/items/0", "variant=input&variant=input"),
                                             ("/{job}/events", "after=0&after=0")])
def test_a_query_parameter_given_twice_is_400_naming_it(client, users, path, query):
    headers = users["alice"]["headers"]
    job = post_job(client, headers, ("a.jpg", small_jpeg())).get_json()["job_id"]
    r = client.get(f"/api/v1/jobs{path.format(job=job)}?{query}", headers=headers)
    name = query.split("=")[0]
    assert r.status_code == 400 and error_of(r) == {
        "code": "repeated_parameter", "message": f"{name} is sent 2 times; send it once"}
    if not path.endswith("events"):  # (a stream that opens would run for its whole lifetime here)
        once = client.get(f"/api/v1/jobs{path.format(job=job)}?{query.split('&')[0]}", headers=headers)
        assert once.status_code == 200


@pytest.mark.parametrize("query", ["items_limit=", "items_limit=%C2%B2", "items_cursor=eyJpIjotMn0",
                                   "items_cursor=eyJpIjp0cnVlfQ", "items_cursor=%C3%A9t%C3%A9"])
def test_a_bad_items_limit_or_cursor_is_400_naming_it(client, users, query):
    job = post_job(client, users["alice"]["headers"], ("a.jpg", b"x")).get_json()["job_id"]
    r = client.get(f"/api/v1/jobs/{job}?{query}", headers=users["alice"]["headers"])
    assert r.status_code == 400 and query.split("=")[0] in error_of(r)["message"]


def test_a_jobs_items_come_in_pages(client, users):
    headers = users["alice"]["headers"]
    names = [f"{n}.jpg" for n in range(5)]
    job = post_job(client, headers, *[(name, b"x") for name in names]).get_json()["job_id"]
    whole = client.get(f"/api/v1/jobs/{job}", headers=headers).get_json()
    assert [i["name"] for i in whole["items"]] == names and whole["items_next"] is None
    view, seen = client.get(f"/api/v1/jobs/{job}?items_limit=2", headers=headers).get_json(), []
    while True:
        seen += [(i["index"], i["name"]) for i in view["items"]]
        if not view["items_next"]:
            break
        view = client.get(view["items_next"], headers=headers).get_json()
    assert seen == list(enumerate(names))
    assert client.get(f"/api/v1/jobs/{job}?items_cursor=nope", headers=headers).status_code == 400


# --- the running-jobs cap under simultaneous submits ---------------------------------------------------


def test_simultaneous_submits_never_pass_the_running_jobs_cap(app, users, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from tasks.submit import record_job
    from web import api

    # Recorded but not enqueued: the web tests' workers (if started) would end these jobs mid-test.
    monkeypatch.setattr(api, "create_job", record_job)
    app.config["MAX_ACTIVE_JOBS"] = 3
    headers = users["alice"]["headers"]

    def submit(_):
        return post_job(app.test_client(), headers, ("a.jpg", b"x")).status_code

    client = app.test_client()
    # A submit that fails after taking its place (no files: 400) gives it back.
    assert [client.post("/api/v1/jobs", data={}, headers=headers).status_code for _ in range(3)] == [400] * 3
    with ThreadPoolExecutor(12) as pool:
        codes = sorted(pool.map(submit, range(12)))
    assert codes == [202] * 3 + [429] * 9
    # A deleted job frees its place.
    mine = client.get("/api/v1/jobs", headers=headers).get_json()["jobs"]
    assert client.delete(mine[0]["status_url"], headers=headers).status_code == 204
    assert post_job(client, headers, ("a.jpg", b"x")).status_code == 202


# --- errors keep their JSON shape and only the headers HTTP gives them ---------------------------


@pytest.mark.parametrize("body", ["[1]", '"x"', "5"])
def test_a_recompose_body_that_is_not_an_object_is_a_400_naming_it(client, users, workers, body):
    headers = users["alice"]["headers"]
    job = post_job(client, headers, ("a.jpg", small_jpeg(size=(96, 64)))).get_json()["job_id"]
    assert wait_done(client, headers, job)["status"] == "done"
    r = client.post(f"/api/v1/jobs/{job}/recompose", data=body, headers=headers, content_type="application/json")
    assert r.status_code == 400 and r.mimetype == "application/json"
    assert error_of(r)["code"] == "invalid_body" and "not an object" in error_of(r)["message"]


@pytest.mark.parametrize("request_kwargs", [{}, {"data": "null", "content_type": "application/json"},
                                            {"json": {}}, {"data": {"model": "u2netp"}}, {"json": {"size": "hd"}}])
def test_a_recompose_without_options_is_a_400_naming_them_not_a_rerun_of_the_defaults(client, users, workers,
                                                                                       request_kwargs):
    headers = users["alice"]["headers"]
    job = post_job(client, headers, ("a.jpg", small_jpeg(size=(96, 64))), format="webp").get_json()["job_id"]
    assert wait_done(client, headers, job)["status"] == "done"
    r = client.post(f"/api/v1/jobs/{job}/recompose", headers=headers, **request_kwargs)
    assert r.status_code == 400 and error_of(r)["code"] == "no_options"
    assert "alpha_threshold" in error_of(r)["message"] and "preset" in error_of(r)["message"]
    assert client.get(f"/api/v1/jobs/{job}", headers=headers).get_json()["options"]["format"] == "webp"


def test_a_405_under_the_api_is_json_with_allow(client, users):
    r = client.put("/api/v1/jobs", headers=users["alice"]["headers"])
    assert r.status_code == 405 and r.mimetype == "application/json"
    assert set(r.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert "Retry-After" not in r.headers


def test_retry_after_is_on_429s_only_and_a_429_is_json(app, client, users):
    app.config["SUBMIT_RATE_LIMIT"] = "1 per minute"
    headers = users["alice"]["headers"]
    listed = client.get("/api/v1/jobs", headers=headers)
    assert listed.status_code == 200 and "Retry-After" not in listed.headers
    assert "X-RateLimit-Remaining" in listed.headers  # the window is still told, under the limiter's names
    assert post_job(client, headers, ("a.jpg", b"x")).status_code == 202
    r = post_job(client, headers, ("a.jpg", b"x"))
    assert r.status_code == 429 and r.mimetype == "application/json" and error_of(r)["code"] == "too_many_requests"
    assert 0 < int(r.headers["Retry-After"]) <= 61  # the window's end, in whole seconds (limits reset_at)
