"""The cutout web app: portal and REST API. It stores uploads and enqueues jobs; it never loads the model.

    gunicorn 'web:create_app()'
"""

import logging
import time

from flask import Flask, Response, g, jsonify, request

# The rest of the app (Celery, Redis, boto3...) is imported in create_app, not here: gunicorn's
# master imports this package to read web.gunicorn_conf, and its gevent workers must patch the
# standard library before those libraries are imported (web/server.py).

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Scripts and styles only from this site; images also from blob: (previews) and the store (presigned URLs).
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data: https: http:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
}


def create_app(config: dict | None = None) -> Flask:
    """The app for `config` (Flask keys; its CUTOUT_SETTINGS, else the environment read here, the web
    process's edge). Its storage and job store are the Celery app's Resources: one of each per process."""
    from prometheus_client import CONTENT_TYPE_LATEST

    from tasks import metrics
    from tasks.app import app as celery_app
    from tasks.app import configure
    from tasks.settings import Settings
    from web import config as web_config
    from web import errors, uploads
    from web.extensions import Services, csrf, limiter
    from web.users import UserStore

    config = config or {}
    settings = config.get("CUTOUT_SETTINGS") or Settings.from_env()
    app = Flask(__name__)
    app.request_class = uploads.Request  # a large upload's files spool to disk, not memory
    app.config.update(web_config.flask_config(settings))
    app.config.update(config)
    # The web process enqueues through the same Celery app the workers run, on the same broker; a
    # second app in one process with the same settings (gunicorn reloads, tests) shares its resources.
    resources = getattr(celery_app, "resources", None)
    if resources is None or resources.settings != settings:
        configure(celery_app, settings)
    app.extensions["cutout"] = Services(resources=celery_app.resources, users=UserStore.from_url(settings.redis_url))
    app.config.setdefault("RATELIMIT_STORAGE_URI", settings.redis_url)
    app.config.setdefault("RATELIMIT_DEFAULT", app.config["RATE_LIMIT"])
    # The limiter would put Retry-After on every answer (and raise ours on a 429 of our own);
    # under its own name it still tells clients when the window resets. web/errors.py sets
    # Retry-After on the limiter's 429s.
    app.config.setdefault("RATELIMIT_HEADER_RETRY_AFTER", "X-RateLimit-Retry-After")
    from web import api, auth, compat, openapi, portal

    # Who is asking first: the limiter's own before_request then counts per user, not per address.
    auth.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)
    errors.register(app)
    _setup_logging(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(compat.bp)
    app.register_blueprint(portal.bp)
    app.register_blueprint(openapi.bp)
    # API clients bring a key (unforgeable cross-site); session callers are checked in api_user_required.
    csrf.exempt(api.bp)
    csrf.exempt(compat.bp)

    @app.get("/healthz")
    @limiter.exempt
    def healthz():
        return jsonify({"status": "ok"})

    @app.get("/metrics")
    @limiter.exempt
    def metrics_view():
        # Unauthenticated like any Prometheus target: the NetworkPolicy lets only Prometheus reach it.
        return Response(metrics.exposition(metrics.registry(settings.broker_url)), mimetype=CONTENT_TYPE_LATEST)

    @app.before_request
    def _start_clock():
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"  # bounded: routes, not URLs
        metrics.http_duration.labels(request.method, endpoint, str(response.status_code)).observe(seconds)
        log.info("request", extra={"method": request.method, "path": request.path, "status": response.status_code,
                                   "ms": round(seconds * 1000, 1), "user": g.get("user")})
        return response

    return app


log = logging.getLogger("cutout.web")


def _setup_logging(app: Flask) -> None:
    """JSON lines on stderr (gunicorn passes them through); the test client keeps pytest's capture."""
    from tasks import logs

    if app.testing or app.config["CUTOUT_SETTINGS"].log_format == "text":
        return
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    logs.use_json(root)
    log.setLevel(logging.INFO)
