"""Cursor paging for the job list and a job's items: a `limit` (with a maximum) and an opaque cursor.

A cursor names where the last page ended, not an offset: new jobs arriving at the top of the
list never shift a page, so a client walking the pages sees each job once.
"""

import base64
import binascii
import json
import math

import redis

from web.errors import ApiError

JOBS_LIMIT, JOBS_MAX = 100, 500  # 100: what GET /api/v1/jobs answered before it had pages
ITEMS_LIMIT, ITEMS_MAX = 1000, 1000  # above the default 500 files a job may have: one page, as before


def limit(value: str | None, name: str, default: int, maximum: int) -> int:
    if value is None:
        return default
    # ASCII digits only: str.isdigit() also takes '²' and '٧', which int() refuses or reads as 7. An empty
    # value is no number either (the document says integer): leaving the parameter out gives the default.
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= maximum:
        raise ApiError(400, "invalid_limit", f"{name}={value[:20]!r}: give a whole number from 1 to {maximum}, "
                                             f"or leave {name} out for {default}")
    return int(value)


def encode(position: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(position, separators=(",", ":")).encode()).decode().rstrip("=")


def decode(cursor: str | None, name: str, fields: dict) -> dict | None:
    """The position a cursor holds ({field: type}), None without one; 400 for anything we did not make."""
    if not cursor:
        return None
    try:
        position = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(position, dict) and all(_valid(position.get(k), t) for k, t in fields.items()):
            return position
    except (binascii.Error, ValueError, UnicodeDecodeError):
        pass
    raise ApiError(400, "invalid_cursor", f"{name} is not a cursor this API gave out; pass the next_cursor of the "
                                          "previous page unchanged, or leave it out for the first page")


def _valid(value, kind) -> bool:
    # A cursor is opaque but a client can forge one: a NaN time makes Redis refuse the range, a
    # negative index reads items from the end; only what encode() could have written passes.
    if isinstance(value, bool) or not isinstance(value, kind):
        return False
    return isinstance(value, str) or (math.isfinite(value) and value >= 0)


def jobs(client: redis.Redis, key: str, count: int, cursor: str | None) -> tuple[list[str], str | None]:
    """A page of the sorted set `key` (job ids by creation time), newest first, and the next page's cursor."""
    after = decode(cursor, "cursor", {"t": (int, float), "id": str})
    if after is None:
        rows = client.zrevrange(key, 0, count, withscores=True)
    else:
        # Jobs created in the same instant as the cursor's sort by id, descending, as ZREVRANGE has them.
        ties = client.zcount(key, after["t"], after["t"])
        rows = client.zrevrangebyscore(key, after["t"], "-inf", start=0, num=count + 1 + ties, withscores=True)
        rows = [(job, t) for job, t in rows if t < after["t"] or job < after["id"]]
    page, more = rows[:count], len(rows) > count
    return [job for job, _ in page], encode({"t": page[-1][1], "id": page[-1][0]}) if more else None


def items(total: int, count: int, cursor: str | None) -> tuple[range, str | None]:
    """The item indices of a page of a job's `total` items, and the next page's cursor."""
    after = decode(cursor, "items_cursor", {"i": int})
    start = after["i"] if after else 0
    page = range(start, min(total, start + count))
    return page, encode({"i": page.stop}) if page.stop < total else None
