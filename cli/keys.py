"""`agentrun keys create --org ORG --user USER --role ROLE`: makes a random API key, prints it once
and the keys-file entry (its hash only) that lets it in. Nothing is stored by the command."""

from __future__ import annotations

import argparse
import sys

from server.auth import keys
from server.auth.identity import ROLES, USER


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser(
        "create", help="print a new API key (once) and the keys-file entry (its hash) to add"
    )
    create.add_argument("--org", required=True, help="the tenant the key acts for")
    create.add_argument("--user", required=True, help="the user id runs of the key are attributed to")
    create.add_argument("--role", default=USER, choices=ROLES, help="admin, user or reader (default user)")
    create.add_argument("--name", default="", help="a note for people reading the keys file")


def run(args: argparse.Namespace) -> None:
    try:
        _, text = keys.create(args.org, args.user, args.role, args.name)
    except keys.AuthConfigError as exc:
        sys.exit(f"agentrun keys: {exc}")
    print(text)
