"""Both storage backends through one interface: a local directory and a real moto_server over HTTP."""

import http.server
import multiprocessing
import os
import threading
import time
import urllib.request
from contextlib import closing

import pytest
from botocore.exceptions import ClientError

from tasks.local_cluster import wait_until
from tasks.storage import TRANSIENT_ERRORS, KeyNotFound, LocalStorage, MiB, S3Storage, make_storage, s3_client
from tests.tasks.conftest import REGION

# Keys that differ only after "jobs/ab": a string prefix must tell them apart like S3 does.
KEYS = ["jobs/ab/1", "jobs/ab/sub/2", "jobs/abc/x", "jobs/a/y", "jobs/b/z", "other/ab"]


def files_under(path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())


def failing_chunks(n: int):
    for _ in range(n):
        yield b"x" * 1000
    raise RuntimeError("the source broke")


def test_put_then_get_returns_the_same_bytes(storage):
    data = bytes(range(256)) * 10
    storage.put("jobs/j1/in/0", data)
    assert storage.get("jobs/j1/in/0") == data


def test_put_overwrites_with_the_new_bytes_only(storage):
    storage.put("k/a", b"0123456789")
    storage.put("k/a", b"new")
    assert storage.get("k/a") == b"new"


def test_open_streams_the_object_in_pieces(storage):
    storage.put("k/a", b"abcdefghij")
    with closing(storage.open("k/a")) as stream:
        assert stream.read(3) == b"abc"
        assert stream.read(4) == b"defg"
        assert stream.read() == b"hij"


def test_exists_only_for_stored_objects(storage):
    storage.put("jobs/a/x", b"1")
    assert storage.exists("jobs/a/x")
    assert not storage.exists("jobs/a/y")
    assert not storage.exists("jobs/a")  # a "directory" is not an object on either backend


@pytest.mark.parametrize("key", ["jobs/none", "jobs/a"])
@pytest.mark.parametrize("read", ["get", "open"])
def test_reading_a_missing_key_raises_key_not_found(storage, read, key):
    storage.put("jobs/a/x", b"1")
    with pytest.raises(KeyNotFound):
        getattr(storage, read)(key)


@pytest.mark.parametrize(
    ("prefix", "deleted"),
    [
        ("jobs/ab", {"jobs/ab/1", "jobs/ab/sub/2", "jobs/abc/x"}),
        ("jobs/ab/", {"jobs/ab/1", "jobs/ab/sub/2"}),
        ("jobs/a", {"jobs/ab/1", "jobs/ab/sub/2", "jobs/abc/x", "jobs/a/y"}),
        ("j", set(KEYS) - {"other/ab"}),
        ("jobs/a/y", {"jobs/a/y"}),
        ("nothing/", set()),
    ],
)
def test_delete_prefix_is_a_string_prefix_and_returns_the_count(storage, prefix, deleted):
    for key in KEYS:
        storage.put(key, key.encode())
    assert storage.delete_prefix(prefix) == len(deleted)
    assert {key for key in KEYS if not storage.exists(key)} == deleted
    for key in set(KEYS) - deleted:
        assert storage.get(key) == key.encode()


def test_delete_prefix_refuses_an_empty_prefix(storage):
    storage.put("jobs/a/x", b"1")
    with pytest.raises(ValueError, match="non-empty prefix"):
        storage.delete_prefix("")
    assert storage.exists("jobs/a/x")


def test_local_delete_prefix_removes_the_emptied_directories(local_storage):
    for key in KEYS:
        local_storage.put(key, b"1")
    local_storage.delete_prefix("jobs/ab")
    assert sorted(p.name for p in (local_storage.root / "jobs").iterdir()) == ["a", "b"]


def _write_until_stopped(root, stop) -> None:
    storage, n = LocalStorage(root), 0
    while not stop.is_set():
        storage.put(f"jobs/busy/{n % 50}.png", b"x" * 4096)
        n += 1


def test_local_delete_prefix_while_a_writer_adds_objects_does_not_fail(local_storage):
    # A task still writing into a job being deleted (another process, as a worker is): its temp files
    # appear and are renamed while the walk runs, so files listed a moment ago are gone at their turn.
    stop = multiprocessing.Event()
    writer = multiprocessing.Process(target=_write_until_stopped, args=(local_storage.root, stop))
    writer.start()
    try:
        wait_until(lambda: (local_storage.root / "jobs" / "busy").exists(), 30, "the writer never wrote")
        for _ in range(2000):
            local_storage.delete_prefix("jobs/busy/")
    finally:
        stop.set()
        writer.join(10)
    local_storage.delete_prefix("jobs/busy/")
    assert not (local_storage.root / "jobs" / "busy").exists()


def test_local_delete_prefix_cannot_climb_out_of_the_root(local_storage, tmp_path):
    (tmp_path / "outside").write_bytes(b"keep")
    with pytest.raises(ValueError):
        local_storage.delete_prefix("../out")
    assert (tmp_path / "outside").read_bytes() == b"keep"


def test_put_stream_over_the_multipart_threshold_round_trips(storage):
    data = os.urandom(9 * MiB + 12345)
    # Odd sizes and empty chunks, so parts are cut across chunk boundaries.
    sizes = [100_003, 0, 7, 65_536]
    chunks, at = [], 0
    while at < len(data):
        n = sizes[len(chunks) % len(sizes)]
        chunks.append(data[at : at + n])
        at += n
    assert storage.put_stream("jobs/big/cutout.zip", iter(chunks)) == len(data)
    assert storage.get("jobs/big/cutout.zip") == data


def test_s3_put_stream_over_the_threshold_uploads_in_parts(s3_server, s3_storage):
    chunks = (b"z" * 64 * 1024 for _ in range(9 * 16))  # 9 MiB: one 8 MiB part and a 1 MiB one
    s3_storage.put_stream("big", chunks)
    head = s3_client(s3_server, REGION).head_object(Bucket=s3_storage.bucket, Key="big")
    assert head["ContentLength"] == 9 * MiB
    assert head["ETag"].endswith('-2"')  # S3 marks multipart ETags with the part count


def test_put_stream_of_no_chunks_stores_an_empty_object(storage):
    assert storage.put_stream("k/empty", iter([])) == 0
    assert storage.exists("k/empty")
    assert storage.get("k/empty") == b""


def test_newest_is_never_earlier_than_the_write(storage):
    # Mid-second, so a time cut to whole seconds (an S3 listing's LastModified) would read 0.3 s early.
    while not 0.3 < time.time() % 1 < 0.7:
        time.sleep(0.05)
    before = time.time()
    storage.put("jobs/a/in/0", b"x")
    after = time.time()
    assert storage.newest("jobs/b/") is None
    # 10 ms: the file system stamps with a clock that may lag time.time() by a tick.
    assert before - 0.01 <= storage.newest("jobs/a/") <= after + 1


@pytest.mark.parametrize("chunks_before_failure", [3, 9 * 1024 + 100])  # under and over the 8 MiB threshold
def test_failed_put_stream_stores_no_object(storage, chunks_before_failure):
    with pytest.raises(RuntimeError, match="the source broke"):
        storage.put_stream("jobs/j/cutout.zip", failing_chunks(chunks_before_failure))
    assert not storage.exists("jobs/j/cutout.zip")


def test_failed_put_stream_keeps_the_old_object_and_leaves_no_temp_file(local_storage):
    local_storage.put("jobs/j/cutout.zip", b"old")
    with pytest.raises(RuntimeError):
        local_storage.put_stream("jobs/j/cutout.zip", failing_chunks(5))
    assert local_storage.get("jobs/j/cutout.zip") == b"old"
    assert files_under(local_storage.root) == ["jobs/j/cutout.zip"]


def test_local_url_is_none(local_storage):
    local_storage.put("k/a", b"1")
    assert local_storage.url("k/a") is None


def test_s3_url_is_a_presigned_link_that_downloads_the_object(s3_storage):
    data = os.urandom(5000)
    s3_storage.put("jobs/j/out/0.png", data)
    url = s3_storage.url("jobs/j/out/0.png", expires=60)
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=60" in url
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.read() == data


def test_s3_url_for_a_public_endpoint_is_signed_for_that_address_and_downloads(s3_storage):
    # The same moto_server under another name, as a browser reaches compose's MinIO on localhost.
    public = s3_storage.endpoint_url.replace("127.0.0.1", "localhost")
    data = os.urandom(5000)
    s3_storage.put("jobs/j/cutout-j.zip", data)
    url = s3_storage.url("jobs/j/cutout-j.zip", expires=60, endpoint_url=public)
    assert url.startswith(f"{public}/{s3_storage.bucket}/jobs/j/cutout-j.zip?") and "X-Amz-Signature=" in url
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.read() == data


BAD_KEYS = [
    "",
    "/",
    "../escaped",
    "jobs/../../escaped",
    "..",
    ".",
    "jobs/./x",
    "jobs//x",
    "jobs/x/",
    "jobs\\..\\..\\escaped",
    "jobs/x\x00y",
    "jobs/x\ny",
    "jobs/x\x1fy",
    "jobs/x\x7fy",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_local_put_refuses_unsafe_keys_and_writes_nothing(tmp_path, key):
    storage = LocalStorage(tmp_path / "storage")
    with pytest.raises(ValueError, match="storage key"):
        storage.put(key, b"x")
    assert files_under(tmp_path) == []


def test_local_put_refuses_an_absolute_key_into_another_directory(tmp_path):
    storage = LocalStorage(tmp_path / "storage")
    with pytest.raises(ValueError, match="must be relative"):
        storage.put(str(tmp_path / "escaped"), b"x")
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("method", ["get", "open", "exists", "url"])
@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a//b", "a\\b", "a\rb"])
def test_local_reads_refuse_unsafe_keys(local_storage, method, key):
    with pytest.raises(ValueError, match="storage key"):
        getattr(local_storage, method)(key)


def test_local_refuses_a_key_that_is_not_a_string(local_storage):
    with pytest.raises(ValueError, match="non-empty string"):
        local_storage.put(b"jobs/x", b"1")


def test_make_storage_local_keeps_objects_under_home(tmp_path):
    storage = make_storage("local", home=tmp_path, bucket=None, endpoint_url=None, region=None)
    storage.put("jobs/j/in/0", b"1")
    assert (tmp_path / "storage" / "jobs" / "j" / "in" / "0").read_bytes() == b"1"


def test_make_storage_s3_uses_the_bucket():
    storage = make_storage("s3", home=None, bucket="jobs", endpoint_url="http://127.0.0.1:1", region=REGION)
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.endpoint_url, storage.region) == ("jobs", "http://127.0.0.1:1", REGION)


@pytest.mark.parametrize("bucket", [None, ""])
def test_make_storage_s3_without_bucket_names_the_setting(tmp_path, bucket):
    with pytest.raises(ValueError, match="set CUTOUT_S3_BUCKET"):
        make_storage("s3", home=tmp_path, bucket=bucket, endpoint_url=None, region=None)


def test_make_storage_unknown_kind_lists_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"unknown storage kind 'gcs'; choose one of: local, s3"):
        make_storage("gcs", home=tmp_path, bucket="b", endpoint_url=None, region=None)


def test_s3_exists_on_a_missing_bucket_raises_instead_of_answering_false(s3_server):
    storage = S3Storage("no-such-bucket", endpoint_url=s3_server, region=REGION)
    with pytest.raises(ClientError):
        storage.exists("jobs/x/in/0")


class _CutShort(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint that dies in the middle of a body, as a store going away mid-read does."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", "8000")
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        self.wfile.write(b"x" * 12)
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_a_body_cut_short_by_the_store_is_an_error_the_tasks_retry(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CutShort)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        store = S3Storage("bucket", endpoint_url=f"http://127.0.0.1:{server.server_port}", region=REGION)
        with pytest.raises(TRANSIENT_ERRORS):
            store.get("jobs/a/input/0")
    finally:
        server.shutdown()
        server.server_close()
