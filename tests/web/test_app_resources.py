"""The app factory hands views the process's Resources: the same storage and job store the tasks use."""

from tasks import context
from tasks.app import app as celery_app
from tests.web.conftest import make_app
from web import create_app


def test_views_and_tasks_share_one_storage_and_job_store(app):
    services = app.extensions["cutout"]
    assert services.resources is celery_app.resources
    assert services.storage is context.storage() and services.jobs is context.jobs()


def test_a_second_app_with_the_same_settings_builds_nothing_again(app):
    again = create_app({"TESTING": True, "CUTOUT_SETTINGS": app.extensions["cutout"].settings})
    assert again.extensions["cutout"].resources is app.extensions["cutout"].resources


def test_an_app_with_other_settings_points_the_celery_app_at_them(app, settings_with):
    other = settings_with(max_wait_ms=7)
    again = make_app({}, CUTOUT_SETTINGS=other)
    assert celery_app.resources.settings == other and again.extensions["cutout"].settings == other
