"""The garbage collector of a long-running server. Open streams, runs and connections are
long-lived objects, thousands at a time, and CPython's default thresholds (a young collection every
700 net allocations, an older one every 10 of those) walk them again and again: with 3,000 SSE
streams opening, full collections took 24 s of a 60 s bench phase and stalled the event loop for up
to 2.9 s each, so first frames waited seconds. Collections now come ~15 times less often (young ones
stay short), and what the process loaded at startup is frozen out of every collection."""

from __future__ import annotations

import gc

# Young collections every 10,000 net allocations, the middle generation every 10 of those, the
# oldest only after 100 middle ones (and, as CPython always adds, once it grew by a quarter).
THRESHOLDS = (10_000, 10, 100)


def settle() -> None:
    """Call once the server is up: collect, freeze what startup made, raise the thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
