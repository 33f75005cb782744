"""The queues and their Redis lists, used by the Celery app, metrics, KEDA and `cutout serve`.

Apart from tasks/app.py so that what the app imports (metrics) need not import the app."""

QUEUES = ("gpu", "cpu")  # the work queues, each scaled on its length
# Starting a job (fanning its chord out) is a message of its own, so a submit costs one publish
# however many images it has; cpu workers take it from here, ahead of their backlog of images.
CONTROL = "control"
WORKER_QUEUES = {"gpu": "gpu", "cpu": f"cpu,{CONTROL}"}  # what each kind of worker consumes (-Q)
# Message priorities on Redis: kombu keeps one list per step, `queue` for 0 and `queue<SEP><step>` for
# the others, and a worker's BRPOP names them 0 first, so 0 is taken first. These are kombu's own
# defaults, spelled out because tasks/metrics.py and k8s/components/keda count the same lists.
PRIORITY_STEPS = (0, 3, 6, 9)
SEP = "\x06\x16"


def queue_lists(queue: str) -> list[str]:
    """The Redis lists that hold `queue`'s waiting messages, top priority first."""
    return [queue if step == 0 else f"{queue}{SEP}{step}" for step in PRIORITY_STEPS]
