"""Issue 12, items 6 and 9 (login): replayed over HTTP against a real `cutout serve`.

A cookie copied before logout, a new password (`cutout users passwd`) or a new key (`cutout users
revoke-key`) is refused by the portal and the API; a session past CUTOUT_SESSION_HOURS is refused
however busy; the cookie is Secure in production; bad passwords get 429 past the account cap and
the address cap, and a throttled try costs the web process no scrypt.
"""

import http.client
import os
import re
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
import redis

from bench.served import CUTOUT, Served, descendants
from tests.conftest import starts_servers
from web.users import UserStore

pytestmark = pytest.mark.slow

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
FAST = {"CUTOUT_DEFAULT_MODEL": "u2netp", "CUTOUT_WARMUP": "0"}  # no job runs here: no model to load


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    text: str


class Browser:
    """One session cookie, kept by hand: a copied cookie is just this header value sent from elsewhere."""

    def __init__(self, served: Served, cookie: str | None = None):
        self.port, self.cookie, self.set_cookie = served.ports["PORT"], cookie, None

    def open(self, method: str, path: str, form: dict | None = None) -> Answer:
        headers = {"Cookie": f"session={self.cookie}"} if self.cookie else {}
        body = None
        if form is not None:
            body, headers["Content-Type"] = urlencode(form), "application/x-www-form-urlencoded"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body, headers)
            response = connection.getresponse()
            answer = Answer(response.status, response.headers, response.read().decode())
        finally:
            connection.close()
        for cookie in answer.headers.get_all("Set-Cookie") or []:
            if cookie.startswith("session="):
                self.set_cookie = cookie
                self.cookie = cookie.split(";")[0].removeprefix("session=") or None
        return answer

    def post_form(self, path: str, fields: dict, token_from: str = "/login") -> Answer:
        token = CSRF.search(self.open("GET", token_from).text).group(1)
        return self.open("POST", path, fields | {"csrf_token": token})

    def log_in(self, name: str, password: str) -> Answer:
        return self.post_form("/login", {"username": name, "password": password})


def assert_refused(served: Served, cookie: str) -> None:
    """The portal sends the copy to the login page; the API answers 401 saying the session ended."""
    portal = Browser(served, cookie).open("GET", "/jobs")
    assert portal.status == 302 and portal.headers["Location"].startswith("/login"), portal.status
    api = Browser(served, cookie).open("GET", "/api/v1/jobs")
    assert api.status == 401 and "session has ended" in api.text, (api.status, api.text)


def assert_accepted(served: Served, cookie: str) -> None:
    assert Browser(served, cookie).open("GET", "/jobs").status == 200
    assert Browser(served, cookie).open("GET", "/api/v1/jobs").status == 200


def serve(home: Path, env: dict):
    served = Served(home, env=FAST | env)
    try:
        yield served.wait_ready()
    finally:
        served.stop()


def redis_url(served: Served) -> str:
    return f"redis://127.0.0.1:{served.ports['REDIS_PORT']}/0"


def cli_env(served: Served) -> dict:
    return {**os.environ, "CUTOUT_REDIS_URL": redis_url(served)}


@pytest.fixture(scope="module")
@starts_servers
def production(tmp_path_factory):
    yield from serve(tmp_path_factory.mktemp("serve-production"), {"CUTOUT_ENV": "production"})


@pytest.fixture(scope="module")
@starts_servers
def short(tmp_path_factory):
    """Sessions of 3.6 s; 3 failures per account and 6 per address before the 30 s waits begin."""
    yield from serve(tmp_path_factory.mktemp("serve-short"), {
        "CUTOUT_SESSION_HOURS": "0.001", "CUTOUT_LOGIN_FAILURES": "3", "CUTOUT_LOGIN_FAILURES_PER_IP": "6",
        "CUTOUT_LOGIN_WAIT_S": "30"})


@pytest.fixture
def account(production, request) -> tuple[str, str]:
    """A user of its own per test (name, password), made in the served Redis."""
    name = re.sub(r"[^a-z0-9]", "", request.node.name.lower())[:40]
    password, _ = UserStore.from_url(redis_url(production)).add(name)
    return name, password


def signed_in(served: Served, name: str, password: str) -> Browser:
    browser = Browser(served)
    assert browser.log_in(name, password).status == 302
    return browser


# --- sessions that end (item 6) --------------------------------------------------------------------


def test_a_cookie_copied_before_logout_is_refused_after_it(production, account):
    browser = signed_in(production, *account)
    copied = browser.cookie
    assert_accepted(production, copied)
    assert browser.post_form("/logout", {}, token_from="/jobs").status == 302
    assert_refused(production, copied)


def test_logout_leaves_the_same_users_other_session(production, account):
    laptop, phone = signed_in(production, *account), signed_in(production, *account)
    laptop.post_form("/logout", {}, token_from="/jobs")
    assert_accepted(production, phone.cookie)


def test_cutout_users_passwd_ends_every_session_of_the_user(production, account):
    name, old = account
    copies = [signed_in(production, name, old).cookie for _ in range(2)]
    demo = signed_in(production, "demo", production.demo()["password"]).cookie
    changed = subprocess.run([*CUTOUT, "users", "passwd", name], input="a new password for this test\n",
                             env=cli_env(production), capture_output=True, text=True, timeout=60)
    assert changed.returncode == 0, changed.stderr
    for copied in copies:
        assert_refused(production, copied)
    assert_accepted(production, demo)  # another user's session lives on
    assert Browser(production).log_in(name, old).status == 401
    assert Browser(production).log_in(name, "a new password for this test").status == 302


def test_cutout_users_revoke_key_ends_every_session_of_the_user(production, account):
    copied = signed_in(production, *account).cookie
    revoked = subprocess.run([*CUTOUT, "users", "revoke-key", account[0]], env=cli_env(production),
                             capture_output=True, text=True, timeout=60)
    assert revoked.returncode == 0, revoked.stderr
    assert_refused(production, copied)


def test_the_session_cookie_is_secure_httponly_and_lax_in_production(production, account):
    browser = signed_in(production, *account)
    attributes = [a.strip().lower() for a in browser.set_cookie.split(";")]
    assert {"secure", "httponly", "samesite=lax"} <= set(attributes), browser.set_cookie


def test_a_session_is_refused_past_its_absolute_lifetime_however_busy(short):
    name, password = "lifetime", "a password for lifetime"
    UserStore.from_url(redis_url(short)).add(name, password)
    reset_throttle(short)
    copied = signed_in(short, name, password).cookie
    started = time.monotonic()
    while time.monotonic() - started < 2.5:  # in use all along: no request renews it
        assert Browser(short, copied).open("GET", "/api/v1/jobs").status == 200
        time.sleep(0.3)
    time.sleep(max(0.0, 4.0 - (time.monotonic() - started)))
    assert_refused(short, copied)


# --- the login throttle (item 9) -------------------------------------------------------------------


def reset_throttle(served: Served) -> None:
    """Each throttle test starts from no failures (they share 127.0.0.1 and one served Redis)."""
    r = redis.Redis.from_url(redis_url(served))
    keys = list(r.scan_iter("cutout:login:*"))
    if keys:
        r.delete(*keys)


def web_cpu_s(served: Served) -> float:
    """User + system CPU seconds of the web processes (gunicorn's master and workers) so far."""
    master = served.pid_of("web")
    total = 0
    for pid in {master} | descendants(master):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / 100  # clock ticks (USER_HZ)


def timed_tries(served: Served, names: list[str], password: str) -> tuple[list[int], list[float], float]:
    """(statuses, seconds each, web CPU seconds in all) of one login per name."""
    statuses, seconds = [], []
    browser = Browser(served)
    cpu = web_cpu_s(served)
    for name in names:
        token = CSRF.search(browser.open("GET", "/login").text).group(1)
        started = time.perf_counter()
        answer = browser.open("POST", "/login", {"username": name, "password": password, "csrf_token": token})
        seconds.append(time.perf_counter() - started)
        statuses.append(answer.status)
        if answer.status == 429:
            assert int(answer.headers["Retry-After"]) >= 1 and "Try again in" in answer.text
    return statuses, seconds, web_cpu_s(served) - cpu


def test_an_account_is_throttled_after_the_nth_bad_password_and_a_throttled_try_runs_no_scrypt(short):
    UserStore.from_url(redis_url(short)).add("target", "the right password")
    reset_throttle(short)
    statuses, failed_s, failed_cpu = timed_tries(short, ["target"] * 3, "wrong")
    assert statuses == [401] * 3
    statuses, throttled_s, throttled_cpu = timed_tries(short, ["target"] * 10, "the right password")
    assert statuses == [429] * 10  # the right password too: nothing is checked while it waits
    per_failure, per_throttled = failed_cpu / 3, throttled_cpu / 10
    print(f"login: failed try {statistics.median(failed_s) * 1000:.0f} ms, "
          f"{per_failure * 1000:.0f} ms web CPU; throttled {statistics.median(throttled_s) * 1000:.0f} ms, "
          f"{per_throttled * 1000:.0f} ms web CPU")
    assert per_throttled < per_failure / 4, (per_throttled, per_failure)
    assert statistics.median(throttled_s) < statistics.median(failed_s) / 2


def test_an_address_is_throttled_after_the_nth_bad_password_across_accounts(short):
    UserStore.from_url(redis_url(short)).add("victim", "the right password")
    reset_throttle(short)
    statuses, _, _ = timed_tries(short, [f"guess{n}" for n in range(6)], "wrong")
    assert statuses == [401] * 6  # one failure per name: no account's cap, the address's
    statuses, _, _ = timed_tries(short, ["victim", "guess99"], "the right password")
    assert statuses == [429, 429]
    reset_throttle(short)
    assert Browser(short).log_in("victim", "the right password").status == 302
