"""What every request reaches through the app: storage, job records, users, the limiter and CSRF."""

from dataclasses import dataclass

from flask import current_app, g
from flask_limiter import Limiter
from flask_wtf.csrf import CSRFProtect

from tasks.jobs import JobStore
from tasks.settings import Settings
from tasks.storage import Storage
from web.users import UserStore

csrf = CSRFProtect()


def _rate_key() -> str:
    # Per user once known (many users may share one office IP), else per address.
    from flask import request

    return f"user:{g.user}" if getattr(g, "user", None) else f"ip:{request.remote_addr}"


limiter = Limiter(key_func=_rate_key, headers_enabled=True)


@dataclass
class Services:
    settings: Settings
    storage: Storage
    jobs: JobStore
    users: UserStore


def services() -> Services:
    return current_app.extensions["cutout"]
