"""Issue 12, items 1, 2 and 9 (a, c) replayed against a real `cutout serve`: no slow or listening
client holds the web tier, one user's streams never starve another, the running-jobs cap holds
under simultaneous submits, and Flower's password is on no command line.

Attack traffic comes from other loopback addresses (127.0.0.2 and up; any 127.x.x.x is a bind
address on Linux), so the per-address cap meets the attacker and not the victim.
"""

import io
import json
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from bench.served import Served, http, multipart
from tasks.jobs import JobStore
from tests.conftest import DATA, starts_servers
from tests.reliability.conftest import serve_for_module
from web.users import UserStore

pytestmark = pytest.mark.slow

STREAM_SECONDS = 4  # short, so that the lifetime test sees a stream end; the default is 300
PER_IP, STREAMS, ACTIVE_JOBS = 128, 8, 10  # the defaults of the settings under test


@pytest.fixture(scope="module")
@starts_servers
def served(tmp_path_factory):
    # The request rate limit is lifted so that every 429 here is the limit under test.
    yield from serve_for_module(tmp_path_factory, {"CUTOUT_STREAM_SECONDS": str(STREAM_SECONDS),
                                                    "CUTOUT_RATE_LIMIT": "100000 per minute"})


@pytest.fixture(scope="module")
def redis_url(served) -> str:
    return f"redis://127.0.0.1:{served.ports['REDIS_PORT']}/0"


def user(redis_url: str, name: str) -> dict:
    _, key = UserStore.from_url(redis_url).add(name)
    return {"X-Api-Key": key}


def recorded_job(redis_url: str, owner: str, items: int = 2) -> tuple[str, JobStore]:
    """A queued job recorded in Redis and never enqueued: it stays active for as long as a test needs."""
    store = JobStore.from_url(redis_url)
    job = f"{int(time.time() * 1e6):032x}"
    store.create(job, owner, [f"{n}.jpg" for n in range(items)], {})
    return job, store


def connect(served: Served, source: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", served.ports["PORT"]), timeout=10, source_address=(source, 0))


def head(sock: socket.socket, path: str, headers: dict | None = None) -> int:
    """Send a GET and read the response head; its status code (0 if the server closed at once)."""
    lines = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: cutout\r\n{lines}\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return 0
        if not chunk:
            return 0
        data += chunk
    return int(data.split(b" ", 2)[1])


def timed(url: str, headers: dict | None = None) -> tuple[int, float]:
    started = time.perf_counter()
    status, _ = http(url, headers=headers, timeout=30)
    return status, time.perf_counter() - started


class SlowHeaders(threading.Thread):
    """`count` connections that each send one header line every `every` s and never finish the head.

    A connection the server closes is opened again, as an attacker would: `cut` counts them.
    """

    def __init__(self, served: Served, count: int, source: str, every: float = 2.0):
        super().__init__(daemon=True)
        self.served, self.source, self.every = served, source, every
        self.socks = [self._open() for _ in range(count)]
        self.cut, self.stop = 0, threading.Event()

    def _open(self) -> socket.socket:
        sock = connect(self.served, self.source)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: cutout\r\n")
        return sock

    def run(self) -> None:
        while not self.stop.wait(self.every):
            for n, sock in enumerate(self.socks):
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                    sock.setblocking(False)
                    closed = sock.recv(1) == b""  # the server gave up on this head
                except BlockingIOError:
                    closed = False
                except OSError:
                    closed = True
                sock.setblocking(True)
                if closed:
                    sock.close()
                    self.cut += 1
                    self.socks[n] = self._open()

    def close(self) -> None:
        self.stop.set()
        self.join(10)
        for sock in self.socks:
            sock.close()


def test_slow_headers_and_one_users_streams_leave_another_user_served_within_a_second(served, redis_url):
    mallory, bob = user(redis_url, "mallory"), user(redis_url, "bob")
    job, _ = recorded_job(redis_url, "mallory")
    slow = SlowHeaders(served, 100, "127.0.0.2")
    slow.start()
    held, refused = [], []
    try:
        for _ in range(200):
            sock = connect(served, "127.0.0.3")
            started = time.perf_counter()
            status = head(sock, f"/api/v1/jobs/{job}/events", mallory)
            if status == 200:
                held.append(sock)  # open and listening, never read
            else:
                refused.append((status, time.perf_counter() - started))
                sock.close()
        assert len(held) == STREAMS, (len(held), refused[:3])
        assert {status for status, _ in refused} == {429} and len(refused) == 200 - STREAMS
        assert max(seconds for _, seconds in refused) < 1, sorted(s for _, s in refused)[-5:]

        for _ in range(5):  # still under attack: 100 slow heads, 8 streams held
            for path in ("/api/v1/jobs", "/healthz"):
                status, seconds = timed(served.url(path), bob)
                assert status == 200 and seconds < 1, (path, status, seconds)
        # Every slow head is cut within the header timeout (10 s), and the attacker's reconnections
        # cost the victim nothing either.
        deadline = time.monotonic() + 20
        while slow.cut < 100 and time.monotonic() < deadline:
            status, seconds = timed(served.url("/healthz"))
            assert status == 200 and seconds < 1, seconds
            time.sleep(0.5)
        assert slow.cut >= 100, slow.cut
    finally:
        slow.close()
        for sock in held:
            sock.close()


def test_the_connection_past_the_per_address_cap_is_refused_at_once(served):
    held = [connect(served, "127.0.0.4") for _ in range(PER_IP)]
    try:
        time.sleep(0.5)  # every one accepted and counted
        extra = connect(served, "127.0.0.4")
        started = time.perf_counter()
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: cutout\r\n\r\n")
        reply = extra.recv(4096)
        assert reply.startswith(b"HTTP/1.1 429") and b"CUTOUT_MAX_CONNECTIONS_PER_IP" in reply, reply
        assert time.perf_counter() - started < 1
        extra.close()
        assert http(served.url("/healthz"))[0] == 200  # another address is not affected
        held.pop().close()
        time.sleep(0.5)
        held.append(connect(served, "127.0.0.4"))
        assert head(held[-1], "/healthz") == 200  # a freed place is taken again
    finally:
        for sock in held:
            sock.close()


def read_stream(served: Served, path: str, headers: dict) -> tuple[list[tuple[str, str, dict]], float]:
    """Every (id, event, data) of one SSE response, read until the server ends it; and how long it lasted."""
    started = time.perf_counter()
    request = urllib.request.Request(served.url(path), headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read().decode()
    events = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            events.append((fields.get("id"), fields["event"], json.loads(fields["data"])))
    return events, time.perf_counter() - started


def test_a_stream_ends_after_its_lifetime_and_resumes_from_last_event_id_without_losing_an_event(served,
                                                                                                redis_url):
    carol = user(redis_url, "carol")
    job, store = recorded_job(redis_url, "carol", items=6)
    # Progress while the first stream is open, and while the client is between two streams.
    during = threading.Timer(1.0, lambda: [store.update_item(job, i, "inferring") for i in range(3)])
    during.start()
    first, lasted = read_stream(served, f"/api/v1/jobs/{job}/events", carol)
    during.join()
    assert STREAM_SECONDS - 0.5 < lasted < STREAM_SECONDS + 5, lasted
    assert first[0][1] == "snapshot" and [e[2]["i"] for e in first[1:]] == [0, 1, 2]
    for i in range(3, 6):
        store.update_item(job, i, "inferring")
    store.update_item(job, 0, "failed", error="not an image")
    # What EventSource does when a stream ends: reconnect with the last id it saw.
    second, _ = read_stream(served, f"/api/v1/jobs/{job}/events", carol | {"Last-Event-ID": first[-1][0]})
    assert [e[1] for e in second] == ["progress"] * 4  # no second snapshot
    received = [e[0] for e in first[1:] + second]
    stored = [eid for eid, _ in store.r.xrange(f"cutout:job:{job}:events")]
    assert received == stored  # every event once, in order
    # A bad position is refused before any stream starts.
    status, body = http(served.url(f"/api/v1/jobs/{job}/events?after=garbage"), headers=carol)
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid_position"


def small_jpeg() -> bytes:
    out = io.BytesIO()
    Image.open(DATA / "coffee.jpg").convert("RGB").resize((160, 120)).save(out, "JPEG", quality=85)
    return out.getvalue()


def test_simultaneous_submits_of_one_user_never_pass_the_running_jobs_cap(served, redis_url):
    dave = user(redis_url, "dave")
    # 60 images a job: none of them finishes while the 20 submits arrive.
    body, content_type = multipart([(f"{n}.jpg", small_jpeg()) for n in range(60)])
    start = threading.Barrier(20)

    def submit(_):
        start.wait()
        return http(served.url("/api/v1/jobs"), body, dave | {"Content-Type": content_type}, timeout=60)

    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(submit, range(20)))
    codes = sorted(status for status, _ in replies)
    try:
        assert codes == [202] * ACTIVE_JOBS + [429] * (20 - ACTIVE_JOBS), [r for _, r in replies]
        refused = [json.loads(reply) for status, reply in replies if status == 429]
        assert all(r["error"]["code"] == "too_many_jobs" for r in refused)
        assert len(json.loads(http(served.url("/api/v1/jobs"), headers=dave)[1])["jobs"]) == ACTIVE_JOBS
    finally:  # the workers stop on deleted jobs: the machine is free again for the next test
        for status, reply in replies:
            if status == 202:
                req = urllib.request.Request(served.url(json.loads(reply)["status_url"]), headers=dave,
                                             method="DELETE")
                urllib.request.urlopen(req, timeout=30).close()


def test_flowers_password_is_on_no_command_line(served):
    password = (served.home / "flower-password").read_bytes().strip()
    seen = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        seen += 1
        assert password not in args, cmdline
    assert seen > 6  # cutout serve's own processes were among them
