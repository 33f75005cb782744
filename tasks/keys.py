"""Storage keys, derived only from the job and the item.

The same task always writes the same key, so a redelivered task (acks_late,
at-least-once) overwrites its earlier output instead of leaving a duplicate.
"""

import re

_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_EXT = re.compile(r"[A-Za-z0-9]{1,10}")


def valid_job_id(job) -> bool:
    return isinstance(job, str) and bool(_JOB_ID.fullmatch(job))


def _job(job: str) -> str:
    # Job ids become path segments; anything else could climb out of the job's prefix.
    if not isinstance(job, str) or not _JOB_ID.fullmatch(job):
        raise ValueError(f"job id {job!r} must be 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'")
    return job


def _item(i: int) -> int:
    if isinstance(i, bool) or not isinstance(i, int) or i < 0:
        raise ValueError(f"item index {i!r} must be an int >= 0")
    return i


def job_prefix(job: str) -> str:
    return f"jobs/{_job(job)}/"


def input_key(job: str, i: int) -> str:
    return f"{job_prefix(job)}in/{_item(i)}"


def alpha_key(job: str, i: int) -> str:
    return f"{job_prefix(job)}alpha/{_item(i)}.png"


def output_key(job: str, i: int, ext: str) -> str:
    if not isinstance(ext, str) or not _EXT.fullmatch(ext):
        raise ValueError(f"extension {ext!r} must be 1 to 10 letters or digits, without the dot")
    return f"{job_prefix(job)}out/{_item(i)}.{ext}"


def zip_key(job: str) -> str:
    return f"{job_prefix(job)}cutout-{job}.zip"
