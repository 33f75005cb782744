"""`cutout users add|list|revoke-key`: accounts for the portal and the API, kept in Redis (CUTOUT_REDIS_URL)."""

import argparse
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
    r = users.add_parser("revoke-key", help="replace a user's API key; the old one stops working at once")
    r.add_argument("name")
    r.add_argument("--json", action="store_true", help='print {"name", "api_key"}')


def run(args: argparse.Namespace, env: dict | None = None) -> int:
    # Imported here, not at the top: they pull in Redis, Celery and Flask (~0.6 s), which
    # `cutout batch` would otherwise pay at every start, since main builds this parser.
    import redis

    from tasks.settings import Settings
    from web.users import UserError, UserStore

    store = UserStore.from_url(Settings.from_env(env).redis_url)
    try:
        if args.users_command == "add":
            password, key = store.add(args.name)
            _print(args.json, {"name": args.name, "password": password, "api_key": key},
                   f"user:     {args.name}\npassword: {password}\napi key:  {key}\n(shown once; keep them safe)")
        elif args.users_command == "revoke-key":
            key = store.revoke_key(args.name)
            _print(args.json, {"name": args.name, "api_key": key}, f"new api key for {args.name}: {key}")
        else:
            users = store.list()
            _print(args.json, users, "\n".join(f"{u['name']}\tcreated {_when(u['created'])}" for u in users)
                   or "no users yet: cutout users add NAME")
    except UserError as err:
        print(f"cutout: error: {err}", file=sys.stderr)
        return 1
    except redis.ConnectionError as err:
        print(f"cutout: error: cannot reach Redis ({err}); start it (make run) or set CUTOUT_REDIS_URL",
              file=sys.stderr)
        return 1
    return 0


def _print(as_json: bool, value, text: str) -> None:
    print(json.dumps(value) if as_json else text)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
