"""The web app's configuration: the shared Settings plus upload limits, read from CUTOUT_* at the edge."""

import os
import secrets

from tasks.settings import Settings

MB = 1024 * 1024


# Words of the placeholders in this repository's examples (secret.example.yaml, the dev overlay,
# docker-compose); a key from secrets.token_hex or token_urlsafe never spells them by chance.
_PLACEHOLDER_WORDS = ("secret", "change", "example", "placeholder", "output-of", "dev-only")


def _strong(key: str | None) -> bool:
    return bool(key) and len(key) >= 32 and len(set(key)) >= 10 and not any(
        word in key.lower() for word in _PLACEHOLDER_WORDS)


def from_env(env: dict | None = None) -> dict:
    env = os.environ if env is None else env
    get = lambda name, default: env.get(f"CUTOUT_{name}") or default  # noqa: E731
    production = get("ENV", "development") == "production"
    max_files = int(get("MAX_FILES", 500))
    secret = get("SECRET_KEY", None)
    if production and not _strong(secret):
        raise RuntimeError("CUTOUT_ENV=production needs CUTOUT_SECRET_KEY: at least 32 random characters, not a "
                           "placeholder from the repository (e.g. `python -c 'import secrets; "
                           "print(secrets.token_hex(32))'`); with a known key anyone could forge a session")
    return {
        "CUTOUT_SETTINGS": Settings.from_env(env),
        "PRODUCTION": production,
        # A random key per process is fine for development: sessions end with the process.
        "SECRET_KEY": secret or secrets.token_hex(32),
        "MAX_FILE_BYTES": int(float(get("MAX_FILE_MB", 25)) * MB),
        "MAX_FILES": max_files,
        # Werkzeug's own cap on multipart parts (1,000 by default), kept above ours: past MAX_FILES
        # the user gets our message; past this the parser stops before spooling any more files.
        "MAX_FORM_PARTS": max_files + 100,
        # Flask answers 413 itself above this, before reading the body.
        "MAX_CONTENT_LENGTH": int(float(get("MAX_REQUEST_MB", 1024)) * MB),
        # Zip uploads: the sum of what the members claim once inflated (zip bombs).
        "MAX_ARCHIVE_BYTES": int(float(get("MAX_ARCHIVE_MB", 2048)) * MB),
        # What one request may store in all: its files plus every byte its archives inflate to,
        # counted as inflated (headers may lie). As much as a request may carry uncompressed.
        "MAX_INFLATED_BYTES": int(float(get("MAX_INFLATED_MB", 1024)) * MB),
        # Stored uploads of one user's retained jobs (tasks/quota.py); deleting jobs frees it. 0: no quota.
        "USER_QUOTA_BYTES": int(float(get("USER_QUOTA_MB", 4096)) * MB),
        "MAX_ACTIVE_JOBS": int(get("MAX_ACTIVE_JOBS", 10)),
        # Open event streams per user, across web processes (web/streams.py); 429 past it.
        "MAX_STREAMS_PER_USER": int(get("MAX_STREAMS_PER_USER", 8)),
        # A stream ends after this long; the browser reconnects with Last-Event-ID and loses nothing.
        "STREAM_SECONDS": float(get("STREAM_SECONDS", 300)),
        "RATE_LIMIT": get("RATE_LIMIT", "600 per minute"),
        "SUBMIT_RATE_LIMIT": get("SUBMIT_RATE_LIMIT", "60 per minute"),
        # How long the synchronous endpoints (remove, batch-process, removebg) wait for workers.
        "SYNC_TIMEOUT": float(get("SYNC_TIMEOUT", 120)),
        "FETCH_MAX_BYTES": int(float(get("FETCH_MAX_MB", 25)) * MB),
        "FETCH_TIMEOUT": float(get("FETCH_TIMEOUT", 15)),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": production,
        # Sessions end this long after sign-in whatever happens meanwhile (web/auth.py checks it);
        # the cookie's own expiry says the same and is not renewed by each request.
        "SESSION_HOURS": float(get("SESSION_HOURS", 12)),
        "PERMANENT_SESSION_LIFETIME": max(1, round(float(get("SESSION_HOURS", 12)) * 3600)),
        "SESSION_REFRESH_EACH_REQUEST": False,
        # Login throttle (web/login_throttle.py): failures before each try waits, per account and
        # per address, and the first wait, which doubles with each further failure up to 15 minutes.
        "LOGIN_FAILURES": int(get("LOGIN_FAILURES", 5)),
        "LOGIN_FAILURES_PER_IP": int(get("LOGIN_FAILURES_PER_IP", 50)),
        "LOGIN_WAIT_S": float(get("LOGIN_WAIT_S", 30)),
        # Proxies in front whose X-Forwarded-For is believed (the ingress: 1); 0 = the socket's address.
        "TRUSTED_PROXY_HOPS": int(get("TRUSTED_PROXY_HOPS", 0)),
        "WTF_CSRF_TIME_LIMIT": None,  # the token lives as long as the session
    }
