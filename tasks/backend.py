"""A Redis result backend for processes that send tasks but never wait on their results.

Celery's Redis backend subscribes the sender to the result channel of every task it
sends (so that `.get()` could be answered by pub/sub) and keeps the subscription
until the result is read (celery/celery#3808). cutout sends thousands of tasks and
reads job state from the JobStore, never results: those subscriptions would only
grow in the web app, and an AsyncResult collected after Redis went away retries its
unsubscribe for ~20 s. Storing results and counting chord parts work as before.
"""

from celery.backends.redis import RedisBackend


class SendOnlyRedisBackend(RedisBackend):
    def on_task_call(self, producer, task_id):
        pass  # no result subscription: nobody in this process waits on it

    def add_pending_result(self, result, weak=False, start_drainer=True):
        # Nor for a chord's header results, which canvas registers with `res.then(...)`: each
        # would be a SUBSCRIBE, and its UNSUBSCRIBE at garbage collection blocks ~20 s (and then
        # raises "the Celery application must be restarted") if Redis is down or restarting then.
        return result


def send_only(result_backend: str) -> str:
    """The `result_backend` setting that selects this class for a redis:// URL (others unchanged)."""
    if result_backend.startswith(("redis://", "rediss://", "unix://")):
        return f"tasks.backend:SendOnlyRedisBackend+{result_backend}"
    return result_backend
