"""Celery's and kombu's private internals that cutout patches or uses, checked against the pinned releases.

Each internal has a test of its behaviour on a real Redis (the reason we need it still holds,
and our use of it still works) and its source is pinned by hash: bumping celery or kombu in
setup.cfg makes these fail until someone re-reads the module named in the message.
"""

import configparser
import hashlib
import inspect
import json
from importlib.metadata import version
from pathlib import Path

import pytest
import redis
from celery import Celery, chord
from celery.backends.redis import RedisBackend
from kombu import Connection, Queue
from kombu.transport import redis as kombu_redis

from tasks import kombu_patch
from tasks.app import configure
from tasks.backend import SendOnlyRedisBackend
from tasks.recovery import requeue_unacked
from tasks.settings import Settings
from tests.conftest import point_app_at

ROOT = Path(__file__).resolve().parents[2]

# What each was read against (celery 5.7.0, kombu 5.7.0): sha256 of inspect.getsource, first 16 hex digits.
REVIEWED = [
    (kombu_patch._connparams, "e9a4295085a8fb90", "tasks/kombu_patch.py"),
    (kombu_redis.QoS.restore_by_tag, "58e161d81b6fe18d", "tasks/recovery.py"),
    (RedisBackend.on_task_call, "e05185cfafbadc38", "tasks/backend.py"),
    (RedisBackend.add_pending_result, "a8fb813ac6ddf04d", "tasks/backend.py"),
    (Celery._after_fork, "8279c3de88f2fcce", "tests/conftest.py point_app_at()"),
]


def _db(redis_url: str, db: int) -> str:
    """A database of the session's Redis of this module's own, emptied first."""
    url = redis_url.rsplit("/", 1)[0] + f"/{db}"
    redis.Redis.from_url(url).flushdb()
    return url


def test_celery_and_kombu_are_the_pinned_releases_these_tests_read():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    requires = cfg["options"]["install_requires"]
    for package in ("celery", "kombu"):
        assert f"{package}=={version(package)}" in requires.replace("[redis]", ""), (
            f"{package} {version(package)} is installed but setup.cfg pins another release")


@pytest.mark.parametrize(("function", "digest", "user"), REVIEWED, ids=[f.__qualname__ for f, _, _ in REVIEWED])
def test_each_upstream_internal_is_the_code_that_was_reviewed(function, digest, user):
    source = inspect.getsource(function)
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == digest, (
        f"{function.__module__}.{function.__qualname__} changed upstream: re-read {user} against it, "
        "drop the patch if the release fixed what it works around, then update the digest here")


def _channel_holding_an_unacked_message(url: str):
    conn = Connection(url)
    channel = conn.channel()
    Queue("internals", channel=channel).declare()
    channel.basic_publish(channel.prepare_message("hello"), exchange="", routing_key="internals")
    assert channel.basic_get("internals", no_ack=False) is not None
    return conn, channel


@pytest.mark.parametrize("patched", [False, True])
def test_closing_a_channel_after_its_transport_was_detached(redis_url, monkeypatch, patched):
    """What a worker's consumer does when the broker drops: collect() (detaching the transport), then close().

    Upstream still fails with an AttributeError, which nothing ignores (the worker dies): if this
    changes, kombu fixed it and tasks/kombu_patch.py can go. With the patch it is a connection
    error, which kombu ignores like any other of a dead connection; the message stays unacked in
    Redis, to come back after the visibility timeout.
    """
    url = _db(redis_url, 11)
    replacement = kombu_patch._connparams_of_a_live_transport if patched else kombu_patch._connparams
    monkeypatch.setattr(kombu_redis.Channel, "_connparams", replacement)
    conn, channel = _channel_holding_an_unacked_message(url)
    transport = conn.transport
    conn._do_close_transport()  # the step of Connection.collect() that detaches it
    assert transport.client is None
    with pytest.raises(Exception) as raised:  # which one is the point, asserted below
        channel.close()
    if patched:
        assert isinstance(raised.value, redis.ConnectionError)
        assert isinstance(raised.value, transport.connection_errors)
    else:
        assert isinstance(raised.value, AttributeError) and "hostname" in str(raised.value)
        assert not isinstance(raised.value, transport.connection_errors)
    assert redis.Redis.from_url(url).hlen("unacked") == 1


def test_the_app_runs_with_the_patch_applied():
    # tasks.app (imported above for configure) applies it at import.
    assert kombu_redis.Channel._connparams is kombu_patch._connparams_of_a_live_transport


def test_requeue_unacked_puts_a_dead_consumers_message_back_first_in_line(redis_url):
    """recovery.py reads kombu's unacked hash ([payload, exchange, routing key] by tag) and restore_by_tag."""
    url = _db(redis_url, 11)
    conn, channel = _channel_holding_an_unacked_message(url)
    channel.basic_publish(channel.prepare_message("second"), exchange="", routing_key="internals")
    client = redis.Redis.from_url(url)
    tag, raw = next(iter(client.hgetall(channel.unacked_key).items()))
    assert json.loads(raw)[2] == "internals"
    # The consumer died holding it: its channel is never closed (closing would restore it).
    assert requeue_unacked(url, "another-queue") == 0
    assert requeue_unacked(url, "internals") == 1
    assert client.hlen(channel.unacked_key) == 0 and client.zscore(channel.unacked_index_key, tag) is None
    with Connection(url) as fresh:
        taken = fresh.default_channel.basic_get("internals", no_ack=True)
        assert taken.body == b"hello"  # ahead of the one published after it
    conn.release()


def _chord_sent(app: Celery):
    @app.task(name="t.one", shared=False)
    def one(i):
        return i

    @app.task(name="t.all", shared=False)
    def together(results):
        return results

    return chord([one.s(i) for i in range(3)])(together.s())


def test_a_sent_chord_leaves_no_result_subscription_where_stock_celery_would(redis_url):
    """tasks/backend.py overrides on_task_call and add_pending_result; upstream still subscribes in both."""
    url = _db(redis_url, 11)
    ours = configure(Celery("ours"), Settings.from_env({"CUTOUT_BROKER_URL": url}))
    _chord_sent(ours)
    assert isinstance(ours.backend, SendOnlyRedisBackend)
    assert not ours.backend.result_consumer.subscribed_to and not ours.backend._pending_results.concrete

    stock = configure(Celery("stock"), Settings.from_env({"CUTOUT_BROKER_URL": url}))
    stock.conf.result_backend = url
    result = _chord_sent(stock)
    assert type(stock.backend) is RedisBackend
    assert len(stock.backend.result_consumer.subscribed_to) == 3
    for header in result.parent.results:  # unsubscribe now, while Redis is up (else ~20 s at collection)
        stock.backend.result_consumer.cancel_for(header.id)
    assert not stock.backend.result_consumer.subscribed_to


def test_a_test_process_pointing_the_app_at_another_redis_sends_there(redis_url):
    """point_app_at drops the broker pools and backend Celery caches (what Celery._after_fork resets);
    the service configures its app once per process and never needs to."""
    first, second = _db(redis_url, 10), _db(redis_url, 11)
    app = configure(Celery("t"), Settings.from_env({"CUTOUT_BROKER_URL": first}))
    app.send_task("t.one", (1,))
    assert app.backend.connparams["db"] == 10
    point_app_at(Settings.from_env({"CUTOUT_BROKER_URL": second}), app)
    app.send_task("t.one", (2,))
    assert [redis.Redis.from_url(url).llen("cpu") for url in (first, second)] == [1, 1]
    assert app.backend.connparams["db"] == 11
