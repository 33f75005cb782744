"""What one request and one user may store: the inflated total per request, the compression ratio
of archive members, and the per-user quota, through the API on real Redis and local storage.

Each refusal is checked to have stored nothing: no job, and no new file under the storage root.
"""

import io
import os
import threading
import zipfile

import pytest

from tasks.quota import Quota, QuotaExceeded
from tests.web.test_api import error_of, post_job, small_jpeg
from web import uploads

MB = 1024 * 1024


def zip_of(entries: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return out.getvalue()


def stored_files(app) -> set[str]:
    """The uploads in storage: what the web app writes. (The session's workers write and delete
    outputs, zips and undecodable inputs of other tests' jobs meanwhile, so only additions count.)"""
    root = app.extensions["cutout"].storage.root
    return {os.path.join(d, f) for d, _, names in os.walk(root) for f in names if os.path.basename(d) == "in"}


def post_archives(client, headers, archives: dict[str, bytes], images=()):
    data = {"archive": [(io.BytesIO(b), name) for name, b in archives.items()]}
    if images:
        data["images"] = [(io.BytesIO(b), name) for name, b in images]
    return client.post("/api/v1/jobs", data=data, headers=headers, content_type="multipart/form-data")


def assert_nothing_stored(app, client, headers, before: set[str]) -> None:
    assert client.get("/api/v1/jobs", headers=headers).get_json()["jobs"] == []
    assert stored_files(app) <= before


# --- the inflated total per request ----------------------------------------------------------------


def test_several_archives_together_over_the_request_total_are_413_storing_nothing(app, client, users):
    app.config["MAX_INFLATED_BYTES"] = 5 * MB
    headers, before = users["alice"]["headers"], stored_files(app)
    # Random bytes: no ratio to catch, every archive under its own cap, only the total is over.
    archives = {f"part{n}.zip": zip_of({f"{n}-{k}.jpg": os.urandom(MB) for k in range(2)}) for n in range(3)}
    r = post_archives(client, headers, archives)
    assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"
    message = error_of(r)["message"]
    assert "5 MB limit per request" in message and "CUTOUT_MAX_INFLATED_MB" in message and "part2.zip" in message
    assert_nothing_stored(app, client, headers, before)


def test_files_and_an_archive_count_towards_one_total(app, client, users):
    app.config["MAX_INFLATED_BYTES"] = 3 * MB
    headers, before = users["alice"]["headers"], stored_files(app)
    r = post_archives(client, headers, {"a.zip": zip_of({"x.jpg": os.urandom(MB)})},
                      images=[(f"{n}.jpg", os.urandom(MB)) for n in range(3)])
    assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"
    assert_nothing_stored(app, client, headers, before)


def test_a_request_just_under_the_total_passes(app, client, users):
    app.config["MAX_INFLATED_BYTES"] = 3 * MB
    archive = zip_of({f"{k}.jpg": os.urandom(MB) for k in range(2)})
    r = post_archives(client, users["alice"]["headers"], {"a.zip": archive}, images=[("b.jpg", os.urandom(MB))])
    assert r.status_code == 202 and r.get_json()["total"] == 3


def lying_sizes(archive: bytes, member: str, file_size: int | None = None, compress_size: int | None = None) -> bytes:
    """`archive` with `member`'s central directory entry claiming other sizes (what zipfile trusts)."""
    data = bytearray(archive)
    end = data.rindex(b"PK\x05\x06")  # the end record says where the central directory starts
    entry = int.from_bytes(data[end + 16:end + 20], "little")
    while data[entry + 46:entry + 46 + int.from_bytes(data[entry + 28:entry + 30], "little")] != member.encode():
        entry += 46 + sum(int.from_bytes(data[entry + k:entry + k + 2], "little") for k in (28, 30, 32))
    if compress_size is not None:
        data[entry + 20:entry + 24] = compress_size.to_bytes(4, "little")
    if file_size is not None:
        data[entry + 24:entry + 28] = file_size.to_bytes(4, "little")
    return bytes(data)


def test_a_header_that_understates_the_size_stores_no_more_than_it_claims(app, client, users):
    # zipfile stops inflating at the claimed size and fails the CRC: the member is a failed item.
    headers = users["alice"]["headers"]
    archive = lying_sizes(zip_of({"big.jpg": os.urandom(2 * MB), "ok.jpg": small_jpeg()}), "big.jpg", file_size=1000)
    r = post_archives(client, headers, {"liar.zip": archive})
    assert r.status_code == 202
    items = {it["name"]: it for it in client.get(r.get_json()["status_url"], headers=headers).get_json()["items"]}
    assert "could not be extracted" in items["liar.zip!big.jpg"]["error"]
    assert items["liar.zip!ok.jpg"]["state"] == "queued"


# --- the compression ratio -------------------------------------------------------------------------


def test_a_member_of_zeros_is_refused_as_a_bomb_from_its_header_without_inflating(app, client, users):
    headers, before = users["alice"]["headers"], stored_files(app)
    bomb = zip_of({"zeros-00.png": bytes(24 * MB), "ok.jpg": small_jpeg()})
    assert len(bomb) < 100_000
    r = post_archives(client, headers, {"bomb.zip": bomb})
    assert r.status_code == 413 and error_of(r)["code"] == "zip_bomb"
    message = error_of(r)["message"]
    assert "bomb.zip!zeros-00.png" in message and f"{uploads.MAX_RATIO}:1" in message and "24 MB" in message
    assert "by its header" in message
    assert_nothing_stored(app, client, headers, before)


def test_a_bomb_whose_header_claims_a_tame_ratio_is_caught_while_inflating(app, client, users):
    headers, before = users["alice"]["headers"], stored_files(app)
    honest = zip_of({"zeros.png": bytes(20 * MB), "padding.jpg": os.urandom(MB)}, zipfile.ZIP_DEFLATED)
    # Claims 1 MB compressed (20:1, tame); zipfile then reads on into the padding's bytes.
    bomb = lying_sizes(honest, "zeros.png", compress_size=MB)
    r = post_archives(client, headers, {"sly.zip": bomb})
    assert r.status_code == 413 and error_of(r)["code"] == "zip_bomb", r.get_data()
    assert "so far" in error_of(r)["message"], error_of(r)["message"]
    assert_nothing_stored(app, client, headers, before)


def test_a_small_flat_member_and_stored_members_are_not_taken_for_bombs(app, client, users):
    archive = zip_of({"flat.bmp": bytes(500_000)})  # 500 KB of zeros: far past 100:1, but under the floor
    stored = zip_of({"s.jpg": bytes(3 * MB)}, zipfile.ZIP_STORED)
    r = post_archives(client, users["alice"]["headers"], {"a.zip": archive, "b.zip": stored})
    assert r.status_code == 202 and r.get_json()["total"] == 2


# --- the per-user quota ----------------------------------------------------------------------------


def test_the_quota_refuses_past_the_limit_naming_the_numbers_and_frees_deleted_jobs(app, client, users):
    app.config["USER_QUOTA_BYTES"] = 3 * MB
    alice, bob = users["alice"]["headers"], users["bob"]["headers"]
    first = post_job(client, alice, ("a.jpg", os.urandom(2 * MB)))
    assert first.status_code == 202
    before = stored_files(app)
    r = post_job(client, alice, ("b.jpg", os.urandom(2 * MB)))
    assert r.status_code == 413 and error_of(r)["code"] == "quota_exceeded"
    message = error_of(r)["message"]
    assert "needs 2 MB" in message and "hold 2 MB" in message and "3 MB storage quota" in message
    assert "delete finished jobs" in message and "CUTOUT_USER_QUOTA_MB" in message
    assert stored_files(app) <= before  # refused before anything was stored
    assert post_job(client, bob, ("b.jpg", os.urandom(2 * MB))).status_code == 202  # per user
    assert client.delete(f"/api/v1/jobs/{first.get_json()['job_id']}", headers=alice).status_code == 204
    assert post_job(client, alice, ("b.jpg", os.urandom(2 * MB))).status_code == 202  # the deleted job's bytes freed


def test_an_expired_job_stops_counting(app, client, users):
    app.config["USER_QUOTA_BYTES"] = 3 * MB
    alice = users["alice"]["headers"]
    job = post_job(client, alice, ("a.jpg", os.urandom(2 * MB))).get_json()["job_id"]
    app.extensions["cutout"].jobs.delete(job)  # what the retention sweep does to an expired job's record
    assert post_job(client, alice, ("b.jpg", os.urandom(2 * MB))).status_code == 202


def test_removebg_is_under_the_same_quota(app, client, users):
    app.config["USER_QUOTA_BYTES"] = MB
    data = {"image_file": (io.BytesIO(os.urandom(2 * MB)), "big.jpg")}
    r = client.post("/v1.0/removebg", data=data, headers=users["alice"]["headers"], content_type="multipart/form-data")
    assert r.status_code == 413
    [error] = r.get_json()["errors"]
    assert error["code"] == "quota_exceeded" and "1 MB storage quota" in error["detail"]


def test_simultaneous_reservations_never_pass_the_limit_together(app):
    jobs = app.extensions["cutout"].jobs
    quota, granted, refused, names = Quota(jobs, limit=1000), [], [], iter(range(25))
    for n in range(25):  # the jobs' records, so that pruning keeps what is committed
        jobs.create(f"job{n}", "carol", ["a.jpg"], {})
    start = threading.Barrier(25)

    def take():
        start.wait()
        try:
            with quota.reserve("carol", 100) as reservation:
                reservation.commit(f"job{next(names)}")
                granted.append(reservation)
        except QuotaExceeded as err:
            refused.append(err)

    threads = [threading.Thread(target=take) for _ in range(25)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(granted), len(refused)) == (10, 15)
    assert quota.used("carol") == 1000 and {err.used for err in refused} == {1000}


def test_a_failed_store_gives_the_reservation_back(app):
    quota = Quota(app.extensions["cutout"].jobs, limit=1000)
    with pytest.raises(RuntimeError), quota.reserve("dave", 900):
        raise RuntimeError("storage down")
    with quota.reserve("dave", 900) as reservation:  # the room is there again
        assert reservation.needed == 900
    assert quota.used("dave") == 0
