"""Handing back the messages a dead worker had taken, without waiting for the visibility timeout.

With acks_late, a worker killed outright leaves its tasks in the Redis transport's
`unacked` hash, and Redis hands them out again only after the visibility timeout
(twice the hard time limit: minutes). A supervisor that knows the dead worker was
the only consumer of its queue can put them back at once; tasks are idempotent, so
even a message requeued twice costs time, never a wrong result.
"""

import json

from kombu import Connection


def requeue_unacked(broker_url: str, queue: str) -> int:
    """Put every taken-but-unacked message of `queue` back at the head of its own priority list (kombu
    restores it by its `priority` property: tests/tasks/test_fairness.py), to be taken next; returns how many.

    Only for a queue whose every consumer is known to be dead (cutout serve's single
    worker per queue); with live consumers their in-flight tasks would run twice.
    """
    with Connection(broker_url) as conn:
        channel = conn.default_channel
        client = channel.client
        requeued = 0
        for tag, raw in client.hgetall(channel.unacked_key).items():
            _payload, _exchange, routing_key = json.loads(raw)
            if routing_key == queue:
                # Not leftmost: kombu LPUSHes new messages and BRPOPs from the right, so its
                # "leftmost" is the back of the queue, behind everything published since.
                channel.qos.restore_by_tag(tag, client=client, leftmost=False)
                requeued += 1
        return requeued
