"""The caller's storage quota (tasks/quota.py) around storing a request's uploads, as the API's 413."""

from collections.abc import Callable

from flask import current_app, g

from tasks.quota import Quota, QuotaExceeded
from web.errors import ApiError
from web.extensions import services
from web.uploads import megabytes


def store_within(needed: int, store: Callable[[], str]) -> str:
    """`store()` (it stores the uploads and returns the job) if the caller's quota has room for
    `needed` more bytes; else 413 naming used, limit and needed, before anything is stored.

    413, not 429: waiting does not help by itself (a job holds its bytes until it is deleted
    or expires after CUTOUT_RETENTION_HOURS), so a client that retries 429s would only hammer.
    """
    limit = current_app.config["USER_QUOTA_BYTES"]
    if limit <= 0:  # no quota (CUTOUT_USER_QUOTA_MB=0)
        return store()
    try:
        with Quota(services().jobs, limit).reserve(g.user, needed) as reservation:
            job = store()
            reservation.commit(job)
            return job
    except QuotaExceeded as err:
        raise ApiError(413, "quota_exceeded",
                       f"this upload needs {megabytes(err.needed)} but your jobs already hold {megabytes(err.used)} "
                       f"of your {megabytes(err.limit)} storage quota (CUTOUT_USER_QUOTA_MB); delete finished jobs "
                       "(DELETE /api/v1/jobs/<id>, or Delete in My jobs) to free space, or send fewer files"
                       ) from None
