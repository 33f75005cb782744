"""`cutout users add|list|revoke-key|passwd`: accounts for the portal and the API, kept in Redis (CUTOUT_REDIS_URL)."""

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime


def add_parser(sub) -> None:
    u = sub.add_parser("users", help="manage portal and API users")
    users = u.add_subparsers(dest="users_command", required=True)
    a = users.add_parser("add", help="create a user; prints the password and API key (shown once)")
    a.add_argument("name")
    a.add_argument("--json", action="store_true", help='print {"name", "password", "api_key"}')
    ls = users.add_parser("list", help="list users")
    ls.add_argument("--json", action="store_true")
    r = users.add_parser("revoke-key", help="replace a user's API key; the old one stops working at once and "
                                             "every portal session of the user ends")
    r.add_argument("name")
    r.add_argument("--json", action="store_true", help='print {"name", "api_key"}')
    p = users.add_parser("passwd", help="set a user's password (asked twice at a terminal, else one line "
                                        "from stdin); ends every portal session of the user")
    p.add_argument("name")
    p.add_argument("--generate", action="store_true", help="make up a password and print it (shown once)")
    p.add_argument("--json", action="store_true", help='with --generate, print {"name", "password"}')


def run(args: argparse.Namespace, settings=None) -> int:
    """Run a `cutout users` command on the Redis of `settings` (tasks.settings.Settings, read from
    the environment when not given): the one `cutout serve` starts, unless CUTOUT_REDIS_URL says otherwise."""
    # Imported here, not at the top: they pull in Redis, Celery and Flask (~0.6 s), which
    # `cutout batch` would otherwise pay at every start, since main builds this parser.
    import redis

    from tasks.settings import Settings
    from web.users import UserError, UserStore

    settings = Settings.from_env() if settings is None else settings
    store = UserStore.from_url(settings.redis_url)
    try:
        if args.users_command == "add":
            password, key = store.add(args.name)
            _print(args.json, {"name": args.name, "password": password, "api_key": key},
                   f"user:     {args.name}\npassword: {password}\napi key:  {key}\n(shown once; keep them safe)")
        elif args.users_command == "revoke-key":
            key = store.revoke_key(args.name)
            _print(args.json, {"name": args.name, "api_key": key}, f"new api key for {args.name}: {key}")
        elif args.users_command == "passwd":
            _passwd(store, args)
        else:
            users = store.list()
            _print(args.json, users, "\n".join(f"{u['name']}\tcreated {_when(u['created'])}" for u in users)
                   or "no users yet: cutout users add NAME")
    except UserError as err:
        print(f"cutout: error: {err}", file=sys.stderr)
        return 1
    except redis.ConnectionError as err:
        print(f"cutout: error: cannot reach Redis at {settings.redis_url} ({err}); start it (make run) or set "
              "CUTOUT_REDIS_PORT to the port of `cutout serve`'s Redis, or CUTOUT_REDIS_URL", file=sys.stderr)
        return 1
    return 0


def _passwd(store, args: argparse.Namespace) -> None:
    from web.users import UserError

    if not store.exists(args.name):  # before asking for a password that could not be used
        raise UserError(f"no user named {args.name!r}; `cutout users list` shows who exists")
    if args.generate:
        password = store.set_password(args.name)
        _print(args.json, {"name": args.name, "password": password},
               f"new password for {args.name}: {password}\n(shown once; every session of {args.name} has ended)")
        return
    if sys.stdin.isatty():
        password = getpass.getpass(f"new password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise UserError("the two passwords differ; nothing changed")
    else:  # a script: `printf '%s\n' "$PW" | cutout users passwd NAME`
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UserError("no password given; type one, pipe one line to stdin, or use --generate")
    store.set_password(args.name, password)
    _print(args.json, {"name": args.name}, f"password of {args.name} changed; every session of {args.name} has ended")


def _print(as_json: bool, value, text: str) -> None:
    print(json.dumps(value) if as_json else text)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
