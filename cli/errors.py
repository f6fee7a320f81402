"""What the command line reports as one line and exit code 2 instead of a traceback."""

from __future__ import annotations


class UsageError(Exception):
    """A bad flag value, an unusable configuration or an address that cannot be bound."""
