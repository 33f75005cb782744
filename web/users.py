"""Accounts in Redis: a scrypt-hashed password, one API key and the portal sessions of each user.

API keys are 256 random bits, so a single SHA-256 is enough to keep them useless if
the database leaks (no dictionary to run through a slow hash); passwords are chosen
by people and get scrypt.

A portal session is a random id in the signed cookie and its hash here, in a sorted set per
user scored by when it ends: logout removes that one id (so a copy of the cookie dies with
it), a new password or a new API key removes them all, and the score is the absolute lifetime.
"""

import hashlib
import hmac
import math
import re
import secrets
import time

import redis
from werkzeug.security import check_password_hash, generate_password_hash

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_USERS = "cutout:users"  # hash: name -> password hash
_KEYS = "cutout:apikeys"  # hash: sha256(key) -> name
_KEY_OF = "cutout:apikey-of"  # hash: name -> sha256(key), to revoke the old key
_CREATED = "cutout:user-created"  # hash: name -> unix time
_SESSIONS = "cutout:sessions:{}"  # sorted set per user: sha256(session id) -> when it ends (unix time)
# Enough for every browser a person signs in from within a session's lifetime; past it the
# oldest end, so a script logging in in a loop cannot grow the set without bound.
_MAX_SESSIONS = 100
_MIN_PASSWORD = 8
# Checked against when the name is unknown, so a login takes as long either way.
_DUMMY_HASH = generate_password_hash("not a password")


class UserError(ValueError):
    """A user name that is invalid, taken or unknown."""


def _digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> str:
    return "ck_" + secrets.token_urlsafe(32)


class UserStore:
    def __init__(self, client: redis.Redis):
        self.r = client

    @classmethod
    def from_url(cls, url: str) -> "UserStore":
        return cls(redis.Redis.from_url(url, decode_responses=True))

    def add(self, name: str, password: str | None = None) -> tuple[str, str]:
        """Create a user; returns (password, api_key), shown once and never stored in clear."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise UserError(f"user name {name!r} must be 1-64 letters, digits, '_', '.', '@' or '-', "
                            "starting with a letter or digit")
        password = password or secrets.token_urlsafe(12)
        if not self.r.hsetnx(_USERS, name, generate_password_hash(password)):
            raise UserError(f"user {name!r} already exists; pick another name or revoke its key")
        self.r.hset(_CREATED, name, time.time())
        return password, self.revoke_key(name)

    def exists(self, name: str) -> bool:
        return bool(self.r.hexists(_USERS, name))

    def names(self) -> list[str]:
        return sorted(self.r.hkeys(_USERS))

    def list(self) -> list[dict]:
        created = self.r.hgetall(_CREATED)
        return [{"name": n, "created": float(created.get(n, 0))} for n in self.names()]

    def check_password(self, name: str, password: str) -> bool:
        stored = self.r.hget(_USERS, name) if isinstance(name, str) else None
        from web.server import off_the_hub  # scrypt in a thread: a gevent worker keeps serving meanwhile

        ok = off_the_hub(check_password_hash, stored or _DUMMY_HASH, password or "")
        return bool(stored) and ok

    def user_for_key(self, api_key: str) -> str | None:
        if not api_key or not api_key.startswith("ck_"):
            return None
        name = self.r.hget(_KEYS, _digest(api_key))
        # The index says who; the reverse map confirms it is still that user's current key.
        if name and hmac.compare_digest(self.r.hget(_KEY_OF, name) or "", _digest(api_key)):
            return name
        return None

    def revoke_key(self, name: str) -> str:
        """Replace the user's API key with a new one (returned); the old key stops working at once."""
        if not self.exists(name):
            raise UserError(f"no user named {name!r}; `cutout users list` shows who exists")
        key = new_api_key()
        old = self.r.hget(_KEY_OF, name)
        pipe = self.r.pipeline()
        if old:
            pipe.hdel(_KEYS, old)
        pipe.hset(_KEYS, _digest(key), name)
        pipe.hset(_KEY_OF, name, _digest(key))
        # A key is revoked when the account may be in the wrong hands: its portal sessions end too.
        pipe.delete(_SESSIONS.format(name))
        pipe.execute()
        return key

    def set_password(self, name: str, password: str | None = None) -> str:
        """Give the user a new password (returned; made up when none is given) and end every session."""
        if not self.exists(name):
            raise UserError(f"no user named {name!r}; `cutout users list` shows who exists")
        password = password or secrets.token_urlsafe(12)
        if len(password) < _MIN_PASSWORD:
            raise UserError(f"a password needs at least {_MIN_PASSWORD} characters; "
                            "use a longer one or let `cutout users passwd NAME --generate` make one")
        pipe = self.r.pipeline()  # MULTI: no request sees the new password with the old sessions
        pipe.hset(_USERS, name, generate_password_hash(password))
        pipe.delete(_SESSIONS.format(name))
        pipe.execute()
        return password

    # --- portal sessions ---------------------------------------------------------------------------

    def start_session(self, name: str, lifetime_s: float) -> str:
        """A new session id for the user's cookie, valid for lifetime_s unless ended sooner."""
        sid, now = secrets.token_urlsafe(16), time.time()
        key = _SESSIONS.format(name)
        pipe = self.r.pipeline()
        pipe.zremrangebyscore(key, "-inf", now)  # the ended ones, so the set holds live sessions only
        pipe.zadd(key, {_digest(sid): now + lifetime_s})
        pipe.zremrangebyrank(key, 0, -_MAX_SESSIONS - 1)
        pipe.expire(key, max(1, math.ceil(lifetime_s)))  # the newest session ends last
        pipe.execute()
        return sid

    def session_is_live(self, name: str, sid: str) -> bool:
        if not isinstance(name, str) or not isinstance(sid, str):
            return False
        ends = self.r.zscore(_SESSIONS.format(name), _digest(sid))
        return ends is not None and ends > time.time()

    def end_session(self, name: str, sid: str) -> None:
        self.r.zrem(_SESSIONS.format(name), _digest(sid))

    def end_sessions(self, name: str) -> None:
        self.r.delete(_SESSIONS.format(name))
