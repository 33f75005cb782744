"""`cutout users`: accounts in a real Redis (database 4, emptied per test)."""

import io
import json
import uuid

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


def test_revoke_key_ends_every_portal_session(users_url, capsys):
    run_json(capsys, "add", "ivy")
    store = UserStore.from_url(users_url)
    session = store.start_session("ivy", 3600)
    run_json(capsys, "revoke-key", "ivy")
    assert not store.session_is_live("ivy", session)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_passwd_generate_prints_a_new_password_that_works_and_ends_sessions(users_url, capsys):
    old = run_json(capsys, "add", "jo")
    store = UserStore.from_url(users_url)
    sessions = [store.start_session("jo", 3600) for _ in range(2)]
    made = run_json(capsys, "passwd", "jo", "--generate")
    assert made["name"] == "jo" and made["password"] != old["password"]
    assert store.check_password("jo", made["password"]) and not store.check_password("jo", old["password"])
    assert not any(store.session_is_live("jo", s) for s in sessions)
    assert store.user_for_key(old["api_key"]) == "jo"  # the key is not the password: it stays


def test_passwd_in_words_says_it_is_shown_once_and_sessions_ended(users_url, capsys):
    run_json(capsys, "add", "jo")
    assert main(["users", "passwd", "jo", "--generate"]) == 0
    out = capsys.readouterr().out
    assert "new password for jo:" in out and "shown once" in out and "every session of jo has ended" in out


def test_passwd_reads_one_line_from_a_pipe(users_url, capsys, monkeypatch):
    run_json(capsys, "add", "kim")
    store = UserStore.from_url(users_url)
    session = store.start_session("kim", 3600)
    monkeypatch.setattr("sys.stdin", io.StringIO("piped in password\nnext line\n"))
    assert main(["users", "passwd", "kim"]) == 0
    assert store.check_password("kim", "piped in password")
    assert not store.session_is_live("kim", session)
    assert "password of kim changed" in capsys.readouterr().out


def test_passwd_at_a_terminal_asks_twice(users_url, capsys, monkeypatch):
    run_json(capsys, "add", "lee")
    answers = iter(["typed at the terminal", "typed at the terminal"])
    prompts = []
    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("getpass.getpass", lambda prompt: prompts.append(prompt) or next(answers))
    assert main(["users", "passwd", "lee"]) == 0
    assert prompts == ["new password for lee: ", "again: "]
    assert UserStore.from_url(users_url).check_password("lee", "typed at the terminal")


@pytest.mark.parametrize(("typed", "message"), [(["one password", "another one"], "the two passwords differ"),
                                                (["short", "short"], "at least 8 characters"),
                                                (["", ""], "no password given")])
def test_passwd_refuses_and_keeps_the_old_password(users_url, capsys, monkeypatch, typed, message):
    old = run_json(capsys, "add", "lee")["password"]
    answers = iter(typed)
    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    assert main(["users", "passwd", "lee"]) == 1
    assert message in capsys.readouterr().err
    assert UserStore.from_url(users_url).check_password("lee", old)


def test_passwd_of_an_unknown_user_fails_before_asking(users_url, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("getpass.getpass", lambda prompt: pytest.fail("asked for a password nobody can use"))
    assert main(["users", "passwd", "nobody"]) == 1
    assert "no user named 'nobody'" in capsys.readouterr().err


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


def test_the_redis_port_of_cutout_serve_alone_finds_its_users(redis_url, monkeypatch, capsys):
    """`CUTOUT_REDIS_PORT=N cutout users add x` dials the Redis `cutout serve` starts on N (database 0)."""
    for name in ("CUTOUT_REDIS_URL", "CUTOUT_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CUTOUT_REDIS_PORT", redis_url.rsplit(":", 1)[1].split("/")[0])
    name = f"port-{uuid.uuid4().hex[:8]}"  # database 0 of the session's own Redis, shared: a name of its own
    made = run_json(capsys, "add", name)
    assert UserStore.from_url(redis_url.rsplit("/", 1)[0] + "/0").check_password(name, made["password"])


def test_users_and_serve_derive_one_redis_url_from_the_port(tmp_path):
    from cutout_cli.serve import plan
    from tasks.settings import Settings

    env = {"CUTOUT_HOME": str(tmp_path), "CUTOUT_REDIS_PORT": "6400", "CUTOUT_DEVICE": "cpu"}
    info, _children = plan(env)
    assert info["redis_url"] == Settings.from_env(env).redis_url == "redis://127.0.0.1:6400/0"
