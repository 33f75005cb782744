"""Per-user storage quota: the stored upload bytes of each user's retained jobs.

One Redis hash per user, `cutout:quota:<user>` = {job: bytes}. A job counts from just before
its uploads are stored (a reservation, taken atomically against the limit, so two requests at
once cannot both slip under it) until its record is gone: deleted by the user, or swept when
it expires. Jobs without a record are pruned whenever the user's use is read, so tasks/jobs.py
need not know about quotas. A reservation whose request died before its job was recorded is
pruned after RESERVATION_TTL_S.

Only uploads count: they are what a user chooses to send. Outputs and alpha maps are the
service's own, bounded by the uploads (a few per input).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from tasks.jobs import JobStore

RESERVATION_TTL_S = 3600  # far longer than any upload takes to store
_RESERVED = "reserved:"
# KEYS[1]: the user's hash. ARGV: limit, needed, reservation field. Returns {granted, used before}.
_RESERVE = ("local used = 0 "
            "for _, v in ipairs(redis.call('HVALS', KEYS[1])) do used = used + tonumber(v) end "
            "if used + tonumber(ARGV[2]) > tonumber(ARGV[1]) then return {0, used} end "
            "redis.call('HSET', KEYS[1], ARGV[3], ARGV[2]) "
            "return {1, used}")


class QuotaExceeded(Exception):
    def __init__(self, used: int, limit: int, needed: int):
        super().__init__(f"{used} bytes used + {needed} needed > {limit}")
        self.used, self.limit, self.needed = used, limit, needed


class Reservation:
    def __init__(self, quota: Quota, user: str, field: str, needed: int):
        self._quota, self._user, self._field, self.needed = quota, user, field, needed
        self.job: str | None = None

    def commit(self, job: str) -> None:
        """The uploads are stored as `job`: they count under its name until its record is gone."""
        pipe = self._quota.r.pipeline()
        pipe.hdel(self._quota.key(self._user), self._field)
        pipe.hset(self._quota.key(self._user), job, self.needed)
        pipe.execute()
        self.job = job


class Quota:
    def __init__(self, jobs: JobStore, limit: int):
        self.jobs, self.r, self.limit = jobs, jobs.r, limit

    @staticmethod
    def key(user: str) -> str:
        return f"cutout:quota:{user}"

    def used(self, user: str) -> int:
        """Bytes the user's retained jobs (and reservations in flight) hold, after pruning the gone."""
        self.prune(user)
        return sum(int(v) for v in self.r.hvals(self.key(user)))

    def prune(self, user: str) -> None:
        fields = self.r.hkeys(self.key(user))
        jobs = [f for f in fields if not f.startswith(_RESERVED)]
        gone = [job for job, status in zip(jobs, self.jobs.statuses(jobs), strict=True) if status is None]
        stale_before = time.time() - RESERVATION_TTL_S
        stale = [f for f in fields if f.startswith(_RESERVED) and float(f.split(":")[1]) < stale_before]
        if gone or stale:
            self.r.hdel(self.key(user), *gone, *stale)

    @contextmanager
    def reserve(self, user: str, needed: int) -> Iterator[Reservation]:
        """Room for `needed` bytes, held while the block stores them; QuotaExceeded if there is none.

        The block commits the reservation to its job; if it raises instead, the room is given back.
        """
        self.prune(user)
        field = f"{_RESERVED}{time.time():.0f}:{uuid.uuid4().hex}"
        granted, used = self.r.eval(_RESERVE, 1, self.key(user), self.limit, needed, field)
        if not granted:
            raise QuotaExceeded(int(used), self.limit, needed)
        reservation = Reservation(self, user, field, needed)
        try:
            yield reservation
        finally:
            if reservation.job is None:
                self.r.hdel(self.key(user), field)
