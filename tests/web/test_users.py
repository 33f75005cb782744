"""Accounts on real Redis (UserStore) and how the web app lets them in: API keys, the login form, CSRF."""

import re
import time
from urllib.parse import urlencode, urljoin, urlsplit

import pytest

from web.users import UserError

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def store(app):
    return app.extensions["cutout"].users


def redis_strings(r) -> list[str]:
    """Every key, hash field, member and value in the database, as text."""
    found = []
    for key in r.scan_iter("*"):
        found.append(key)
        kind = r.type(key)
        if kind == "hash":
            for field, value in r.hgetall(key).items():
                found += [field, value]
        elif kind == "string":
            found.append(r.get(key))
        elif kind in ("set", "zset", "list"):
            found += {"set": r.smembers, "zset": lambda k: r.zrange(k, 0, -1), "list": lambda k: r.lrange(k, 0, -1)}[
                kind](key)
    return [str(s) for s in found]


# --- UserStore ---------------------------------------------------------------------------------------


def test_add_returns_a_password_and_a_ck_api_key(store):
    password, key = store.add("carol")
    assert len(password) >= 12
    assert key.startswith("ck_") and len(key) >= 40
    assert store.check_password("carol", password)
    assert store.user_for_key(key) == "carol"


def test_add_keeps_a_password_given_to_it(store):
    password, _ = store.add("carol", "correct horse battery staple")
    assert password == "correct horse battery staple"
    assert store.check_password("carol", "correct horse battery staple")


def test_every_user_gets_a_different_password_and_key(store):
    made = [store.add(name) for name in ("u1", "u2", "u3")]
    assert len({password for password, _ in made}) == 3
    assert len({key for _, key in made}) == 3


def test_passwords_and_keys_are_not_stored_in_clear(store):
    given, _ = store.add("carol", "plain-text-password")
    password, key = store.add("dave")
    old_key = key
    key = store.revoke_key("dave")
    secrets = [given, password, key, old_key, key.removeprefix("ck_"), old_key.removeprefix("ck_")]
    stored = redis_strings(store.r)
    assert {"cutout:users", "cutout:apikeys", "cutout:apikey-of"} <= set(stored)
    for secret in secrets:
        assert not [s for s in stored if secret in s], f"{secret!r} is stored in clear"
    assert store.r.hget("cutout:users", "carol").startswith("scrypt:")  # a slow hash for what people choose


@pytest.mark.parametrize(("name", "password", "ok"), [
    ("alice", "right", True),
    ("alice", "wrong", False),
    ("alice", "", False),
    ("alice", "RIGHT", False),
    ("nobody", "right", False),
    ("", "right", False),
])
def test_check_password(store, name, password, ok):
    store.add("alice", "right")
    assert store.check_password(name, password) is ok


@pytest.mark.parametrize("key", ["ck_not-a-key", "not-even-ck", "", None, "Bearer ck_x"])
def test_user_for_key_is_none_for_unknown_keys(store, key):
    store.add("alice")
    assert store.user_for_key(key) is None


def test_revoke_key_invalidates_the_old_key_at_once(store):
    _, old = store.add("alice")
    _, bobs = store.add("bob")
    new = store.revoke_key("alice")
    assert new != old
    assert store.user_for_key(old) is None
    assert store.user_for_key(new) == "alice"
    assert store.user_for_key(bobs) == "bob"  # nobody else's key moved


def test_revoking_twice_leaves_only_the_newest_key(store):
    _, first = store.add("alice")
    second = store.revoke_key("alice")
    third = store.revoke_key("alice")
    assert [store.user_for_key(k) for k in (first, second, third)] == [None, None, "alice"]
    assert store.r.hlen("cutout:apikeys") == 1  # old digests do not pile up


def test_revoke_key_of_an_unknown_user_says_who_exists(store):
    with pytest.raises(UserError, match="no user named 'ghost'; `cutout users list`"):
        store.revoke_key("ghost")


def test_a_duplicate_name_is_refused_and_the_first_account_is_kept(store):
    password, key = store.add("alice")
    with pytest.raises(UserError, match="user 'alice' already exists; pick another name"):
        store.add("alice", "takeover")
    assert store.check_password("alice", password)
    assert not store.check_password("alice", "takeover")
    assert store.user_for_key(key) == "alice"


@pytest.mark.parametrize("name", ["", "-alice", ".alice", "al ice", "a/b", "a:b", "x" * 65, "ålice", "alice\n",
                                  None, 42])
def test_invalid_names_are_refused_saying_what_is_allowed(store, name):
    with pytest.raises(UserError, match="must be 1-64 letters, digits"):
        store.add(name)
    assert store.names() == []


@pytest.mark.parametrize("name", ["a", "x" * 64, "bob.smith@example.com", "a_b-c", "0day"])
def test_valid_names_are_accepted(store, name):
    store.add(name)
    assert store.exists(name)


def test_names_and_list_show_every_user_sorted_with_creation_time(store):
    before = time.time()
    for name in ("zed", "alice", "mike"):
        store.add(name)
    assert store.names() == ["alice", "mike", "zed"]
    listed = store.list()
    assert [u["name"] for u in listed] == ["alice", "mike", "zed"]
    assert all(before - 1 <= u["created"] <= time.time() + 1 for u in listed)
    assert not store.exists("bob")


# --- API keys over HTTP --------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_an_authorization_bearer_key_authenticates(client, users, scheme):
    response = client.get("/api/v1/jobs", headers={"Authorization": f"{scheme} {users['alice']['api_key']}"})
    assert response.status_code == 200
    assert response.get_json()["jobs"] == []  # past authentication: alice has no jobs yet


def test_an_x_api_key_authenticates(client, users):
    response = client.get("/api/v1/jobs", headers=users["bob"]["headers"])
    assert response.status_code == 200


def test_no_credentials_is_401_saying_how_to_sign_in(client):
    response = client.get("/api/v1/jobs")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert "X-Api-Key" in response.get_json()["error"]["message"]


def test_a_revoked_key_is_401_and_the_new_one_works(app, client, users):
    old = users["alice"]["api_key"]
    new = app.extensions["cutout"].users.revoke_key("alice")
    refused = client.get("/api/v1/jobs", headers={"X-Api-Key": old})
    assert refused.status_code == 401
    assert "revoked or mistyped" in refused.get_json()["error"]["message"]
    assert client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {new}"}).status_code == 200


def test_a_key_post_needs_no_csrf_token(client, users):
    response = client.post("/api/v1/jobs", headers=users["alice"]["headers"])
    assert response.get_json()["error"]["code"] == "no_images"  # past authentication, at the upload check


# --- the login form and its session --------------------------------------------------------------


def csrf_token(client) -> str:
    """The token the login page hands out for the client's current session."""
    page = client.get("/login")
    assert page.status_code == 200
    return CSRF_FIELD.search(page.get_data(as_text=True)).group(1)


def log_in(client, name: str, password: str, next_path: str | None = None):
    url = "/login" if next_path is None else "/login?" + urlencode({"next": next_path})
    return client.post(url, data={"username": name, "password": password, "csrf_token": csrf_token(client)})


def test_a_wrong_password_shows_the_form_again_with_401(client, users):
    response = log_in(client, "alice", "not-her-password")
    assert response.status_code == 401
    page = response.get_data(as_text=True)
    assert "do not match" in page
    assert 'value="alice"' in page  # the name stays filled in
    assert client.get("/api/v1/jobs").status_code == 401


def test_an_unknown_user_gets_the_same_401(client, users):
    response = log_in(client, "mallory", users["alice"]["password"])
    assert response.status_code == 401
    assert "do not match" in response.get_data(as_text=True)


def test_the_right_password_redirects_and_the_session_works(client, users):
    response = log_in(client, "alice", users["alice"]["password"])
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    jobs = client.get("/api/v1/jobs")
    assert jobs.status_code == 200
    assert jobs.get_json()["jobs"] == []


def test_a_login_post_without_the_csrf_token_is_refused(client, users):
    response = client.post("/login", data={"username": "alice", "password": users["alice"]["password"]})
    assert response.status_code == 400
    assert client.get("/api/v1/jobs").status_code == 401


@pytest.mark.parametrize("next_path", ["/jobs", "/jobs/abc?x=1"])
def test_next_redirects_to_a_local_path(client, users, next_path):
    response = log_in(client, "alice", users["alice"]["password"], next_path)
    assert response.status_code == 302
    assert response.headers["Location"] == next_path


@pytest.mark.parametrize("next_path", ["//evil.example", "https://evil.example", "http://evil.example/jobs",
                                       "///evil.example", "javascript:alert(1)", "evil.example", "/\t/evil.example"])
def test_next_never_leaves_the_site(client, users, next_path):
    response = log_in(client, "alice", users["alice"]["password"], next_path)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize("next_path", ["/\\evil.example", "/\\/evil.example"])
def test_next_with_a_backslash_stays_on_the_site(client, users, next_path):
    # Browsers read a backslash in a Location as "/"; it must reach them percent-encoded, a path here.
    location = log_in(client, "alice", users["alice"]["password"], next_path).headers["Location"]
    assert location.startswith("/") and not location.startswith("//")
    assert "\\" not in location
    assert urlsplit(urljoin("http://cutout.test/login", location)).netloc == "cutout.test"


def test_a_session_post_with_the_csrf_header_passes(client, users):
    log_in(client, "alice", users["alice"]["password"])
    response = client.post("/api/v1/jobs", headers={"X-CSRFToken": csrf_token(client)})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "no_images"  # past the CSRF check, at the upload check


def test_a_session_post_with_the_csrf_form_field_passes(client, users):
    log_in(client, "alice", users["alice"]["password"])
    response = client.post("/api/v1/jobs", data={"csrf_token": csrf_token(client)})
    assert response.get_json()["error"]["code"] == "no_images"


@pytest.mark.parametrize("headers", [{}, {"X-CSRFToken": "forged"}], ids=["no token", "forged token"])
def test_a_session_post_without_a_valid_csrf_token_is_400_csrf_failed(app, client, users, headers):
    app.config["PROPAGATE_EXCEPTIONS"] = False  # what a deployed app answers, not the test client's traceback
    log_in(client, "alice", users["alice"]["password"])
    response = client.post("/api/v1/jobs", headers=headers)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "csrf_failed"


def test_logout_ends_the_session(client, users):
    log_in(client, "alice", users["alice"]["password"])
    response = client.post("/logout", data={"csrf_token": csrf_token(client)})
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
    assert client.get("/api/v1/jobs").status_code == 401


def test_logout_without_the_csrf_token_keeps_the_session(client, users):
    log_in(client, "alice", users["alice"]["password"])
    assert client.post("/logout").status_code == 400  # another site cannot sign the user out
    assert client.get("/api/v1/jobs").status_code == 200


def test_an_invalid_api_key_wins_over_a_valid_session(client, users):
    log_in(client, "alice", users["alice"]["password"])
    assert client.get("/api/v1/jobs", headers={"X-Api-Key": "ck_wrong"}).status_code == 401


# --- sessions and passwords in the store (the HTTP side: test_sessions.py) -------------------------


def test_a_session_is_live_until_it_is_ended_and_ending_one_leaves_the_others(store):
    store.add("alice")
    laptop, phone = store.start_session("alice", 3600), store.start_session("alice", 3600)
    assert laptop != phone
    assert store.session_is_live("alice", laptop) and store.session_is_live("alice", phone)
    store.end_session("alice", laptop)
    assert not store.session_is_live("alice", laptop)
    assert store.session_is_live("alice", phone)


@pytest.mark.parametrize(("name", "sid"), [("bob", "alice's"), ("alice", "made-up"), ("alice", None), (None, "x")])
def test_a_session_id_counts_only_for_the_user_it_was_issued_to(store, name, sid):
    store.add("alice")
    store.add("bob")
    issued = store.start_session("alice", 3600)
    assert not store.session_is_live(name, issued if sid == "alice's" else sid)


def test_a_session_is_not_live_past_its_lifetime_and_the_ended_ones_are_dropped(store):
    store.add("alice")
    short = store.start_session("alice", 0.3)
    time.sleep(0.5)
    assert not store.session_is_live("alice", short)
    store.start_session("alice", 3600)
    assert store.r.zcard("cutout:sessions:alice") == 1  # the ended one went when the next began


def test_sessions_per_user_are_capped_oldest_first(store):
    store.add("alice")
    first = store.start_session("alice", 3600)
    for _ in range(100):
        store.start_session("alice", 3600)
    assert store.r.zcard("cutout:sessions:alice") == 100
    assert not store.session_is_live("alice", first)


def test_session_ids_are_not_stored_in_clear(store):
    store.add("alice")
    sid = store.start_session("alice", 3600)
    assert not [s for s in redis_strings(store.r) if sid in s]


@pytest.mark.parametrize("end", ["set_password", "revoke_key", "end_sessions"])
def test_a_new_password_a_new_key_or_end_sessions_ends_every_session_of_that_user_only(store, end):
    store.add("alice")
    store.add("bob")
    alices = [store.start_session("alice", 3600) for _ in range(3)]
    bobs = store.start_session("bob", 3600)
    getattr(store, end)("alice")
    assert not any(store.session_is_live("alice", sid) for sid in alices)
    assert store.session_is_live("bob", bobs)


def test_set_password_replaces_the_password(store):
    old, key = store.add("alice")
    assert store.set_password("alice", "a brand new one") == "a brand new one"
    assert store.check_password("alice", "a brand new one")
    assert not store.check_password("alice", old)
    assert store.user_for_key(key) == "alice"  # the API key is another credential: it stays


def test_set_password_without_one_makes_one_up(store):
    old, _ = store.add("alice")
    made = store.set_password("alice")
    assert len(made) >= 12 and made != old
    assert store.check_password("alice", made)


def test_set_password_refuses_a_short_one_and_keeps_the_old(store):
    old, _ = store.add("alice")
    with pytest.raises(UserError, match="at least 8 characters"):
        store.set_password("alice", "short")
    assert store.check_password("alice", old)


def test_set_password_of_an_unknown_user_says_who_exists(store):
    with pytest.raises(UserError, match="no user named 'ghost'; `cutout users list`"):
        store.set_password("ghost", "long enough password")
    assert not store.exists("ghost")
