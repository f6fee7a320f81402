"""Limits the server enforces and the gateway must know to answer the same way."""

from __future__ import annotations

# The deepest offset ListRuns pages to (page-number clients); past it a page is empty.
MAX_SKIP = 100_000
