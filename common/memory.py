"""Giving freed heap back to the OS after a burst. glibc's free() keeps what it frees inside its
heaps (only the top of the main heap shrinks by itself), and gRPC core allocates from many
threads, so after thousands of streams close the process kept their RSS for good. `malloc_trim`
releases the free pages of every arena; `Trimmer` calls it, off the event loop, once many
streams have ended."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim(0), or None where there is none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


MALLOC_TRIM = _malloc_trim()


class Trimmer:
    """Counts ended streams; after `every` of them, trims the heap `delay_s` later (so one mass
    close costs one trim), in a worker thread: ctypes drops the GIL and the loop goes on."""

    def __init__(self, every: int = 1000, delay_s: float = 2.0) -> None:
        self.every = every
        self.delay_s = delay_s
        self._ended = 0
        self._pending: asyncio.TimerHandle | None = None

    def ended(self) -> None:
        self._ended += 1
        if self._ended < self.every or self._pending is not None or MALLOC_TRIM is None:
            return
        with contextlib.suppress(RuntimeError):  # no running loop (a synchronous caller): skip
            self._pending = asyncio.get_running_loop().call_later(self.delay_s, self._trim)

    def _trim(self) -> None:
        self._ended, self._pending = 0, None
        if MALLOC_TRIM is not None:
            asyncio.get_running_loop().run_in_executor(None, MALLOC_TRIM)
