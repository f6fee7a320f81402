"""`agentrun keys create --org ORG --user USER --role ROLE`: makes a random API key, prints it once
and the keys-file entry (its hash only) that lets it in. Nothing is stored by the command."""

from __future__ import annotations

import argparse
from typing import Any

from cli.errors import UsageError
from server.auth import keys
from server.auth.identity import ROLES, USER


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("keys", help="create API keys for the keys file")
    parser.set_defaults(handler=run)
    actions = parser.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser(
        "create", help="print a new API key (once) and the keys-file entry (its hash) to add"
    )
    create.add_argument("--org", required=True, help="the tenant the key acts for")
    create.add_argument("--user", required=True, help="the user id runs of the key are attributed to")
    create.add_argument("--role", default=USER, choices=ROLES, help="admin, user or reader (default user)")
    create.add_argument("--name", default="", help="a note for people reading the keys file")


def run(args: argparse.Namespace) -> int:
    try:
        _, text = keys.create(args.org, args.user, args.role, args.name)
    except keys.AuthConfigError as exc:
        raise UsageError(f"keys: {exc}") from None
    print(text)
    return 0
