"""Waiting for a condition in tests: poll it the way a client would, and fail the test, saying what
was awaited, when it does not hold in time."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

import pytest

Check = Callable[[], bool | Awaitable[bool]]


async def until(check: Check, timeout: float = 10.0, what: str = "", interval: float = 0.02) -> None:
    """Return once `check()` (plain or async) is true; fail the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() >= deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what or check}")
        await asyncio.sleep(interval)
