"""Settings from flags and environment variables, for the server's and the gateway's settings alike:
one table per settings class maps each flag to an attribute (dotted for a nested settings group),
a type and a help text; a flag wins over its environment variable, which wins over the default."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Option:
    attr: str  # settings attribute; "group.name" for a field of a nested settings dataclass
    kind: type
    help: str


class OptionTable:
    """Flags (`--flag`, optionally `--<flag_prefix>flag`) and environment variables
    (`<env_prefix>FLAG`) for the fields of one settings dataclass."""

    def __init__(
        self,
        settings: type[Any],
        env_prefix: str,
        options: Mapping[str, Option],
        groups: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.env_prefix = env_prefix
        self.options = options
        # Help sections: attribute (or "group." prefix of nested settings) -> section title; "" is
        # the section of everything else.
        self.groups = dict(groups or {"": "options"})

    def group_of(self, option: Option) -> str:
        group = option.attr.rpartition(".")[0]
        return self.groups.get(option.attr) or self.groups.get(group + ".") or self.groups.get("", "options")

    def env_name(self, flag: str) -> str:
        return self.env_prefix + flag.upper().replace("-", "_")

    def add(self, parser: argparse.ArgumentParser, flag_prefix: str = "") -> None:
        """Adds the flags in their help sections; `flag_prefix` (e.g. "gateway-") keeps two tables
        apart on one command."""
        defaults = self.settings()
        sections: dict[str, Any] = {}
        for flag, option in self.options.items():
            title = self.group_of(option)
            if title not in sections:
                sections[title] = parser.add_argument_group(title)
            default = _get(defaults, option.attr)
            shown = f"; default {default}" if default not in ("", None) else ""
            sections[title].add_argument(
                f"--{flag_prefix}{flag}",
                type=option.kind,
                default=None,
                metavar=option.kind.__name__.upper() if option.kind is not str else "TEXT",
                help=f"{option.help} [env {self.env_name(flag)}{shown}]",
            )

    def read(
        self, args: argparse.Namespace, environ: Mapping[str, str], flag_prefix: str = ""
    ) -> dict[str, object]:
        """Attribute -> value for every option given, by flag or else by environment variable."""
        values: dict[str, object] = {}
        for flag, option in self.options.items():
            value = getattr(args, (flag_prefix + flag).replace("-", "_"), None)
            env = environ.get(self.env_name(flag))
            if value is None and env is not None:
                value = option.kind(env)
            if value is not None:
                values[option.attr] = value
        return values

    def build(self, values: Mapping[str, object]) -> Any:
        """The settings: defaults with `values` applied, nested groups included."""
        top: dict[str, object] = {}
        groups: dict[str, dict[str, object]] = {}
        for attr, value in values.items():
            group, _, name = attr.rpartition(".")
            if group:
                groups.setdefault(group, {})[name] = value
            else:
                top[name] = value
        defaults = self.settings()
        for group, fields in groups.items():
            top[group] = dataclasses.replace(getattr(defaults, group), **fields)
        return dataclasses.replace(defaults, **top)


def _get(settings: object, attr: str) -> object:
    for name in attr.split("."):
        settings = getattr(settings, name)
    return settings
