"""Command-line flags that also read environment variables, shared by the server's and the
gateway's settings: a table of options, flags added to a parser, values read flag-first."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

# flag (without "--") -> (settings attribute, type, help)
Options = Mapping[str, tuple[str, type, str]]


def env_name(env_prefix: str, flag: str) -> str:
    return env_prefix + flag.upper().replace("-", "_")


def add(parser: argparse.ArgumentParser, options: Options, env_prefix: str, flag_prefix: str = "") -> None:
    """Adds the flags; `flag_prefix` (e.g. "gateway-") keeps two tables apart on one command."""
    for flag, (_, kind, help_text) in options.items():
        env = env_name(env_prefix, flag)
        parser.add_argument(
            f"--{flag_prefix}{flag}", type=kind, default=None, help=f"{help_text} [env {env}]"
        )


def read(
    args: argparse.Namespace,
    options: Options,
    environ: Mapping[str, str],
    env_prefix: str,
    flag_prefix: str = "",
) -> dict[str, object]:
    """Attribute -> value for every option given, by flag or else by environment variable."""
    values: dict[str, object] = {}
    for flag, (attr, kind, _) in options.items():
        value = getattr(args, (flag_prefix + flag).replace("-", "_"), None)
        env = environ.get(env_name(env_prefix, flag))
        if value is None and env is not None:
            value = kind(env)
        if value is not None:
            values[attr] = value
    return values
