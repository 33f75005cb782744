"""Who is asking: an API key (`Authorization: Bearer KEY` or `X-Api-Key: KEY`) or a portal session.

A request that authenticates with its session cookie and changes something must
carry the CSRF token too (a form field or the X-CSRFToken header); one that
brings its own key cannot be forged by another site, so it needs none.

A session counts only while its id is live in Redis (web/users.py) and younger
than CUTOUT_SESSION_HOURS: logout ends that session, so a copy of the cookie
stops working with it; a new password or API key ends all of the user's.
Logout ends only the session it is sent from: signing out of a shared computer
should not sign the person out of their own; ending them all is what a new
password or key is for.
"""

import functools
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import validate_csrf
from wtforms.validators import ValidationError

from web.errors import ApiError
from web.extensions import limiter, services
from web.login_throttle import LoginThrottle

_AUTH_FIELDS = ("user", "sid", "iat")  # what login puts in the signed cookie

bp = Blueprint("auth", __name__)


def api_key_from_request() -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("X-Api-Key") or None


def load_user() -> None:
    """before_request: g.user is the caller's name or None; g.by_key tells how they proved it."""
    g.user, g.by_key = None, False
    key = api_key_from_request()
    if key:
        g.user, g.by_key = services().users.user_for_key(key), True
        return
    g.user = _session_user()


def _session_user() -> str | None:
    name, sid, issued = (session.get(field) for field in _AUTH_FIELDS)
    if name is None:
        return None
    lifetime_s = current_app.config["SESSION_HOURS"] * 3600
    # iat too, not only the stored end: a shorter CUTOUT_SESSION_HOURS applies to sessions already issued.
    if isinstance(issued, (int, float)) and time.time() < issued + lifetime_s \
            and services().users.session_is_live(name, sid):
        return name
    # Signed out, ended by a new password or key, or too old. Only the sign-in is dropped: the
    # CSRF token stays, so a form already on screen (sign in again, log out) still posts.
    for field in _AUTH_FIELDS:
        session.pop(field, None)
    g.session_ended = True
    return None


def api_user_required(view):
    """401 without a user; CSRF checked on session-authenticated writes."""
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if g.user is None:
            if api_key_from_request():
                message = "the API key is not valid (revoked or mistyped); ask for a new one"
            elif g.get("session_ended"):
                message = ("this session has ended (signed out, a new password or key, or older than "
                           "CUTOUT_SESSION_HOURS); sign in again, or send an API key")
            else:
                message = "sign in, or send an API key as 'Authorization: Bearer KEY' or 'X-Api-Key: KEY'"
            raise ApiError(401, "unauthorized", message, {"WWW-Authenticate": 'Bearer realm="cutout"'})
        if not g.by_key and request.method not in ("GET", "HEAD", "OPTIONS"):
            try:
                validate_csrf(request.headers.get("X-CSRFToken") or request.form.get("csrf_token"))
            except ValidationError as err:
                raise ApiError(400, "csrf_failed", f"{err.args[0]}; reload the page and try again") from None
        return view(*args, **kwargs)
    return wrapped


def login_required(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if g.user is None:
            if g.get("session_ended"):
                flash("Your session has ended; sign in again.")
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)
    return wrapped


def _safe_next(target: str | None) -> str:
    # Only paths on this site: "//evil.example" or "https://evil.example" would be an open redirect.
    parts = urlsplit(target or "")
    if not target or parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("portal.upload")
    return target


def client_address() -> str:
    """The caller's address; behind CUTOUT_TRUSTED_PROXY_HOPS proxies, the one they saw."""
    hops = current_app.config["TRUSTED_PROXY_HOPS"]
    if hops > 0:
        # Each proxy appends the address it was reached from: the hops-th from the right is
        # the last one no client could have written.
        forwarded = [a.strip() for a in ",".join(request.headers.getlist("X-Forwarded-For")).split(",")]
        if len(forwarded) >= hops and forwarded[-hops]:
            return forwarded[-hops]
    return request.remote_addr or "unknown"


def _throttle() -> LoginThrottle:
    return current_app.extensions["cutout-login-throttle"]


def _too_many_tries(name: str, wait_s: int):
    at = (datetime.now(UTC) + timedelta(seconds=wait_s)).strftime("%H:%M:%S UTC")
    flash(f"Too many failed sign-ins for this account or from this address. Try again in {wait_s} s "
          f"(at {at}); each further failure doubles the wait, up to 15 minutes.")
    return render_template("login.html", username=name), 429, {"Retry-After": str(wait_s)}


@bp.route("/login", methods=["GET", "POST"])
@limiter.exempt  # its own throttle; flask-limiter would overwrite that Retry-After with its window's
def login():
    if request.method == "POST":
        name, password = request.form.get("username", ""), request.form.get("password", "")
        address = client_address()
        # Before the password is looked at: a throttled try costs no scrypt.
        wait_s = _throttle().attempt(name, address)
        if wait_s:
            return _too_many_tries(name, wait_s)
        users = services().users
        if users.check_password(name, password):
            _throttle().succeeded(name, address)
            if g.user and not g.by_key:  # signing in again over a live session: it ends, not only its cookie
                users.end_session(g.user, session["sid"])
            session.clear()  # a fresh session on login (no fixation)
            lifetime_s = current_app.config["SESSION_HOURS"] * 3600
            session.update(user=name, sid=users.start_session(name, lifetime_s), iat=time.time())
            session.permanent = True
            return redirect(_safe_next(request.args.get("next")))
        flash("That user name and password do not match.")
        return render_template("login.html", username=name), 401
    return render_template("login.html", username="")


@bp.post("/logout")
def logout():
    name, sid = session.get("user"), session.get("sid")
    if isinstance(name, str) and isinstance(sid, str):
        services().users.end_session(name, sid)  # this cookie, and every copy of it, ends here
    session.clear()
    return redirect(url_for("auth.login"))


def init_app(app) -> None:
    app.before_request(load_user)
    app.register_blueprint(bp)
    app.extensions["cutout-login-throttle"] = LoginThrottle(
        app.extensions["cutout"].users.r, account_cap=app.config["LOGIN_FAILURES"],
        address_cap=app.config["LOGIN_FAILURES_PER_IP"], first_wait_s=app.config["LOGIN_WAIT_S"])
