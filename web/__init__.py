"""The cutout web app: portal and REST API. It stores uploads and enqueues jobs; it never loads the model.

    gunicorn 'web:create_app()'
"""

from flask import Flask, jsonify

from tasks.app import app as celery_app
from tasks.app import configure
from tasks.jobs import JobStore
from tasks.storage import make_storage
from web import config as web_config
from web import errors
from web.extensions import Services, csrf, limiter
from web.users import UserStore

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Scripts and styles only from this site; images also from blob: (previews) and the store (presigned URLs).
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data: https: http:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
}


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(web_config.from_env())
    app.config.update(config or {})
    settings = app.config["CUTOUT_SETTINGS"]
    # The web process enqueues through the same Celery app the workers run, on the same broker.
    configure(celery_app, settings)
    app.extensions["cutout"] = Services(
        settings=settings,
        storage=make_storage(settings.storage, home=settings.home, bucket=settings.s3_bucket,
                             endpoint_url=settings.s3_endpoint_url, region=settings.s3_region),
        jobs=JobStore.from_url(settings.redis_url, retention_s=settings.retention_hours * 3600),
        users=UserStore.from_url(settings.redis_url),
    )
    app.config.setdefault("RATELIMIT_STORAGE_URI", settings.redis_url)
    app.config.setdefault("RATELIMIT_DEFAULT", app.config["RATE_LIMIT"])
    csrf.init_app(app)
    limiter.init_app(app)
    errors.register(app)

    from web import api, auth, compat, openapi, portal

    auth.init_app(app)
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

    @app.after_request
    def _headers(response):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return app
