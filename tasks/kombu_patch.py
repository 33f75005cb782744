"""A worker must outlive a Redis restart; kombu 5.7's Redis transport can crash it instead.

When the broker connection drops, Celery's consumer first `collect()`s the connection
(which detaches the transport: `transport.client = None`) and then `close()`s it. Closing
the channel puts its unacked messages back, which needs a fresh connection pool, which
reads the detached `transport.client` -> AttributeError. That is not one of kombu's
connection errors, so nothing ignores it and the worker dies with "Unrecoverable error:
AttributeError: 'NoneType' object has no attribute 'hostname'" (seen in
tests/reliability/test_faults.py about one Redis restart in two; the same path as
celery/kombu#582 and #970). Raising a connection error there instead lets kombu ignore
it as it ignores every other error of a dead connection; the messages stay in Redis's
unacked hash and come back after the visibility timeout, as for a worker killed outright.
"""

import redis
from kombu.transport import redis as kombu_redis

_connparams = kombu_redis.Channel._connparams


def _connparams_of_a_live_transport(self, asynchronous=False):
    if self.connection.client is None:
        raise redis.ConnectionError("the broker connection is closed (transport detached); cannot reconnect it")
    return _connparams(self, asynchronous=asynchronous)


def apply() -> None:
    # setattr: replacing a method of the class is the point (mypy refuses a plain assignment to one).
    setattr(kombu_redis.Channel, "_connparams", _connparams_of_a_live_transport)  # noqa: B010
