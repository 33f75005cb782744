"""Job records in Redis: the job, its items, idempotent counters and a progress stream.

Counters are set cardinalities (SADD of item numbers), so a redelivered task that
reports the same item twice never counts it twice. A finished item is not moved back by a
task (see `update_item`): only `requeue`, a new run the user asked for, starts it over.
"""

import json
import time
import uuid
from collections.abc import Callable

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from matting_core.registry import DEFAULT_MODEL

ITEM_STATES = ("queued", "inferring", "finishing", "done", "failed")
JOB_STATES = ("queued", "running", "done", "failed")
# queued -> running in one step, so a concurrent set_status("done") is never overwritten.
_START = ("if redis.call('HGET', KEYS[1], 'status') == 'queued' then "
          "redis.call('HSET', KEYS[1], 'status', 'running') end")
# The watchdog's verdict, atomic so that a job finishing this very moment is never failed.
_FAIL_IF_STALLED = ("local s = redis.call('HGET', KEYS[1], 'status') "
                    "if s ~= 'queued' and s ~= 'running' then redis.call('ZREM', KEYS[2], ARGV[3]) return 0 end "
                    "if tonumber(redis.call('HGET', KEYS[1], 'last_progress') or '0') > tonumber(ARGV[1]) "
                    "then return 0 end "
                    "redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[2]) "
                    "redis.call('ZREM', KEYS[2], ARGV[3]) return 1")
# An item's new state and fields, in one step with the check that keeps a finished item finished.
# KEYS: items hash, done set, failed set. ARGV: index, state, fields (JSON), force ("1"/"0").
# No item means no job (deleted, or swept): nothing is written.
_SET_ITEM = ("local raw = redis.call('HGET', KEYS[1], ARGV[1]) "
             "if not raw then return 0 end "
             "local item, state, fields = cjson.decode(raw), ARGV[2], cjson.decode(ARGV[3]) "
             "local was, final = item.state, ARGV[2] == 'done' or ARGV[2] == 'failed' "
             "if (was == 'done' or was == 'failed') and not final then return 0 end "
             "if was == 'done' and state == 'failed' and ARGV[4] ~= '1' then return 0 end "
             "for k, v in pairs(fields) do item[k] = v end "
             "if state ~= 'failed' and fields.error == nil then item.error = nil end "
             "item.state = state "
             "redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(item)) "
             "redis.call('SREM', KEYS[2], ARGV[1]) redis.call('SREM', KEYS[3], ARGV[1]) "
             "if state == 'done' then redis.call('SADD', KEYS[2], ARGV[1]) "
             "elseif state == 'failed' then redis.call('SADD', KEYS[3], ARGV[1]) end "
             "return 1")
# A field written into a job's record only while the record exists: a task or a fan-out still running
# when its job is DELETEd must not make a record again that holds nothing but its own field.
_HSET_IF_EXISTS = ("if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end "
                   "redis.call('HSET', KEYS[1], unpack(ARGV)) return 1")
# The job moved at ARGV[1] (what the watchdog reads), for a job that still has its record.
# KEYS: the job's record, _ACTIVE, _PROGRESS. ARGV: now, the job's id.
_PROGRESSED = ("if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end "
               "redis.call('HSET', KEYS[1], 'last_progress', ARGV[1]) "
               "redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2]) redis.call('SET', KEYS[3], ARGV[1]) return 1")
# A progress event on the job's stream, for a job that still has its record (as _HSET_IF_EXISTS: a task
# finishing after the DELETE must not start the stream again). The counts are read in the same step.
# KEYS: the record, its done and failed sets, its stream. ARGV: the stream's TTL, the status ('' for the
# record's), then the event's own fields as name, value pairs.
_EVENT = ("if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end "
          "local record = redis.call('HMGET', KEYS[1], 'status', 'total') "
          "local entry = {} for i = 3, #ARGV do entry[#entry + 1] = ARGV[i] end "
          "local status = ARGV[2] if status == '' then status = record[1] or '' end "
          "for _, v in ipairs({'status', status, 'done', redis.call('SCARD', KEYS[2]), "
          "'failed', redis.call('SCARD', KEYS[3]), 'total', record[2] or 0}) do entry[#entry + 1] = v end "
          "redis.call('XADD', KEYS[4], 'MAXLEN', '~', 10000, '*', unpack(entry)) "
          "redis.call('EXPIRE', KEYS[4], ARGV[1]) return 1")
_ACTIVE = "cutout:jobs:active"  # queued or running jobs, scored by their last progress
_PROGRESS = "cutout:last_progress"  # when any job last made progress
# Per queue and priority ("gpu:6"): the newest send time of a message a worker took there. Queues are
# FIFO within a priority and strict across them, so once a message sent after a job's launch was taken
# at the job's lowest priority or below, every message of that job was taken before it (stalled()).
_TAKEN = "cutout:taken"
# Deleted jobs, scored by when: the purge (cutout.purge) deletes their objects once more after the tasks
# still in flight at the DELETE had time to write; each job also leaves a tombstone key (_tombstone)
# that tasks read after a write, so what they wrote after the DELETE is removed at once.
_DELETED = "cutout:jobs:deleted"
# Jobs recorded before a job named its model all ran this one (the only model the service had).
LEGACY_MODEL = "u2netp"


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobStore:
    def __init__(self, client: redis.Redis, retention_s: float = 24 * 3600,
                 clock: Callable[[], float] = time.time):
        self.r = client
        self.retention_s = retention_s
        # Every timestamp the store writes (progress, creation, deletion) comes from here, so that the
        # watchdog's tests move a clock instead of sleeping past the stall limit.
        self.clock = clock

    @classmethod
    def from_url(cls, url: str, retention_s: float = 24 * 3600,
                 clock: Callable[[], float] = time.time) -> "JobStore":
        # A Redis restart (AOF brings the data back) takes a second or two: each command rides
        # it out for ~10 s (0.1, 0.2, 0.4, 0.8, then 1 s apart) instead of failing whichever task
        # touched Redis then. redis-py's default gives up after 3 quick tries.
        retry = Retry(ExponentialBackoff(cap=1, base=0.05), 12)
        client = redis.Redis.from_url(url, decode_responses=True, retry=retry,
                                      retry_on_error=[redis.ConnectionError, redis.TimeoutError])
        return cls(client, retention_s, clock)

    def _k(self, job: str, part: str = "") -> str:
        return f"cutout:job:{job}" + (f":{part}" if part else "")

    @staticmethod
    def _tombstone(job: str) -> str:
        return f"cutout:deleted:{job}"

    def create(self, job: str, owner: str, names: list[str], options: dict,
               rejected: dict[int, str] | None = None, model: str = DEFAULT_MODEL) -> None:
        """Record a new job; `rejected` items (index -> reason) start out failed and never run."""
        rejected = rejected or {}
        now = self.clock()
        pipe = self.r.pipeline()
        pipe.hset(self._k(job), mapping={"id": job, "owner": owner, "created": now, "status": "queued",
                                         "options": json.dumps(options), "model": model, "total": len(names),
                                         "error": ""})
        pipe.hset(self._k(job, "items"), mapping={
            str(i): json.dumps({"name": name, "state": "failed", "error": rejected[i], "rejected": True}
                               if i in rejected
                               else {"name": name, "state": "queued"}) for i, name in enumerate(names)})
        if rejected:
            pipe.sadd(self._k(job, "failed"), *rejected)
        pipe.zadd(f"cutout:jobs:{owner}", {job: now})
        pipe.zadd("cutout:jobs", {job: now})
        self._progressed(pipe, job, now)
        pipe.execute()

    def _progressed(self, pipe, job: str, now: float) -> None:
        # What the watchdog reads: this job, and the whole service, moved at `now` (a deleted job did not).
        pipe.eval(_PROGRESSED, 3, self._k(job), _ACTIVE, _PROGRESS, now, job)

    def exists(self, job: str) -> bool:
        return bool(self.r.exists(self._k(job)))

    def status(self, job: str) -> str | None:
        return self.r.hget(self._k(job), "status")

    def model(self, job: str) -> str:
        """The model the job runs (set when it was created; a retry or a recompose keeps it)."""
        return self.r.hget(self._k(job), "model") or LEGACY_MODEL

    def statuses(self, jobs: list[str]) -> list[str | None]:
        """The status of each job, in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for job in jobs:
            pipe.hget(self._k(job), "status")
        return pipe.execute()

    def job(self, job: str) -> dict | None:
        record = self.r.hgetall(self._k(job))
        if "owner" not in record:  # none, or (from before _HSET_IF_EXISTS) a field written after a DELETE
            return None
        record["options"] = json.loads(record["options"])
        record.setdefault("model", LEGACY_MODEL)
        record["total"] = int(record["total"])
        record["created"] = float(record["created"])
        record["done"] = self.r.scard(self._k(job, "done"))
        record["failed"] = self.r.scard(self._k(job, "failed"))
        return record

    def items(self, job: str) -> dict[int, dict]:
        raw = self.r.hgetall(self._k(job, "items"))
        return {int(i): json.loads(v) for i, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}

    def item(self, job: str, i: int) -> dict:
        return json.loads(self.r.hget(self._k(job, "items"), str(i)) or "{}")

    def update_item(self, job: str, i: int, state: str, force: bool = False, **fields) -> bool:
        """Record an item's new state; done/failed move it between the counting sets.

        Returns False, writing nothing, where that would move a finished item back: a done or
        failed item into a running state, or (unless `force`, for an output the store lost) a
        done item to failed. Those updates come from a second delivery of a task whose work
        already finished (its worker died after the work, before the ack); applied, they would
        take a finished item out of the counts of a job that is already done.
        A job already deleted (a very late redelivery after the sweep) is left deleted.
        """
        sets = [self._k(job, "items"), self._k(job, "done"), self._k(job, "failed")]
        if not self.r.eval(_SET_ITEM, 3, *sets, str(i), state, json.dumps(fields), int(force)):
            return False
        pipe = self.r.pipeline()
        self._progressed(pipe, job, self.clock())
        pipe.eval(_START, 1, self._k(job))
        pipe.execute()
        self._event(job, {"i": i, "state": state, "error": fields.get("error", "") if state == "failed" else ""})
        return True

    def requeue(self, job: str, indices: list[int]) -> None:
        """Start these items over (a retry or a recompose): queued again, counted nowhere."""
        items, pipe = self.items(job), self.r.pipeline()
        for i in indices:
            item = {k: v for k, v in items[i].items() if k != "error"}
            pipe.hset(self._k(job, "items"), str(i), json.dumps({**item, "state": "queued"}))
            pipe.srem(self._k(job, "done"), i)
            pipe.srem(self._k(job, "failed"), i)
        pipe.execute()

    def _hset(self, pipe, job: str, fields: dict) -> None:
        """Set `fields` of the job's record, if it still has one (see _HSET_IF_EXISTS)."""
        pipe.eval(_HSET_IF_EXISTS, 1, self._k(job), *[x for kv in fields.items() for x in kv])

    def set_status(self, job: str, status: str, **fields) -> None:
        pipe = self.r.pipeline()
        self._hset(pipe, job, {"status": status, **fields})
        if status in ("done", "failed"):
            pipe.zrem(_ACTIVE, job)
        else:
            self._progressed(pipe, job, self.clock())
        pipe.execute()
        self._event(job, {"status": status, "error": fields.get("error", "")})

    def stalled(self, now: float, stall_s: float) -> list[str]:
        """Queued or running jobs without progress for `stall_s`.

        A launched job, queued or running, may just be waiting its turn: behind other jobs, or (its
        tail at a low priority, tasks/submit.py) behind other users' first images. It counts as stalled
        when no job at all has progressed for `stall_s` (the workers or the broker are gone), or when
        the workers have taken, from its queue at its lowest priority or below, a message sent after
        its launch: then none of its messages can still be waiting, and they were lost. One never
        launched (its launch message lost) is stalled on its own clock.
        """
        cutoff = now - stall_s
        candidates = self.r.zrangebyscore(_ACTIVE, 0, cutoff)
        if not candidates:
            return []
        service_idle = float(self.r.get(_PROGRESS) or 0) <= cutoff
        taken = [(*member.rsplit(":", 1), sent) for member, sent in self.r.zrange(_TAKEN, 0, -1, withscores=True)]
        pipe = self.r.pipeline(transaction=False)
        for job in candidates:
            pipe.hmget(self._k(job), "status", "launched", "launch_queue", "lowest_priority")
        stuck = []
        for job, (status, launched, queue, lowest) in zip(candidates, pipe.execute(), strict=True):
            if service_idle or not launched:
                stuck.append(job)
            elif not queue:  # launched before jobs recorded their queue: a running one is stuck
                if status != "queued":
                    stuck.append(job)
            elif any(q == queue and int(p) >= int(lowest) and sent > float(launched) for q, p, sent in taken):
                stuck.append(job)  # its messages were all taken, yet it made no progress: lost
        return stuck

    def fail_if_stalled(self, job: str, cutoff: float, reason: str) -> bool:
        """Mark `job` failed with `reason` unless it finished or progressed after `cutoff` meanwhile."""
        failed = bool(self.r.eval(_FAIL_IF_STALLED, 2, self._k(job), _ACTIVE, cutoff, reason, job))
        if failed:
            self._event(job, {"status": "failed", "error": reason})
        return failed

    def set_options(self, job: str, options: dict) -> None:
        self._hset(self.r, job, {"options": json.dumps(options)})

    def _event(self, job: str, fields: dict) -> None:
        # The stream is a live feed, not the record: capped, and it expires with the job (see _EVENT).
        own = [str(x) for k, v in fields.items() if k != "status" for x in (k, v)]
        keys = [self._k(job), self._k(job, "done"), self._k(job, "failed"), self._k(job, "events")]
        self.r.eval(_EVENT, 4, *keys, int(self.retention_s) + 3600, fields.get("status") or "", *own)

    def events(self, job: str, last_id: str = "0", block_ms: int = 15_000) -> list[tuple[str, dict]]:
        """Progress events after `last_id`, waiting up to `block_ms` for the first one."""
        reply = self.r.xread({self._k(job, "events"): last_id}, block=block_ms, count=1000)
        return [(eid, fields) for _, entries in reply for eid, fields in entries]

    def last_event_id(self, job: str) -> str:
        """The id of the newest progress event, to follow the stream from now on ("0" if none yet)."""
        newest = self.r.xrevrange(self._k(job, "events"), count=1)
        return newest[0][0] if newest else "0"

    def jobs_of(self, owner: str, limit: int = 100) -> list[str]:
        return self.r.zrevrange(f"cutout:jobs:{owner}", 0, limit - 1)

    def created_before(self, cutoff: float) -> list[str]:
        return self.r.zrangebyscore("cutout:jobs", 0, cutoff)

    def delete(self, job: str) -> None:
        owner = self.r.hget(self._k(job), "owner")
        keys = [self._k(job, p) for p in ("", "items", "done", "failed", "events")]
        pipe = self.r.pipeline()
        pipe.delete(*keys)
        pipe.zrem("cutout:jobs", job)
        pipe.zrem(_ACTIVE, job)
        if owner:
            pipe.zrem(f"cutout:jobs:{owner}", job)
        # Kept as long as a record would be: a task redelivered hours later still finds it.
        pipe.set(self._tombstone(job), self.clock(), ex=int(self.retention_s))
        pipe.zadd(_DELETED, {job: self.clock()})
        pipe.execute()

    def deleted(self, job: str) -> bool:
        """Whether the job was deleted (by its owner or the sweep) within the retention period."""
        return bool(self.r.exists(self._tombstone(job)))

    def deleted_before(self, cutoff: float) -> list[str]:
        """Deleted jobs whose objects the purge has yet to delete again, deleted before `cutoff`."""
        return self.r.zrangebyscore(_DELETED, 0, cutoff)

    def purged(self, jobs: list[str]) -> None:
        if jobs:
            self.r.zrem(_DELETED, *jobs)

    def live_jobs(self, owner: str) -> int:
        """How many of the owner's jobs are queued or running (what fan-out ranks their images by)."""
        return sum(s in ("queued", "running") for s in self.statuses(self.jobs_of(owner, limit=1000)))

    def taken(self, queue: str, priority: int, sent_at: float) -> None:
        """A worker took a message sent at `sent_at` from `queue` at `priority` (see stalled())."""
        self.r.zadd(_TAKEN, {f"{queue}:{priority}": sent_at}, gt=True)

    def launched(self, job: str, when: float | None = None, queue: str = "", lowest: int = 0) -> None:
        """The job's launch message ran (its chord is in the queues): from now on a `queued` job is
        waiting its turn, not lost. `when=None` clears the mark before a new launch (retry, recompose)."""
        if when is None:
            self.r.hdel(self._k(job), "launched", "launch_queue", "lowest_priority")
            return
        pipe = self.r.pipeline()  # deleted during its fan-out: no record is made again (_hset)
        self._hset(pipe, job, {"launched": when, "launch_queue": queue, "lowest_priority": lowest})
        self._progressed(pipe, job, when)
        pipe.execute()

    def count_attempt(self, task_id: str, ttl_s: int) -> int:
        """How many times this task id has started: brokers do not count redeliveries, we do."""
        key = f"cutout:attempts:{task_id}"
        pipe = self.r.pipeline()
        pipe.incr(key)
        pipe.expire(key, ttl_s)
        return pipe.execute()[0]
