"""server/ids.py: run and session ids are version-4 UUID strings, unique, and a forked child does not
hand out the ids its parent would hand out next."""

from __future__ import annotations

import os
import uuid

from server.ids import RandomIds


def test_ids_are_version_4_uuid_strings_and_unique() -> None:
    ids = RandomIds()
    made = [ids() for _ in range(3000)]  # past one 4 KB pool of random bytes
    assert len(set(made)) == len(made)
    for text in made:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_a_forked_child_draws_new_random_bytes() -> None:
    ids = RandomIds()
    ids()  # the pool now holds the parent's next ids
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write, ids().encode())
        os._exit(0)
    os.close(write)
    from_child = os.read(read, 64).decode()
    os.waitpid(child, 0)
    assert uuid.UUID(from_child).version == 4
    assert from_child != ids()
