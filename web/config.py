"""The web app's Flask configuration, derived from the one Settings (tasks/settings.py) in the app factory."""

import secrets

from tasks.settings import Settings

MB = 1024 * 1024


# Words of the placeholders in this repository's examples (secret.example.yaml, the dev overlay,
# docker-compose); a key from secrets.token_hex or token_urlsafe never spells them by chance.
_PLACEHOLDER_WORDS = ("secret", "change", "example", "placeholder", "output-of", "dev-only")


def _strong(key: str | None) -> bool:
    return bool(key) and len(key) >= 32 and len(set(key)) >= 10 and not any(
        word in key.lower() for word in _PLACEHOLDER_WORDS)


def flask_config(settings: Settings) -> dict:
    """Flask's and the views' configuration keys for `settings` (the views read app.config)."""
    production = settings.env == "production"
    if production and not _strong(settings.secret_key):
        raise RuntimeError("CUTOUT_ENV=production needs CUTOUT_SECRET_KEY: at least 32 random characters, not a "
                           "placeholder from the repository (e.g. `python -c 'import secrets; "
                           "print(secrets.token_hex(32))'`); with a known key anyone could forge a session")
    return {
        "CUTOUT_SETTINGS": settings,
        "PRODUCTION": production,
        # A random key per process is fine for development: sessions end with the process.
        "SECRET_KEY": settings.secret_key or secrets.token_hex(32),
        "MAX_FILE_BYTES": int(settings.max_file_mb * MB),
        "MAX_FILES": settings.max_files,
        # Werkzeug's own cap on multipart parts (1,000 by default), kept above ours: past MAX_FILES
        # the user gets our message; past this the parser stops before spooling any more files.
        "MAX_FORM_PARTS": settings.max_files + 100,
        # Flask answers 413 itself above this, before reading the body.
        "MAX_CONTENT_LENGTH": int(settings.max_request_mb * MB),
        # Zip uploads: the sum of what the members claim once inflated (zip bombs).
        "MAX_ARCHIVE_BYTES": int(settings.max_archive_mb * MB),
        # What one request may store in all: its files plus every byte its archives inflate to,
        # counted as inflated (headers may lie). As much as a request may carry uncompressed.
        "MAX_INFLATED_BYTES": int(settings.max_inflated_mb * MB),
        # Stored uploads of one user's retained jobs (tasks/quota.py); deleting jobs frees it. 0: no quota.
        "USER_QUOTA_BYTES": int(settings.user_quota_mb * MB),
        "MAX_ACTIVE_JOBS": settings.max_active_jobs,
        # Open event streams per user, across web processes (web/streams.py); 429 past it.
        "MAX_STREAMS_PER_USER": settings.max_streams_per_user,
        # A stream ends after this long; the browser reconnects with Last-Event-ID and loses nothing.
        "STREAM_SECONDS": settings.stream_seconds,
        "RATE_LIMIT": settings.rate_limit,
        "SUBMIT_RATE_LIMIT": settings.submit_rate_limit,
        # How long the synchronous endpoints (remove, batch-process, removebg) wait for workers.
        "SYNC_TIMEOUT": settings.sync_timeout,
        "FETCH_MAX_BYTES": int(settings.fetch_max_mb * MB),
        "FETCH_TIMEOUT": settings.fetch_timeout,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": production,
        # Sessions end this long after sign-in whatever happens meanwhile (web/auth.py checks it);
        # the cookie's own expiry says the same and is not renewed by each request.
        "SESSION_HOURS": settings.session_hours,
        "PERMANENT_SESSION_LIFETIME": max(1, round(settings.session_hours * 3600)),
        "SESSION_REFRESH_EACH_REQUEST": False,
        # Login throttle (web/login_throttle.py): failures before each try waits, per account and
        # per address, and the first wait, which doubles with each further failure up to 15 minutes.
        "LOGIN_FAILURES": settings.login_failures,
        "LOGIN_FAILURES_PER_IP": settings.login_failures_per_ip,
        "LOGIN_WAIT_S": settings.login_wait_s,
        # Proxies in front whose X-Forwarded-For is believed (the ingress: 1); 0 = the socket's address.
        "TRUSTED_PROXY_HOPS": settings.trusted_proxy_hops,
        "WTF_CSRF_TIME_LIMIT": None,  # the token lives as long as the session
    }


def from_env(env: dict | None = None) -> dict:
    """flask_config of the Settings read from `env` (os.environ by default)."""
    return flask_config(Settings.from_env(env))
