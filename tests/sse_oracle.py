"""The generic path the prepared event encoders replaced, kept verbatim: json_format.MessageToDict,
json.dumps and the regex-splitting SSE encoder. tests/test_event_encoding.py holds the gateway's
bytes to it; bench/sse_encode_bench.py times it as "before"."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from agentrun.v1 import run_pb2
from google.protobuf import json_format

from gateway import sse

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def old_dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def old_encode(frames: Iterable[sse.Frame], event_id: str | None = None) -> bytes:
    items = list(frames)
    out: list[str] = []
    for i, frame in enumerate(items):
        if event_id is not None and i == len(items) - 1:
            out.append(f"id: {event_id}\n")
        if frame.event is not None:
            if _LINE_BREAK.search(frame.event):
                raise ValueError(f"SSE event name with a line break: {frame.event!r}")
            out.append(f"event: {frame.event}\n")
        out.extend(f"data: {line}\n" for line in _LINE_BREAK.split(frame.data))
        out.append("\n")
    return "".join(out).encode()


def old_canonical(event: run_pb2.RunEvent) -> bytes:
    data = old_dumps({"event": json_format.MessageToDict(event)})
    return old_encode([sse.Frame(data)], str(event.seq))
