"""Portal sessions over the app: a copied cookie dies with logout, a new password or key; a lifetime; Secure."""

import time
from email.utils import parsedate_to_datetime

import pytest

from tests.web.conftest import make_app, two_users
from tests.web.test_users import CSRF_FIELD, csrf_token, log_in
from web.extensions import limiter

STRONG_KEY = "k3J9x2QpL7vN4mT8zR1cY6wB5hD0sF2a"


def copy_of_cookie(client, app):
    """Another browser holding the same session cookie, as anyone who copied it would."""
    thief = app.test_client()
    thief.set_cookie("session", client.get_cookie("session").value)
    return thief


def assert_refused(client, app):
    """The API (401) and the portal (to the login page, saying why) both refuse the client's cookie.

    Each from its own copy: the first refusal drops the sign-in from the cookie it answers.
    """
    api = copy_of_cookie(client, app).get("/api/v1/jobs")
    assert api.status_code == 401
    assert "session has ended" in api.get_json()["error"]["message"]
    browser = copy_of_cookie(client, app)
    portal = browser.get("/jobs")
    assert portal.status_code == 302
    assert portal.headers["Location"].startswith("/login?next=")
    assert "Your session has ended" in browser.get(portal.headers["Location"]).get_data(as_text=True)


@pytest.fixture
def signed_in(client, users):
    assert log_in(client, "alice", users["alice"]["password"]).status_code == 302
    return client


def test_a_cookie_copied_before_logout_is_refused_after_it(app, signed_in):
    thief = copy_of_cookie(signed_in, app)
    assert thief.get("/api/v1/jobs").status_code == 200  # the copy works while the session lives
    assert signed_in.post("/logout", data={"csrf_token": csrf_token(signed_in)}).status_code == 302
    assert_refused(thief, app)


def test_logout_ends_only_the_session_it_is_sent_from(app, signed_in, users):
    other_browser = app.test_client()
    log_in(other_browser, "alice", users["alice"]["password"])
    signed_in.post("/logout", data={"csrf_token": csrf_token(signed_in)})
    assert other_browser.get("/api/v1/jobs").status_code == 200


@pytest.mark.parametrize("end", [lambda store: store.set_password("alice", "the new password"),
                                 lambda store: store.revoke_key("alice")], ids=["new password", "new key"])
def test_a_new_password_or_key_ends_every_session_of_the_user(app, signed_in, users, end):
    thief = copy_of_cookie(signed_in, app)
    bob = app.test_client()
    log_in(bob, "bob", users["bob"]["password"])
    end(app.extensions["cutout"].users)
    assert_refused(thief, app)
    assert signed_in.get("/api/v1/jobs").status_code == 401
    assert bob.get("/api/v1/jobs").status_code == 200  # nobody else's session ended


def test_signing_in_again_ends_the_session_the_cookie_held(app, signed_in, users):
    before = copy_of_cookie(signed_in, app)
    log_in(signed_in, "alice", users["alice"]["password"])
    assert before.get("/api/v1/jobs").status_code == 401
    assert signed_in.get("/api/v1/jobs").status_code == 200


def test_a_cookie_from_before_sessions_had_ids_is_refused(app, users):
    old = app.test_client()
    with old.session_transaction() as session:
        session["user"] = "alice"  # all a cookie held before: signed, but with no session id
    assert old.get("/api/v1/jobs").status_code == 401


def test_a_session_is_refused_past_its_absolute_lifetime_however_busy(web_env):
    app = make_app(web_env, SESSION_HOURS=2 / 3600)
    try:
        users, client = two_users(app), app.test_client()
        log_in(client, "alice", users["alice"]["password"])
        started = time.monotonic()
        while time.monotonic() - started < 1.5:  # used all along: no use renews it
            assert client.get("/api/v1/jobs").status_code == 200
            time.sleep(0.2)
        time.sleep(max(0.0, 2.3 - (time.monotonic() - started)))
        assert_refused(client, app)
    finally:
        limiter.reset()


def test_a_shorter_lifetime_applies_to_sessions_already_issued(app, signed_in):
    assert signed_in.get("/api/v1/jobs").status_code == 200
    app.config["SESSION_HOURS"] = 0.5 / 3600  # what a restart with a smaller CUTOUT_SESSION_HOURS does
    time.sleep(0.7)
    assert signed_in.get("/api/v1/jobs").status_code == 401


def test_the_cookie_expires_with_the_session_and_is_not_renewed_by_each_request(client, users):
    response = log_in(client, "alice", users["alice"]["password"])
    cookie = response.headers["Set-Cookie"]
    expires = parsedate_to_datetime(cookie.split("Expires=")[1].split(";")[0]).timestamp()
    assert abs(expires - (time.time() + 12 * 3600)) < 60  # CUTOUT_SESSION_HOURS' default, not 31 days
    client.get("/jobs")  # the first page after sign-in puts its CSRF token in the session (a new cookie)
    for path in ("/jobs", "/api/v1/jobs", "/"):
        assert "Set-Cookie" not in client.get(path).headers, path


@pytest.mark.parametrize(("env", "secure"), [("production", True), ("development", False)])
def test_the_session_cookie_is_secure_in_production(web_env, env, secure):
    app = make_app({**web_env, "CUTOUT_ENV": env, "CUTOUT_SECRET_KEY": STRONG_KEY})
    try:
        password = two_users(app)["alice"]["password"]
        client = app.test_client()
        # Over https, as production is reached: a Secure cookie is sent back only there.
        login = "https://localhost/login"
        token = CSRF_FIELD.search(client.get(login).get_data(as_text=True)).group(1)
        response = client.post(login, data={"username": "alice", "password": password, "csrf_token": token},
                               headers={"Referer": login})  # flask-wtf checks it over https
        attributes = [a.strip().lower() for a in response.headers["Set-Cookie"].split(";")]
        assert ("secure" in attributes) is secure
        assert "httponly" in attributes and "samesite=lax" in attributes
        assert client.get("https://localhost/api/v1/jobs").status_code == 200
    finally:
        limiter.reset()


def test_a_login_post_that_also_carries_an_api_key_signs_in_by_the_form(client, users):
    token = csrf_token(client)
    response = client.post("/login", data={"username": "alice", "password": users["alice"]["password"],
                                           "csrf_token": token}, headers=users["bob"]["headers"])
    assert response.status_code == 302
    assert client.get("/api/v1/jobs").status_code == 200
