"""Run and session ids: version-4 UUID strings, as str(uuid.uuid4()) makes them, from random bytes
read 4 KB at a time. A submission takes two ids, and each os.urandom call lets go of the GIL, which
the store's writer thread then takes for a while."""

from __future__ import annotations

import os
import uuid

POOL_BYTES = 4096


class RandomIds:
    def __init__(self) -> None:
        self._pool = b""
        self._at = 0
        # A forked child must not hand out its parent's ids.
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pool, self._at = b"", 0

    def __call__(self) -> str:
        at = self._at
        if at + 16 > len(self._pool):
            self._pool, at = os.urandom(POOL_BYTES), 0
        self._at = at + 16
        return str(uuid.UUID(bytes=self._pool[at : at + 16], version=4))


new_id = RandomIds()
