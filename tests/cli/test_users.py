"""`cutout users`: accounts in a real Redis (database 4, emptied per test)."""

import json

import pytest
import redis

from cutout_cli.main import main
from web.users import UserStore


@pytest.fixture
def users_url(redis_url, monkeypatch) -> str:
    url = redis_url.rsplit("/", 1)[0] + "/4"
    redis.Redis.from_url(url).flushdb()
    monkeypatch.setenv("CUTOUT_REDIS_URL", url)
    return url


def run_json(capsys, *argv) -> object:
    assert main(["users", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_add_prints_a_password_and_key_that_work(users_url, capsys):
    made = run_json(capsys, "add", "erin")
    assert set(made) == {"name", "password", "api_key"} and made["name"] == "erin"
    store = UserStore.from_url(users_url)
    assert store.check_password("erin", made["password"])
    assert store.user_for_key(made["api_key"]) == "erin"


def test_add_in_words_says_the_secrets_are_shown_once(users_url, capsys):
    assert main(["users", "add", "fay"]) == 0
    out = capsys.readouterr().out
    assert "password:" in out and "api key:" in out and "shown once" in out


def test_list_names_every_user(users_url, capsys):
    run_json(capsys, "add", "gus")
    run_json(capsys, "add", "hal")
    assert [u["name"] for u in run_json(capsys, "list")] == ["gus", "hal"]


def test_revoke_key_replaces_the_key(users_url, capsys):
    old = run_json(capsys, "add", "ivy")["api_key"]
    new = run_json(capsys, "revoke-key", "ivy")["api_key"]
    store = UserStore.from_url(users_url)
    assert new != old and store.user_for_key(new) == "ivy" and store.user_for_key(old) is None


@pytest.mark.parametrize("argv, message", [
    (["add", "ivy"], "already exists"),
    (["revoke-key", "nobody"], "no user named 'nobody'"),
    (["add", "../bad name"], "must be 1-64 letters"),
])
def test_mistakes_exit_1_with_a_message(users_url, capsys, argv, message):
    run_json(capsys, "add", "ivy")
    assert main(["users", *argv]) == 1
    assert message in capsys.readouterr().err


def test_an_unreachable_redis_says_how_to_fix_it(monkeypatch, capsys):
    monkeypatch.setenv("CUTOUT_REDIS_URL", "redis://127.0.0.1:1/0")
    assert main(["users", "list"]) == 1
    assert "cannot reach Redis" in capsys.readouterr().err
