"""The cap on a user's running jobs (MAX_ACTIVE_JOBS), atomic under simultaneous submits.

Counting the running jobs and then recording a new one let 20 simultaneous submits put 14 jobs
past a cap of 10: each counted before any other had recorded its job. Here the count and a
reservation are one Lua script: a submit holds a place from its check until its job is recorded
(then the job itself counts) or it fails. Just before the job is recorded its reservation takes the
job's id, so the two are counted once, never twice, while both exist. The count reads the job
records themselves, so a job that finishes, fails, is deleted or expires stops counting with no
bookkeeping of ours; a reservation whose web process died lapses after RESERVATION_S.
"""

import json
import time
import uuid

import redis

from web.errors import ApiError

RESERVATION_S = 900  # longer than any upload takes to arrive and be stored
SCAN = 200  # jobs past the cap looked at, newest first (an older job still running is counted too)

# KEYS: the user's jobs (sorted set, newest last), the user's reservations (sorted set by lapse time).
# ARGV: now, cap, lapse time, member, jobs to look at, job record key prefix, active states (JSON).
# Returns -1 with a place taken, else how many are running or reserved.
_RESERVE = ("redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1]) "
            "local count, active, counted = 0, {}, {} "
            "for _, s in ipairs(cjson.decode(ARGV[7])) do active[s] = true end "
            "for _, job in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[5]) - 1)) do "
            "  local s = redis.call('HGET', ARGV[6] .. job, 'status') "
            "  if s and active[s] then count = count + 1 counted[job] = true end "
            "end "
            "for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do "
            "  if not counted[member] then count = count + 1 end "
            "end "
            "if count >= tonumber(ARGV[2]) then return count end "
            "redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4]) "
            "redis.call('EXPIRE', KEYS[2], ARGV[3] - ARGV[1]) "
            "return -1")


class JobSlot:
    """One submit's place among its user's running jobs; `release()` may be called more than once."""

    def __init__(self, client: redis.Redis, user: str):
        self.r, self.key, self.member = client, f"cutout:job-slots:{user}", uuid.uuid4().hex

    @classmethod
    def acquire(cls, client: redis.Redis, user: str, cap: int, job_prefix: str, active: tuple[str, ...]) -> "JobSlot":
        slot = cls(client, user)
        now = time.time()
        count = int(client.eval(_RESERVE, 2, f"cutout:jobs:{user}", slot.key, now, cap, now + RESERVATION_S,
                                slot.member, cap + SCAN, job_prefix, json.dumps(list(active))))
        if count >= 0:
            raise ApiError(429, "too_many_jobs", f"you have {count} jobs running (limit {cap}); wait for one to "
                                                 "finish or delete it", {"Retry-After": "30"})
        return slot

    def release(self) -> None:
        self.r.zrem(self.key, self.member)

    def recording(self, store):
        """`store` for create_job: as it records the job, this reservation takes the job's id first."""
        return _Recording(store, self)

    def _rename(self, job: str) -> None:
        pipe = self.r.pipeline()  # MULTI: the count never sees neither name, nor both
        pipe.zadd(self.key, {job: time.time() + RESERVATION_S})
        pipe.zrem(self.key, self.member)
        pipe.execute()
        self.member = job


class _Recording:
    """A JobStore whose create() first hands the reservation to the job's id (the rest is the store's)."""

    def __init__(self, store, slot: JobSlot):
        self._store, self._slot = store, slot

    def create(self, job: str, *args, **kwargs):
        self._slot._rename(job)
        return self._store.create(job, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._store, name)
