"""What an attacker would try that tests/web does not already: another user's finished job through the
portal and a session, CSRF tokens on every page, security headers on pages, image_url aimed inside the
network through the remove.bg endpoint, a production start without secrets, and Flower without a login.
"""

import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest
import yaml

from tasks.local_cluster import ROOT, free_port
from tests.conftest import starts_servers
from tests.web.conftest import make_app
from tests.web.loopback import LoopbackServer, body, redirect
from tests.web.test_api import job_routes, post_job, small_jpeg, wait_done
from tests.web.test_users import CSRF_FIELD, csrf_token, log_in
from web import config as web_config
from web import create_app
from web.extensions import limiter

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


@pytest.fixture
def done_job(client, users, workers) -> str:
    """A finished job of alice's: it has a zip, outputs and alpha maps that could leak."""
    headers = users["alice"]["headers"]
    job = post_job(client, headers, ("a.jpg", small_jpeg(size=(96, 64)))).get_json()["job_id"]
    assert wait_done(client, headers, job)["status"] == "done"
    return job


def every_route(job: str) -> list[tuple[str, str]]:
    base = f"/api/v1/jobs/{job}"
    return job_routes(job) + [("GET", f"{base}/items/0?variant=alpha"), ("GET", f"{base}/items/0?variant=output")]


def test_another_user_with_a_key_gets_404_on_every_route_of_a_finished_job(client, users, done_job):
    for method, url in every_route(done_job):
        r = client.open(url, method=method, headers=users["bob"]["headers"])
        assert r.status_code == 404 and r.mimetype == "application/json", (method, url)
        assert r.get_json()["error"]["code"] == "job_not_found" and b"PK" not in r.data
    alice = users["alice"]["headers"]
    assert client.get(f"/api/v1/jobs/{done_job}/download", headers=alice).status_code == 200  # it survived


def test_another_users_session_gets_404_on_the_job_page_the_stream_and_every_route(client, users, done_job):
    log_in(client, "bob", users["bob"]["password"])
    page = client.get(f"/jobs/{done_job}")
    assert page.status_code == 404 and "Not found" in page.get_data(as_text=True)
    assert "alice" not in page.get_data(as_text=True)
    token = csrf_token(client)
    for method, url in every_route(done_job):
        r = client.open(url, method=method, headers={"X-CSRFToken": token})  # past CSRF, so ownership decides
        assert r.status_code == 404 and r.get_json()["error"]["code"] == "job_not_found", (method, url)
    stream = client.get(f"/api/v1/jobs/{done_job}/events", headers={"Accept": "text/event-stream"})
    assert stream.status_code == 404 and stream.mimetype != "text/event-stream"
    assert client.get("/api/v1/jobs").get_json()["jobs"] == []
    assert client.get(f"/api/v1/jobs/{done_job}", headers=users["alice"]["headers"]).get_json()["status"] == "done"


def pages(client, users, job: str) -> dict[str, str]:
    log_in(client, "alice", users["alice"]["password"])
    return {url: client.get(url).get_data(as_text=True) for url in ("/", "/jobs", f"/jobs/{job}")}


def test_every_portal_form_carries_a_csrf_token_that_the_app_accepts(client, users):
    job = post_job(client, users["alice"]["headers"], ("a.jpg", b"x")).get_json()["job_id"]
    for url, html in pages(client, users, job).items():
        forms = re.findall(r"<form\b.*?</form>", html, re.S)
        assert forms, url  # at least the sign-out form
        for form in forms:
            if re.search(r'method="post"', form, re.I):
                assert CSRF_FIELD.search(form), (url, form[:200])
        [token] = CSRF_META.findall(html)  # what the pages' fetch() calls send as X-CSRFToken
        assert client.post("/api/v1/jobs", headers={"X-CSRFToken": token}).get_json()["error"]["code"] == "no_images"


def test_a_csrf_token_from_another_session_is_refused_at_login(app, users):
    stolen = csrf_token(app.test_client())  # the attacker's own session's token
    victim = app.test_client()
    victim.get("/login")
    r = victim.post("/login", data={"username": "alice", "password": users["alice"]["password"], "csrf_token": stolen})
    assert r.status_code == 400
    assert victim.get("/api/v1/jobs").status_code == 401


def assert_security_headers(response, where: str) -> None:
    h = response.headers
    assert h.get("X-Frame-Options") == "DENY" and h.get("X-Content-Type-Options") == "nosniff", where
    assert h.get("Referrer-Policy") in ("same-origin", "no-referrer", "strict-origin-when-cross-origin"), where
    csp = dict(d.strip().split(" ", 1) for d in h.get("Content-Security-Policy", "").split(";") if d.strip())
    assert csp.get("default-src") == "'self'" and csp.get("frame-ancestors") == "'none'", (where, csp)
    assert "unsafe-inline" not in csp.get("script-src", csp["default-src"]), (where, csp)
    assert csp.get("form-action") == "'self'" and csp.get("base-uri") == "'self'", (where, csp)


def test_login_and_portal_pages_carry_the_security_headers(client, users):
    login = client.get("/login")
    assert login.status_code == 200
    assert_security_headers(login, "/login")
    job = post_job(client, users["alice"]["headers"], ("a.jpg", b"x")).get_json()["job_id"]
    log_in(client, "alice", users["alice"]["password"])
    for url in ("/", "/jobs", f"/jobs/{job}", f"/jobs/{'0' * 32}", "/api/v1/jobs"):
        r = client.get(url)
        assert r.status_code in (200, 404), url
        assert_security_headers(r, url)


def test_pages_have_no_inline_script_the_policy_would_block(client, users):
    job = post_job(client, users["alice"]["headers"], ("a.jpg", b"x")).get_json()["job_id"]
    for url, html in pages(client, users, job).items():
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), url
        assert not re.search(r"\son[a-z]+\s*=", html), url  # onclick= and friends are inline script too


def test_the_default_rate_limit_is_counted_per_user_not_per_address(client, users):
    alice, bob = users["alice"]["headers"], users["bob"]["headers"]
    first = client.get("/api/v1/jobs", headers=alice)
    limit = int(first.headers["X-RateLimit-Limit"])  # fixed by the first app this process made: 600 by default
    if limit > 5000:
        pytest.skip(f"an earlier app set the process-wide default limit to {limit}/min")
    answers = [client.get("/api/v1/jobs", headers=alice).status_code for _ in range(limit)]
    assert answers[-1] == 429  # alice spent her budget...
    assert client.get("/api/v1/jobs", headers=bob).status_code == 200  # ...bob, at the same address, has his own


# --- image_url aimed inside the network ---------------------------------------------------------------

@pytest.fixture
def servers():
    """An allowed loopback server (a public site, as far as the app knows) and a forbidden one."""
    allowed, internal = LoopbackServer(), LoopbackServer({"/secret.jpg": body(small_jpeg())})
    yield allowed, internal
    allowed.close()
    internal.close()


@pytest.fixture
def url_client(web_env, servers):
    app = make_app(web_env, FETCH_ALLOW=servers[0].allow, FETCH_TIMEOUT=3.0)
    _, key = app.extensions["cutout"].users.add("alice")
    yield app.test_client(), {"X-Api-Key": key}
    limiter.reset()


TARGETS = {  # image_url (or a redirect's Location) -> the address the refusal names
    "loopback": ("http://127.0.0.1:{internal}/secret.jpg", "127.0.0.1"),
    "private 10/8": ("http://10.1.2.3/secret.jpg", "10.1.2.3"),
    "cloud metadata": ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "169.254.169.254"),
    "a name resolving to loopback": ("http://localhost:{internal}/secret.jpg", "127.0.0.1"),
}


@pytest.mark.parametrize("via_redirect", [False, True], ids=["direct", "via an allowed server's redirect"])
@pytest.mark.parametrize(("url", "address"), TARGETS.values(), ids=TARGETS.keys())
def test_removebg_image_url_inside_the_network_is_400_and_never_fetched(url_client, servers, url, address,
                                                                        via_redirect):
    client, headers = url_client
    allowed, internal = servers
    url = url.format(internal=internal.port)
    if via_redirect:
        allowed.routes["/photo.jpg"] = redirect(url)
        url = allowed.url("/photo.jpg")
    started = time.monotonic()
    r = client.post("/v1.0/removebg", data={"image_url": url}, headers=headers)
    assert r.status_code == 400, r.get_data(as_text=True)
    [error] = r.get_json()["errors"]
    assert error["code"] == "image_url_refused" and f"resolves to {address}," in error["detail"]
    assert internal.requests == [] and [q["path"] for q in allowed.requests] == (["/photo.jpg"] if via_redirect else [])
    assert time.monotonic() - started < 2  # refused before connecting, not after a connect timeout
    assert client.get("/api/v1/jobs", headers=headers).get_json()["jobs"] == []


# --- production mode ----------------------------------------------------------------------------------

def test_production_mode_refuses_to_start_without_a_secret_key(monkeypatch):
    with pytest.raises(RuntimeError, match="CUTOUT_ENV=production needs CUTOUT_SECRET_KEY"):
        web_config.from_env({"CUTOUT_ENV": "production"})
    monkeypatch.setenv("CUTOUT_ENV", "production")
    monkeypatch.delenv("CUTOUT_SECRET_KEY", raising=False)
    with pytest.raises(RuntimeError, match="CUTOUT_SECRET_KEY"):
        create_app({"TESTING": True})
    key = secrets.token_hex(32)
    config = web_config.from_env({"CUTOUT_ENV": "production", "CUTOUT_SECRET_KEY": key})
    assert config["SECRET_KEY"] == key and config["SESSION_COOKIE_SECURE"] is True
    with pytest.raises(RuntimeError, match="at least 32 random characters"):
        web_config.from_env({"CUTOUT_ENV": "production", "CUTOUT_SECRET_KEY": "k" * 64})


def published_placeholder_keys() -> list[str]:
    """The CUTOUT_SECRET_KEY values that ship in this repository: the template's and the dev overlay's."""
    example = yaml.safe_load((ROOT / "k8s/base/secret.example.yaml").read_text())["stringData"]["CUTOUT_SECRET_KEY"]
    dev = Path(ROOT / "k8s/overlays/dev/kustomization.yaml").read_text()
    return [example, re.search(r"CUTOUT_SECRET_KEY=(\S+)", dev)[1]]


@pytest.mark.parametrize("key", published_placeholder_keys(), ids=["secret.example.yaml", "dev overlay"])
def test_production_mode_refuses_a_secret_key_published_in_the_repository(key):
    with pytest.raises(RuntimeError, match="CUTOUT_SECRET_KEY"):
        web_config.from_env({"CUTOUT_ENV": "production", "CUTOUT_SECRET_KEY": key})


# --- Flower -------------------------------------------------------------------------------------------

def http_status(url: str, credentials: str | None = None) -> int:
    headers = {"Authorization": "Basic " + b64encode(credentials.encode()).decode()} if credentials else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.fixture(scope="module")
@starts_servers
def flower(web_env, tmp_path_factory):
    """`celery flower` with a basic-auth login, on the test Redis, started once for this module."""
    tmp_path, port = tmp_path_factory.mktemp("flower"), free_port()
    env = {k: v for k, v in web_env.items() if not k.startswith("FLOWER_")}
    cmd = [sys.executable, "-m", "celery", "-A", "tasks.app", "flower", f"--port={port}", "--address=127.0.0.1",
           "--basic-auth=watcher:s3cret-pass"]
    with open(tmp_path / "flower.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            http_status(base + "/healthcheck")
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"flower did not start: {(tmp_path / 'flower.log').read_text()[-2000:]}")
    yield base
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("path", ["/", "/workers", "/tasks", "/api/workers", "/api/tasks", "/broker"])
def test_flower_answers_401_without_its_login_and_200_with_it(flower, path):
    assert http_status(flower + path) == 401
    assert http_status(flower + path, "watcher:wrong") == 401
    assert http_status(flower + path, "admin:admin") == 401
    assert http_status(flower + path, "watcher:s3cret-pass") == 200
