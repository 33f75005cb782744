"""A job's event stream: where it starts, how many one user may hold open, and for how long.

The open streams are counted in Redis, so the cap holds across web processes and hosts: one
sorted set per user, a member per open stream scored by when it lapses. A stream renews its
member while it runs (at each keep-alive) and removes it when it ends; one whose web process was
killed lapses HEARTBEAT_S later instead of counting forever.
"""

import re
import time
import uuid

import redis

from web.errors import ApiError

# A Redis stream id as the `id:` lines carry it ("1733100000000-0"), or its millisecond part alone.
# ASCII digits (\d takes '٧' too) and 19 at most, so each part fits Redis's 64 bits: past them the
# stream died after its 200 with Redis's "Invalid stream ID". The OpenAPI document states this pattern.
POSITION = "[0-9]{1,19}(-[0-9]{1,19})?"
_POSITION = re.compile(POSITION)
HEARTBEAT_S = 30  # three keep-alives (one every 10 s at most): a live stream is never taken for a lapsed one
RECONNECT_MS = 1000  # the browser's wait before it reconnects a stream that ended (its own default is ~3 s)

# Drop lapsed members, then take a place if one is free. KEYS: the user's set.
# ARGV: now, cap, the new member's lapse time, member, key expiry (s). Returns the streams open, or -1 if taken.
_ACQUIRE = ("redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1]) "
            "local open = redis.call('ZCARD', KEYS[1]) "
            "if open >= tonumber(ARGV[2]) then return open end "
            "redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4]) "
            "redis.call('EXPIRE', KEYS[1], ARGV[5]) "
            "return -1")


def position(value: str | None, name: str) -> str | None:
    """`value` if it is a stream position, None if absent; 400 before the stream starts otherwise
    (an empty one too: EventSource sends no Last-Event-ID rather than an empty one)."""
    if value is None:
        return None
    if not _POSITION.fullmatch(value):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise ApiError(400, "invalid_position", f"{name}={shown!r} is not a stream position: use the id of an "
                                                "event this stream sent (digits, or digits-digits), or leave it out "
                                                "to start from now")
    return value


class StreamSlot:
    """One open stream's place among its user's; `release()` may be called more than once."""

    def __init__(self, client: redis.Redis, user: str):
        self.r, self.key, self.member = client, f"cutout:streams:{user}", uuid.uuid4().hex

    @classmethod
    def acquire(cls, client: redis.Redis, user: str, cap: int) -> "StreamSlot":
        slot = cls(client, user)
        now = time.time()
        open_ = int(client.eval(_ACQUIRE, 1, slot.key, now, cap, now + HEARTBEAT_S, slot.member, HEARTBEAT_S * 2))
        if open_ >= 0:
            raise ApiError(429, "too_many_streams",
                           f"you have {open_} event streams open (limit {cap}, CUTOUT_MAX_STREAMS_PER_USER); close "
                           "a browser tab or an EventSource you no longer read, or poll GET /api/v1/jobs/<job>",
                           {"Retry-After": "10"})
        return slot

    def renew(self) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(self.key, {self.member: time.time() + HEARTBEAT_S}, xx=True)
        pipe.expire(self.key, HEARTBEAT_S * 2)
        pipe.execute()

    def release(self) -> None:
        self.r.zrem(self.key, self.member)
