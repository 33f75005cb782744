"""The login throttle on real Redis: per account and per address, a doubling wait, no scrypt while throttled."""

import threading
import time

import pytest

from tests.web.conftest import make_app, two_users
from tests.web.test_users import CSRF_FIELD
from web.extensions import limiter
from web.login_throttle import WINDOW_S, LoginThrottle


@pytest.fixture
def throttled_app(web_env):
    """An app with small caps: 3 failures per account, 6 per address, a first wait of 1 s."""
    app = make_app(web_env, LOGIN_FAILURES=3, LOGIN_FAILURES_PER_IP=6, LOGIN_WAIT_S=1.0)
    yield app
    limiter.reset()


@pytest.fixture
def scrypt_runs(throttled_app, monkeypatch) -> list:
    """The names whose password was checked: the real check runs, each call is written down."""
    store, calls = throttled_app.extensions["cutout"].users, []
    real = store.check_password
    monkeypatch.setattr(store, "check_password", lambda name, password: calls.append(name) or real(name, password))
    return calls


def try_login(client, name: str, password: str, **kwargs):
    token = CSRF_FIELD.search(client.get("/login", **kwargs).get_data(as_text=True)).group(1)
    return client.post("/login", data={"username": name, "password": password, "csrf_token": token}, **kwargs)


def test_past_the_account_cap_a_try_is_429_with_retry_after_and_runs_no_scrypt(throttled_app, scrypt_runs):
    users, client = two_users(throttled_app), throttled_app.test_client()
    assert [try_login(client, "alice", "wrong").status_code for _ in range(3)] == [401] * 3
    scrypt_runs.clear()
    refused = try_login(client, "alice", users["alice"]["password"])  # even the right password waits
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    page = refused.get_data(as_text=True)
    assert "Too many failed sign-ins" in page and "Try again in 1 s" in page and 'value="alice"' in page
    assert scrypt_runs == []
    assert client.get("/api/v1/jobs").status_code == 401


def test_the_wait_doubles_with_each_failure_past_the_cap_and_then_the_right_password_works(throttled_app):
    users, client = two_users(throttled_app), throttled_app.test_client()
    for _ in range(3):
        try_login(client, "alice", "wrong")
    waits = []
    for _ in range(2):
        waits.append(int(try_login(client, "alice", "wrong").headers["Retry-After"]))
        time.sleep(waits[-1] + 0.1)
        assert try_login(client, "alice", "wrong").status_code == 401  # one more try after each wait
    assert waits == [1, 2]
    assert try_login(client, "alice", "wrong").headers["Retry-After"] == "4"
    time.sleep(4.1)
    assert try_login(client, "alice", users["alice"]["password"]).status_code == 302


def test_one_account_throttled_leaves_another_account_alone(throttled_app):
    users, client = two_users(throttled_app), throttled_app.test_client()
    for _ in range(3):
        try_login(client, "alice", "wrong")
    assert try_login(client, "alice", "wrong").status_code == 429
    assert try_login(client, "bob", users["bob"]["password"]).status_code == 302


def test_a_success_clears_the_account_count(throttled_app):
    users, client = two_users(throttled_app), throttled_app.test_client()
    for _ in range(2):
        try_login(client, "alice", "wrong")
    assert try_login(client, "alice", users["alice"]["password"]).status_code == 302
    assert [try_login(client, "alice", "wrong").status_code for _ in range(3)] == [401] * 3


def test_past_the_address_cap_every_account_waits_but_other_addresses_do_not(throttled_app, scrypt_runs):
    users, client = two_users(throttled_app), throttled_app.test_client()
    # Six names, one failure each: no account reaches its cap, the address does.
    assert {try_login(client, f"guess{n}", "wrong").status_code for n in range(6)} == {401}
    scrypt_runs.clear()
    refused = try_login(client, "bob", users["bob"]["password"])
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert scrypt_runs == []
    elsewhere = {"environ_base": {"REMOTE_ADDR": "192.0.2.7"}}
    assert try_login(throttled_app.test_client(), "bob", users["bob"]["password"], **elsewhere).status_code == 302


def test_unknown_names_are_throttled_like_real_ones(throttled_app):
    client = throttled_app.test_client()
    for _ in range(3):
        try_login(client, "nobody", "wrong")
    assert try_login(client, "nobody", "wrong").status_code == 429  # the answer tells no name apart


@pytest.mark.parametrize(("hops", "separate"), [(0, False), (1, True)])
def test_x_forwarded_for_counts_only_behind_trusted_proxies(web_env, hops, separate):
    app = make_app(web_env, LOGIN_FAILURES=3, LOGIN_FAILURES_PER_IP=4, LOGIN_WAIT_S=1.0, TRUSTED_PROXY_HOPS=hops)
    try:
        client = app.test_client()
        for n in range(4):  # a new claimed address each time
            try_login(client, f"guess{n}", "wrong", headers={"X-Forwarded-For": f"198.51.100.{n}"})
        status = try_login(client, "guess9", "wrong", headers={"X-Forwarded-For": "198.51.100.9"}).status_code
        # Without a proxy the header is the client's to write: it must not get round the address cap.
        assert status == (401 if separate else 429)
    finally:
        limiter.reset()


def test_tries_sent_at_once_count_before_any_password_is_checked(throttled_app):
    throttle = LoginThrottle(throttled_app.extensions["cutout"].users.r, account_cap=5, address_cap=1000)
    allowed, start = [], threading.Barrier(20)

    def one_try():
        start.wait()
        allowed.append(throttle.attempt("alice", "203.0.113.1") == 0)

    threads = [threading.Thread(target=one_try) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 5  # the other 15 never reach scrypt


def test_counts_expire_and_the_longest_wait_is_the_window(throttled_app):
    r = throttled_app.extensions["cutout"].users.r
    throttle = LoginThrottle(r, account_cap=1, address_cap=1000, first_wait_s=600)
    assert throttle.attempt("alice", "203.0.113.1") == 0
    assert throttle.attempt("alice", "203.0.113.1") == 600
    r.delete(*r.keys("cutout:login:lock:account:*"))
    throttle.attempt("alice", "203.0.113.1")
    assert throttle.attempt("alice", "203.0.113.1") == WINDOW_S  # 1,200 s doubled, capped at 15 minutes
    assert all(0 < r.ttl(key) <= 2 * WINDOW_S for key in r.keys("cutout:login:*"))
