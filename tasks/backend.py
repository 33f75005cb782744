"""A Redis result backend for processes that send tasks but never wait on their results.

Celery's Redis backend subscribes the sender to the result channel of every task it
sends (so that `.get()` could be answered by pub/sub) and keeps the subscription
until the result is read (celery/celery#3808). The web app sends thousands of tasks
and reads job state from the JobStore, never results: for it those subscriptions
only grow. Workers keep the stock backend; chords work the same either way.
"""

from celery.backends.redis import RedisBackend


class SendOnlyRedisBackend(RedisBackend):
    def on_task_call(self, producer, task_id):
        pass  # no result subscription: nobody in this process waits on it


def send_only(result_backend: str) -> str:
    """The `result_backend` setting that selects this class for a redis:// URL (others unchanged)."""
    if result_backend.startswith(("redis://", "rediss://", "unix://")):
        return f"tasks.backend:SendOnlyRedisBackend+{result_backend}"
    return result_backend
