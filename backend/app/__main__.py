"""Command line of the service: ``python -m app keys create|list|revoke`` and ``python -m app serve``.

Keys are written to the service's database (SFT_DATA_DIR / SFT_DATABASE_PATH, as the server reads
them), so they take effect on a running server at its next request.
"""

from __future__ import annotations

import argparse
import json
import sys

from .core.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    keys = commands.add_parser("keys", help="Create, list and revoke API keys.")
    key_commands = keys.add_subparsers(dest="action", required=True)
    create = key_commands.add_parser("create", help="Create a key; it is printed this once.")
    create.add_argument("--name", required=True, help="The user it is for (what they create is theirs).")
    create.add_argument("--admin", action="store_true", help="An admin key: sees and acts on everything.")
    listing = key_commands.add_parser("list", help="Every key: id, prefix, name, admin, created, revoked.")
    listing.add_argument("--json", action="store_true", help="As JSON.")
    revoke = key_commands.add_parser("revoke", help="Revoke a key by its id (or prefix sft_<id>).")
    revoke.add_argument("key_id")

    serve = commands.add_parser("serve", help="Start the server (one worker), refusing to start open on a "
                                "non-loopback address.")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info")

    args = parser.parse_args(argv)
    if args.command == "keys":
        return _keys(args)
    return _serve(args)


def _keys(args: argparse.Namespace) -> int:
    from .store import SQLiteStore
    from .store.keys import InvalidKeyName, KeyStore

    settings = Settings()
    store = SQLiteStore(settings.resolved_database_path)
    try:
        keys = KeyStore(store)
        if args.action == "create":
            try:
                record, key = keys.create(args.name, admin=args.admin)
            except InvalidKeyName as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            kind = "admin key" if record.admin else "key"
            print(f"Created {kind} {record.key_id} for {record.name}. Keep it now: it is not shown again.",
                  file=sys.stderr)
            print(key)
            return 0
        if args.action == "list":
            records = keys.list()
            if args.json:
                print(json.dumps([r.to_dict() for r in records], indent=2))
                return 0
            print(f"{'ID':<12} {'PREFIX':<16} {'NAME':<20} {'ADMIN':<6} {'CREATED':<26} REVOKED")
            for r in records:
                print(f"{r.key_id:<12} {r.prefix:<16} {r.name:<20} {'yes' if r.admin else 'no':<6} "
                      f"{r.created_at[:25]:<26} {r.revoked_at or '-'}")
            return 0
        record = keys.revoke(args.key_id)
        if record is None:
            print(f"error: no API key {args.key_id} (python -m app keys list shows them)", file=sys.stderr)
            return 1
        print(f"Revoked key {record.key_id} ({record.name}).", file=sys.stderr)
        return 0
    finally:
        store.close()


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .api.auth import AuthSetupError, resolve_auth_mode
    from .store import SQLiteStore
    from .store.keys import KeyStore

    settings = Settings()
    store = SQLiteStore(settings.resolved_database_path)
    try:
        resolve_auth_mode(settings.auth, args.host, KeyStore(store))
    except AuthSetupError as exc:
        print(exc, file=sys.stderr)
        return 2
    finally:
        store.close()
    from .main import create_app

    uvicorn.run(create_app(host=args.host), host=args.host, port=args.port, workers=1, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
