"""What every request reaches through the app: storage, job records, users, the limiter and CSRF."""

from dataclasses import dataclass

from flask import current_app, g
from flask_limiter import Limiter
from flask_wtf.csrf import CSRFProtect

from tasks.jobs import JobStore
from tasks.resources import Resources
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
    """The process's Resources (shared with the Celery app it enqueues through) and the user store."""

    resources: Resources
    users: UserStore

    @property
    def settings(self) -> Settings:
        return self.resources.settings

    @property
    def storage(self) -> Storage:
        return self.resources.storage

    @property
    def jobs(self) -> JobStore:
        return self.resources.jobs


def services() -> Services:
    return current_app.extensions["cutout"]
