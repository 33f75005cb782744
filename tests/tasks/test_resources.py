"""Resources: a process's storage, job store and batchers, built from Settings in one place, on first use."""

import threading

import pytest
from celery import Celery

from tasks import app as app_module
from tasks.app import configure, resources_of
from tasks.resources import Resources
from tasks.settings import Settings
from tasks.storage import LocalStorage


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path, broker_url="redis://127.0.0.1:1/0")  # nothing listens on port 1


def test_nothing_is_built_until_it_is_used(settings):
    resources = Resources(settings)
    assert not {"storage", "jobs"} & set(vars(resources)) and resources._batchers is None


def test_storage_and_job_store_come_from_the_settings_and_are_built_once(settings, tmp_path):
    resources = Resources(settings)
    assert isinstance(resources.storage, LocalStorage) and resources.storage.root == tmp_path / "storage"
    assert resources.storage is resources.storage and resources.jobs is resources.jobs
    assert resources.jobs.r.connection_pool.connection_kwargs["port"] == 1  # the settings' Redis, not dialled yet
    assert resources.jobs.retention_s == settings.retention_hours * 3600


def test_threads_arriving_at_once_share_one_set_of_batchers(settings):
    resources, seen = Resources(settings), []
    threads = [threading.Thread(target=lambda: seen.append(resources.batchers)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(b) for b in seen}) == 1


def test_configure_hands_the_app_resources_of_its_settings(settings):
    app = configure(Celery("t"), settings)
    assert resources_of(app).settings is settings
    assert app.conf.broker_url == settings.broker_url


def test_an_app_nothing_configured_reads_the_environment_once(monkeypatch, tmp_path):
    monkeypatch.setenv("CUTOUT_HOME", str(tmp_path))
    app = Celery("t")
    first = resources_of(app)
    assert first.settings.home == tmp_path and resources_of(app) is first


def test_a_prefork_child_builds_its_own_resources_from_the_same_settings(settings, monkeypatch):
    parent = Resources(settings)
    monkeypatch.setattr(app_module.app, "resources", parent, raising=False)
    app_module._own_resources()
    child = app_module.app.resources
    assert child is not parent and child.settings is settings


def test_a_celery_command_with_a_bad_setting_stops_naming_it_instead_of_running_on_defaults(monkeypatch, capsys):
    monkeypatch.setenv("CUTOUT_MODELS", "modnet")
    with pytest.raises(SystemExit):
        app_module._read_settings(Celery("t"))
    assert "CUTOUT_MODELS: unknown model 'modnet'" in capsys.readouterr().err
