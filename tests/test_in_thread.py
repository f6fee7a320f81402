"""server/store/sqlite.py `in_thread`, the hop to the SQLite threads: the function runs in the pool's
thread, its result or its exception reaches the awaiting task, and an await cancelled meanwhile
drops the outcome without disturbing the loop."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from server.store.sqlite import in_thread


def _add(a: int, b: int) -> tuple[int, str]:
    return a + b, threading.current_thread().name


def _fail() -> None:
    raise LookupError("from the thread")


async def test_the_result_and_the_exception_come_back_from_the_thread() -> None:
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hop") as pool:
        total, thread = await in_thread(pool, _add, 2, 3)
        assert total == 5 and thread.startswith("hop")
        with pytest.raises(LookupError, match="from the thread"):
            await in_thread(pool, _fail)


async def test_a_cancelled_await_drops_the_outcome() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    release = threading.Event()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            waiting = in_thread(pool, release.wait, 10.0)
            waiting.cancel()
            release.set()  # the thread finishes after the cancel: its outcome must go nowhere
            # The pool's one thread runs this after the first: the first outcome was handed back.
            assert (await in_thread(pool, _add, 1, 1))[0] == 2
    finally:
        loop.set_exception_handler(None)
    assert waiting.cancelled() and errors == []
