"""web/server.py under a real gunicorn (web/gunicorn_conf.py, two gevent workers) on a loopback port.

The app is a small Flask one, so these run without Redis; tests/reliability/test_abuse.py runs the
same limits against the whole service.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.local_cluster import free_port, wait_until
from tests.conftest import starts_servers
from web.openapi_paths import URI_LIMIT

ROOT = Path(__file__).resolve().parents[2]
APP = '''
from flask import Flask, request
app = Flask(__name__)

@app.post("/echo")
def echo():
    return str(len(request.get_data()))

@app.get("/ok")
def ok():
    return "ok"
'''


@pytest.fixture(scope="module")
@starts_servers
def port(tmp_path_factory):
    here = tmp_path_factory.mktemp("server")
    (here / "tinyapp.py").write_text(APP)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{here}{os.pathsep}{ROOT}", "CUTOUT_MAX_CONNECTIONS_PER_IP": "5",
           "CUTOUT_HEADER_TIMEOUT": "1", "CUTOUT_BODY_TIMEOUT": "1"}
    with open(here / "gunicorn.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:web.gunicorn_conf", "--workers", "2",
                                 "--bind", f"127.0.0.1:{port}", "tinyapp:app"], env=env, cwd=here, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _status(_connect(port), "GET /ok") == 200, 30, "gunicorn did not answer")
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket | None:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    except OSError:
        return None


def _status(sock: socket.socket | None, line: str, extra: bytes = b"\r\n") -> int:
    """Send a request line (and `extra`: the rest of the head, a body); the answer's status, 0 if none."""
    if sock is None:
        return 0
    with sock:
        try:
            sock.sendall(f"{line} HTTP/1.1\r\nHost: x\r\n".encode() + extra)
            reply = sock.recv(4096)
        except OSError:
            return 0
    return int(reply.split(b" ", 2)[1]) if reply else 0


def test_gunicorns_master_imports_none_of_the_apps_libraries():
    # gevent patches the standard library in each worker: a library the master imported first
    # (Celery's pools, urllib3's SSL context) would keep blocking, unpatched, in every worker.
    # The one module of tasks/ it reads is the Settings (pydantic and matting_core: none of those).
    code = ("import sys, web.gunicorn_conf; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'celery', 'kombu', 'redis', 'boto3', 'urllib3', "
            "'flask_limiter', 'prometheus_client'} | {m for m in sys.modules if m.startswith('tasks.')} "
            "- {'tasks.settings'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_one_address_past_its_cap_is_refused_across_both_workers_and_others_are_not(port):
    held = [_connect(port, "127.0.0.7") for _ in range(5)]
    try:
        time.sleep(0.3)
        refused = _connect(port, "127.0.0.7")
        refused.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = refused.recv(4096)
        refused.close()
        assert reply.startswith(b"HTTP/1.1 429") and b"CUTOUT_MAX_CONNECTIONS_PER_IP" in reply, reply
        assert _status(_connect(port, "127.0.0.8"), "GET /ok") == 200
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)  # the closes are seen and uncounted
    assert _status(_connect(port, "127.0.0.7"), "GET /ok") == 200


def test_a_request_line_past_the_documented_limit_is_the_documented_414(port):
    # The OpenAPI document promises this 414 on every operation (web/openapi_paths.py).
    head = len("GET /ok? HTTP/1.1")
    assert _status(_connect(port), "GET /ok?" + "q" * (URI_LIMIT - head)) == 200
    assert _status(_connect(port), "GET /ok?" + "q" * (URI_LIMIT - head + 1)) == 414


def test_a_head_that_does_not_arrive_in_time_is_closed(port):
    sock = _connect(port, "127.0.0.9")
    started = time.monotonic()
    sock.sendall(b"GET /ok HTTP/1.1\r\n")
    assert sock.recv(100) == b""  # closed by the server, not answered
    assert 0.5 < time.monotonic() - started < 4
    sock.close()


def test_a_body_that_stops_arriving_is_a_408(port):
    sock = _connect(port, "127.0.0.10")
    started = time.monotonic()
    status = _status(sock, "POST /echo", b"Content-Length: 100\r\n\r\nonly-part")
    assert status == 408 and time.monotonic() - started < 4
    assert _status(_connect(port, "127.0.0.10"), "POST /echo", b"Content-Length: 3\r\n\r\nabc") == 200
