"""What a task reaches: this process's Resources, held by the Celery app that runs it.

configure() (tasks/app.py) sets them at the process's edge, and each prefork child gets its own at
worker_process_init; these functions only read them, so there is nothing here to clear.
"""

from tasks.app import app, resources_of
from tasks.batcher import Batchers
from tasks.jobs import JobStore
from tasks.resources import Resources
from tasks.settings import Settings
from tasks.storage import Storage


def resources() -> Resources:
    return resources_of(app)


def settings() -> Settings:
    return resources().settings


def storage() -> Storage:
    return resources().storage


def jobs() -> JobStore:
    return resources().jobs


def batchers() -> Batchers:
    return resources().batchers
