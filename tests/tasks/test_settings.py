"""Settings.from_env reads every CUTOUT_* variable; configure() turns them into Celery's reliability settings."""

import re
from pathlib import Path

import pytest
from celery import Celery

from matting_core.decode import DEFAULT_MAX_PIXELS
from tasks.app import configure
from tasks.queues import queue_lists
from tasks.settings import REDIS, Settings, local_redis_url

BROKER = "redis://broker.internal:6379/2"
EVERY_VARIABLE = {
    "CUTOUT_BROKER_URL": BROKER,
    "CUTOUT_RESULT_BACKEND": "redis://results.internal:6379/3",
    "CUTOUT_REDIS_URL": "redis://jobs.internal:6379/4",
    "CUTOUT_HOME": "/srv/cutout",
    "CUTOUT_STORAGE": "local",
    "CUTOUT_S3_BUCKET": "cutouts",
    "CUTOUT_S3_ENDPOINT_URL": "http://minio:9000",
    "CUTOUT_S3_REGION": "eu-west-1",
    "CUTOUT_RETENTION_HOURS": "1.5",
    "CUTOUT_DEVICE": "cuda:1",
    "CUTOUT_PRECISION": "bf16",
    "CUTOUT_GPU": "1",
    "CUTOUT_BATCH_SIZE": "16",
    "CUTOUT_MAX_WAIT_MS": "35",
    "CUTOUT_MAX_PIXELS": "1000000",
    "CUTOUT_SOFT_TIME_LIMIT": "50",
    "CUTOUT_TIME_LIMIT": "60",
    "CUTOUT_MAX_ATTEMPTS": "5",
    "CUTOUT_MODELS": "u2net, u2netp",
    "CUTOUT_DEFAULT_MODEL": "u2netp",
    "CUTOUT_METRICS_ADDR": "0.0.0.0",
    "CUTOUT_ORPHAN_AGE": "120",
}


def test_defaults_without_any_variable():
    s = Settings.from_env({})
    assert (s.broker_url, s.result_backend, s.redis_url) == (REDIS, REDIS, REDIS)
    assert s.home == Path.home() / ".cache" / "cutout"
    assert (s.storage, s.s3_bucket, s.s3_endpoint_url, s.s3_region) == ("local", None, None, None)
    assert (s.device, s.precision, s.gpu) == ("auto", "auto", None)
    assert (s.batch_size, s.max_wait_ms, s.max_pixels) == (0, 20, DEFAULT_MAX_PIXELS)
    assert (s.retention_hours, s.soft_time_limit, s.time_limit, s.max_attempts) == (24, 300, 360, 3)
    assert (s.models, s.default_model, s.preload) == ((), "u2net", ())
    assert (s.metrics_addr, s.orphan_s) == ("127.0.0.1", 600)  # loopback, like every port of `cutout serve`
    assert s == Settings()


def test_every_variable_is_read():
    assert Settings.from_env(EVERY_VARIABLE) == Settings(
        broker_url=BROKER, result_backend="redis://results.internal:6379/3", redis_url="redis://jobs.internal:6379/4",
        home=Path("/srv/cutout"), storage="local", s3_bucket="cutouts", s3_endpoint_url="http://minio:9000",
        s3_region="eu-west-1", retention_hours=1.5, device="cuda:1", precision="bf16", gpu="1", batch_size=16,
        max_wait_ms=35, max_pixels=1_000_000, soft_time_limit=50, time_limit=60, max_attempts=5,
        models=("u2net", "u2netp"), default_model="u2netp", metrics_addr="0.0.0.0", orphan_s=120,
    )


def test_the_process_environment_is_read_by_default(monkeypatch):
    monkeypatch.setenv("CUTOUT_BATCH_SIZE", "6")
    assert Settings.from_env().batch_size == 6


def test_result_backend_and_job_records_default_to_the_broker():
    s = Settings.from_env({"CUTOUT_BROKER_URL": BROKER})
    assert (s.broker_url, s.result_backend, s.redis_url) == (BROKER, BROKER, BROKER)


def test_an_empty_variable_counts_as_unset():
    s = Settings.from_env({"CUTOUT_BATCH_SIZE": "", "CUTOUT_BROKER_URL": "", "CUTOUT_GPU": ""})
    assert (s.batch_size, s.broker_url, s.gpu) == (0, REDIS, None)


@pytest.mark.parametrize(
    ("env", "storage"),
    [
        ({"CUTOUT_S3_BUCKET": "cutouts"}, "s3"),
        ({"CUTOUT_S3_BUCKET": "cutouts", "CUTOUT_STORAGE": "local"}, "local"),
        ({"CUTOUT_S3_ENDPOINT_URL": "http://minio:9000"}, "local"),
    ],
)
def test_storage_is_s3_when_a_bucket_is_named_unless_set_explicitly(env, storage):
    assert Settings.from_env(env).storage == storage


def test_a_hard_time_limit_alone_brings_the_soft_limit_below_it():
    s = Settings.from_env({"CUTOUT_TIME_LIMIT": "60"})
    assert s.soft_time_limit == 50 and s.time_limit == 60


def test_a_soft_limit_at_or_above_the_hard_limit_is_refused_naming_both():
    with pytest.raises(ValueError, match="CUTOUT_SOFT_TIME_LIMIT.*CUTOUT_TIME_LIMIT"):
        Settings.from_env({"CUTOUT_SOFT_TIME_LIMIT": "60", "CUTOUT_TIME_LIMIT": "60"})


def test_the_visibility_timeout_is_twice_the_hard_limit_unless_set_and_only_above_it():
    assert Settings.from_env({"CUTOUT_TIME_LIMIT": "60"}).visibility_timeout == 120
    assert Settings.from_env({"CUTOUT_TIME_LIMIT": "10", "CUTOUT_VISIBILITY_TIMEOUT": "12"}).visibility_timeout == 12
    with pytest.raises(ValueError, match="CUTOUT_VISIBILITY_TIMEOUT.*CUTOUT_TIME_LIMIT"):
        Settings.from_env({"CUTOUT_TIME_LIMIT": "10", "CUTOUT_VISIBILITY_TIMEOUT": "10"})


@pytest.mark.parametrize("env", [{"CUTOUT_MODELS": "u2net,modnet"}, {"CUTOUT_DEFAULT_MODEL": "modnet"}])
def test_an_unknown_model_is_refused_naming_its_variable_and_the_choices(env):
    [variable] = env
    with pytest.raises(ValueError, match=f"{variable}: unknown model 'modnet'; choose one of u2net, u2netp"):
        Settings.from_env(env)


@pytest.mark.parametrize(("env", "preload"), [
    ({}, ()),
    ({"CUTOUT_WARMUP": "1"}, ("u2net",)),
    ({"CUTOUT_WARMUP": "1", "CUTOUT_DEFAULT_MODEL": "u2netp"}, ("u2netp",)),
    ({"CUTOUT_MODELS": "U2NETP,u2net"}, ("u2netp", "u2net")),
    ({"CUTOUT_MODELS": "u2netp", "CUTOUT_WARMUP": "1"}, ("u2netp",)),
])
def test_a_gpu_worker_preloads_the_models_named_else_with_warm_up_the_default(env, preload):
    assert Settings.from_env(env).preload == preload


def test_a_number_that_is_not_one_names_its_variable():
    with pytest.raises(ValueError, match="CUTOUT_BATCH_SIZE='eight' is not a number"):
        Settings.from_env({"CUTOUT_BATCH_SIZE": "eight"})


@pytest.fixture
def conf():
    return configure(Celery("t"), Settings.from_env(EVERY_VARIABLE)).conf


def test_configure_sets_the_urls(conf):
    assert conf.broker_url == BROKER
    # The same Redis, through the backend that never subscribes to result channels.
    assert conf.result_backend == "tasks.backend:SendOnlyRedisBackend+redis://results.internal:6379/3"


def test_the_visibility_timeout_outlasts_the_hard_limit_everywhere_celery_reads_it(conf):
    assert conf.task_soft_time_limit == 50 and conf.task_time_limit == 60
    readings = [conf.broker_transport_options["visibility_timeout"],
                conf.result_backend_transport_options["visibility_timeout"], conf.visibility_timeout]
    assert all(vt > conf.task_time_limit for vt in readings), readings


@pytest.mark.parametrize("settings", [Settings(), Settings.from_env(EVERY_VARIABLE)], ids=["defaults", "set"])
def test_the_soft_limit_fires_before_the_hard_limit(settings):
    conf = configure(Celery("t"), settings).conf
    assert 0 < conf.task_soft_time_limit < conf.task_time_limit


def test_a_task_is_acked_after_it_ran_and_requeued_when_its_worker_dies(conf):
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1


@pytest.mark.parametrize(
    ("task", "queue"),
    [("cutout.infer", "gpu"), ("cutout.finish", "cpu"), ("cutout.package", "cpu"), ("cutout.sweep", "cpu"),
     ("cutout.mark_failed", "cpu")],
)
def test_inference_goes_to_the_gpu_queue_and_everything_else_to_cpu(task, queue):
    app = configure(Celery("t"), Settings())
    assert app.amqp.router.route({}, task)["queue"].name == queue


def test_results_expire_with_the_jobs(conf):
    assert conf.result_expires == 1.5 * 3600


def test_sending_a_task_subscribes_to_no_result_channel(redis_url):
    from tasks.backend import SendOnlyRedisBackend

    app = configure(Celery("t"), Settings.from_env({"CUTOUT_BROKER_URL": redis_url}))
    assert isinstance(app.backend, SendOnlyRedisBackend)
    app.backend.on_task_call(None, "some-task-id")
    assert app.backend.result_consumer._pubsub is None or not app.backend.result_consumer.subscribed_to


def test_the_broker_keeps_kombus_priority_lists_that_the_queue_length_counts(conf):
    options = conf.broker_transport_options
    assert (options["priority_steps"], options["sep"]) == ([0, 3, 6, 9], "\x06\x16")
    assert queue_lists("gpu") == ["gpu", "gpu\x06\x163", "gpu\x06\x166", "gpu\x06\x169"]
    assert "priority_steps" not in conf.result_backend_transport_options


def test_beat_purges_deleted_jobs_often_enough_for_nothing_to_stay_a_minute(conf):
    from tasks.upkeep import PURGE_AFTER_S

    entry = conf.beat_schedule["purge-deleted-jobs"]
    assert entry["task"] == "cutout.purge" and PURGE_AFTER_S + entry["schedule"] <= 40


def test_every_setting_is_a_row_of_the_readmes_settings_table():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    start = readme.index("| variable | default | meaning |")
    table = readme[start:readme.index("\n\n", start)]
    documented = set(re.findall(r"`(CUTOUT_[A-Z0-9_]+)`", table))
    missing = [Settings.variable(name) for name in Settings.model_fields if Settings.variable(name) not in documented]
    assert not missing, f"add a row to README.md's settings table for {missing}"


def test_every_setting_says_what_it_is_for():
    assert all(field.description for field in Settings.model_fields.values())


def test_the_redis_port_alone_moves_every_url_to_the_redis_cutout_serve_starts():
    s = Settings.from_env({"CUTOUT_REDIS_PORT": "6400"})
    assert local_redis_url(6400) == "redis://127.0.0.1:6400/0"
    assert (s.broker_url, s.result_backend, s.redis_url) == (local_redis_url(6400),) * 3


def test_a_bad_value_names_its_variable_and_a_good_one():
    with pytest.raises(ValueError, match=r"CUTOUT_SESSION_HOURS='soon' is not a number; set it to e.g. 12"):
        Settings.from_env({"CUTOUT_SESSION_HOURS": "soon"})


def test_constructing_settings_reads_no_environment(monkeypatch):
    monkeypatch.setenv("CUTOUT_BATCH_SIZE", "6")
    assert Settings().batch_size == 0 and Settings.from_env().batch_size == 6


def test_the_web_servers_limits_come_from_the_settings():
    from web.server import Limits

    s = Settings.from_env({"CUTOUT_HEADER_TIMEOUT": "4", "CUTOUT_BODY_TIMEOUT": "9",
                           "CUTOUT_MAX_CONNECTIONS_PER_IP": "0", "CUTOUT_WORKER_CONNECTIONS": "50"})
    assert Limits.of(s) == Limits(header_timeout=4.0, body_timeout=9.0, per_ip=0) and s.worker_connections == 50
    assert Limits.of(Settings()) == Limits()  # one set of defaults
