"""API keys: random secrets handed out once, kept only as SHA-256 hashes (a keys file or leaked
environment never reveals a usable key), each mapped to an org, a user and a role.

Keys file (YAML):

    keys:
      - hash: sha256:9f86d081...      # from `agentrun keys create`
        org: acme
        user: alice
        role: user                    # admin | user | reader
        name: alice's laptop          # optional, for people

AGENTRUN_API_KEYS: entries `org:user:role:secret` separated by commas or whitespace, where the
secret is `sha256:<hex>` (preferred) or a plain key, hashed on load and then forgotten.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from server.auth.identity import ROLES, Identity

KEY_PREFIX = "ar_"
HASH_PREFIX = "sha256:"
_HEX = re.compile(r"[0-9a-f]{64}")
# Org and user ids end up in SQL parameters and in `org:user:role:secret` entries: no separators.
_NAME = re.compile(r"[A-Za-z0-9._@+-]{1,128}")


class AuthConfigError(ValueError):
    """Auth settings or a keys file that cannot be used; the server refuses to start."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    # 32 random bytes (256 bits), URL-safe: no '.', so a key is never mistaken for a JWT.
    return KEY_PREFIX + secrets.token_urlsafe(32)


def check_identity(org: str, user: str, role: str, where: str) -> Identity:
    if not _NAME.fullmatch(org):
        raise AuthConfigError(f"{where}: org {org!r} must be 1-128 of A-Z a-z 0-9 . _ @ + -")
    if not _NAME.fullmatch(user):
        raise AuthConfigError(f"{where}: user {user!r} must be 1-128 of A-Z a-z 0-9 . _ @ + -")
    if role not in ROLES:
        raise AuthConfigError(f"{where}: role {role!r} must be one of {', '.join(ROLES)}")
    return Identity(org, user, role)


def _parse_hash(value: str, where: str) -> str:
    digest = value.removeprefix(HASH_PREFIX).lower()
    if not _HEX.fullmatch(digest):
        raise AuthConfigError(f"{where}: hash must be sha256:<64 hex digits>")
    return digest


class KeyRing:
    """Key hash -> identity. Looking a presented key up by its hash is a dict lookup on a value the
    caller cannot steer byte by byte, so it leaks no timing information about stored keys."""

    def __init__(self, entries: Mapping[str, Identity] | None = None) -> None:
        self._by_hash: dict[str, Identity] = dict(entries or {})

    def __len__(self) -> int:
        return len(self._by_hash)

    def add(self, digest: str, identity: Identity, where: str) -> None:
        if digest in self._by_hash:
            raise AuthConfigError(f"{where}: the same key is configured twice")
        self._by_hash[digest] = identity

    def lookup(self, key: str) -> Identity | None:
        return self._by_hash.get(hash_key(key))

    @classmethod
    def load(cls, keys_file: Path | None, env_entries: str) -> KeyRing:
        ring = cls()
        if keys_file is not None:
            for digest, identity, where in _file_entries(keys_file):
                ring.add(digest, identity, where)
        for digest, identity, where in _env_entries(env_entries):
            ring.add(digest, identity, where)
        return ring


def _file_entries(path: Path) -> Iterable[tuple[str, Identity, str]]:
    try:
        doc: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise AuthConfigError(f"keys file {path}: {exc}") from None
    doc = {} if doc is None else doc  # an empty file: no keys
    entries = doc.get("keys") or [] if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise AuthConfigError(f"keys file {path}: expected a mapping with a `keys:` list")
    for i, entry in enumerate(entries):
        where = f"keys file {path}, keys[{i}]"
        if not isinstance(entry, dict) or "key" in entry:
            # A plain key in a file would be a secret at rest: only hashes belong there.
            raise AuthConfigError(f"{where}: expected {{hash, org, user, role}} (hashes only, no keys)")
        identity = check_identity(
            str(entry.get("org", "")), str(entry.get("user", "")), str(entry.get("role", "")), where
        )
        yield _parse_hash(str(entry.get("hash", "")), where), identity, where


def _env_entries(text: str) -> Iterable[tuple[str, Identity, str]]:
    for i, item in enumerate(re.split(r"[,\s]+", text.strip()) if text.strip() else []):
        where = f"AGENTRUN_API_KEYS entry {i + 1}"
        parts = item.split(":", 3)
        if len(parts) != 4 or not parts[3]:
            raise AuthConfigError(f"{where}: expected org:user:role:sha256:<hex> (or org:user:role:<key>)")
        org, user, role, secret = parts
        identity = check_identity(org, user, role, where)
        digest = _parse_hash(secret, where) if secret.startswith(HASH_PREFIX) else hash_key(secret)
        yield digest, identity, where


def create(org: str, user: str, role: str, name: str = "") -> tuple[str, str]:
    """A new key and the text to print: the key (shown once) and the entries that configure it."""
    identity = check_identity(org, user, role, "keys create")
    key = new_key()
    digest = HASH_PREFIX + hash_key(key)
    entry = [f"  - hash: {digest}", f"    org: {identity.org_id}", f"    user: {user}", f"    role: {role}"]
    if name:
        entry.append(f"    name: {json.dumps(name)}")  # a JSON string is a YAML string
    text = "\n".join(
        [
            f"# API key for org {org}, user {user}, role {role}. It is shown only now: store it safely.",
            key,
            "# Add this entry to the `keys:` list of the keys file (--keys-file / AGENTRUN_KEYS_FILE):",
            *entry,
            "# or this entry to AGENTRUN_API_KEYS (comma-separated):",
            f"# {org}:{user}:{role}:{digest}",
        ]
    )
    return key, text
