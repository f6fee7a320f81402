"""The prepared event encoders (gateway.event_json, the SSE fast paths) give the same bytes as the
generic path they replaced: json_format.MessageToDict, json.dumps and the regex-splitting SSE
encoder, kept verbatim as the oracle in tests/sse_oracle.py. Every event type and payload, unicode, empty and
default values, the int64 and Timestamp edges, unknown enum numbers, and hypothesis-made events."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from agentrun.v1 import run_pb2 as R
from agentrun.v1 import run_service_pb2 as pb
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import codec, event_json, sse, transcode
from gateway.families import a_shapes, a_stream, b_stream
from gateway.families import b as family_b
from tests.sse_oracle import old_canonical, old_dumps, old_encode

INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)
TS_MIN, TS_MAX = -62_135_596_800, 253_402_300_799
RUN_ID = "6f1c2a7e-5d4b-4c8a-9e3f-0a1b2c3d4e5f"
ODD_TEXT = [
    "",
    "t1 ",
    "ünïcödé ✓ 漢字 🙂",
    'quote " back \\ slash',
    "a\nb\r\nc\rd",
    "\x00\x1f\x7f",
    "\u2028\u2029",
]
HUGE_SETTINGS = settings(max_examples=400, deadline=None)


# ---- events ---------------------------------------------------------------------------------


def unknown(number: int) -> Any:
    """An enum number as a field value (the stubs take only the enum's names)."""
    return number


def stamped(event: R.RunEvent, seconds: int, nanos: int) -> R.RunEvent:
    event.create_time.seconds, event.create_time.nanos = seconds, nanos
    return event


def payloads() -> list[R.RunEvent]:
    """One event per payload (and per event type), each payload empty and full."""
    tool = R.ToolCall(id="c1", name="search", arguments_json='{"q":"ü"}', result="[1,2]", is_error=True)
    tool.duration_ms = INT64[1]
    return [
        R.RunEvent(type=R.EVENT_TYPE_START, start=R.StartEvent(session_id="s-1", attempt=INT32[1])),
        R.RunEvent(type=R.EVENT_TYPE_START, start=R.StartEvent()),
        R.RunEvent(type=R.EVENT_TYPE_REASONING_DELTA, text="thinking…"),
        R.RunEvent(type=R.EVENT_TYPE_CONTENT_DELTA, text=""),
        R.RunEvent(type=R.EVENT_TYPE_TOOL_START, tool_call=R.ToolCall(name="search", arguments_json="{}")),
        R.RunEvent(type=R.EVENT_TYPE_TOOL_END, tool_call=tool),
        R.RunEvent(type=R.EVENT_TYPE_TOOL_END, tool_call=R.ToolCall(duration_ms=INT64[0])),
        R.RunEvent(
            type=R.EVENT_TYPE_PAUSED,
            pending_action=R.PendingAction(tool_call_id="c2", tool_name="rm", arguments_json='{"p":"/"}'),
        ),
        R.RunEvent(type=R.EVENT_TYPE_PAUSED, pending_action=R.PendingAction()),
        R.RunEvent(
            type=R.EVENT_TYPE_STOP,
            stop=R.StopEvent(state=R.RUN_STATE_COMPLETED, followups=["Why?", "", "🙂"]),
        ),
        R.RunEvent(type=R.EVENT_TYPE_STOP, stop=R.StopEvent()),
        R.RunEvent(
            type=R.EVENT_TYPE_STOP, stop=R.StopEvent(state=unknown(99), followups=["x"])
        ),  # unknown state
        R.RunEvent(type=R.EVENT_TYPE_ERROR, error=R.RunError(reason="CANCELLED", message="stopped\nby you")),
        R.RunEvent(type=R.EVENT_TYPE_ERROR, error=R.RunError(reason="DEADLINE_EXCEEDED")),
        R.RunEvent(
            type=R.EVENT_TYPE_STATUS, status=R.StatusEvent(state=R.RUN_STATE_RUNNING, reason="RESUMED")
        ),
        R.RunEvent(type=R.EVENT_TYPE_STATUS, status=R.StatusEvent()),
        R.RunEvent(type=R.EVENT_TYPE_UNSPECIFIED),
        R.RunEvent(type=unknown(12345)),  # an unknown type prints as its number
        R.RunEvent(type=unknown(INT32[0]), text="x"),
        R.RunEvent(),
    ]


def corpus() -> list[R.RunEvent]:
    events: list[R.RunEvent] = []
    stamps = [(0, 0), (1_700_000_000, 0), (1_700_000_000, 5_000_000), (1_700_000_000, 123_456_000)]
    stamps += [(1_700_000_001, 123_456_789), (-1, 999_999_999), (TS_MIN, 0), (TS_MAX, 999_999_999)]
    for i, base in enumerate(payloads()):
        for run_id, seq in [(RUN_ID, i + 1), ("", 0), ('rün\n"id"', INT64[1]), (RUN_ID, INT64[0])]:
            event = R.RunEvent(run_id=run_id, seq=seq)
            event.MergeFrom(base)
            events.append(event)
        events += [stamped(R.RunEvent(run_id=RUN_ID, seq=i + 1, type=base.type), *s) for s in stamps]
    for i, text in enumerate(ODD_TEXT):
        for kind in (R.EVENT_TYPE_CONTENT_DELTA, R.EVENT_TYPE_REASONING_DELTA):
            events.append(
                stamped(R.RunEvent(run_id=RUN_ID, seq=i + 2, type=kind, text=text), 1_700_000_000, 7)
            )
    return events


def deltas(count: int) -> list[R.RunEvent]:
    """A stream's realistic run: the slow agent's tokens, a microsecond-ish apart."""
    start = 1_700_000_000.25
    out = []
    for i in range(count):
        at = start + i * 1e-5
        event = R.RunEvent(run_id=RUN_ID, seq=i + 2, type=R.EVENT_TYPE_CONTENT_DELTA, text=f"t{i} ")
        out.append(stamped(event, int(at), int((at - int(at)) * 1e9)))
    return out


def texts() -> st.SearchStrategy[str]:
    return st.text(st.characters(exclude_categories=["Cs"]), max_size=40)  # protobuf holds no surrogates


@st.composite
def events(draw: st.DrawFn) -> R.RunEvent:
    event = R.RunEvent(
        run_id=draw(texts()),
        seq=draw(st.integers(*INT64)),
        type=unknown(draw(st.one_of(st.sampled_from(list(R.EventType.values())), st.integers(*INT32)))),
    )
    if draw(st.booleans()):
        stamped(event, draw(st.integers(TS_MIN, TS_MAX)), draw(st.integers(0, 999_999_999)))
    payload = draw(st.sampled_from(["none", "text", "start", "tool", "pending", "stop", "error", "status"]))
    if payload == "text":
        event.text = draw(texts())
    elif payload == "start":
        event.start.CopyFrom(R.StartEvent(session_id=draw(texts()), attempt=draw(st.integers(*INT32))))
    elif payload == "tool":
        strings = [draw(texts()) for _ in range(4)]
        event.tool_call.CopyFrom(R.ToolCall(id=strings[0], name=strings[1], arguments_json=strings[2]))
        event.tool_call.result, event.tool_call.is_error = strings[3], draw(st.booleans())
        event.tool_call.duration_ms = draw(st.integers(*INT64))
    elif payload == "pending":
        event.pending_action.CopyFrom(R.PendingAction(tool_call_id=draw(texts()), tool_name=draw(texts())))
    elif payload == "stop":
        event.stop.CopyFrom(
            R.StopEvent(state=unknown(draw(st.integers(*INT32))), followups=draw(st.lists(texts())))
        )
    elif payload == "error":
        event.error.CopyFrom(R.RunError(reason=draw(texts()), message=draw(texts())))
    elif payload == "status":
        event.status.CopyFrom(R.StatusEvent(state=unknown(draw(st.integers(0, 9))), reason=draw(texts())))
    return event


# ---- ProtoJSON --------------------------------------------------------------------------------


def test_the_corpus_has_every_event_type_and_payload() -> None:
    found = corpus()
    assert {e.type for e in found} >= set(R.EventType.values())
    assert {e.WhichOneof("payload") for e in found} == {
        None,
        *(f.name for f in R.RunEvent.DESCRIPTOR.oneofs_by_name["payload"].fields),
    }


@pytest.mark.parametrize("event", corpus(), ids=lambda e: f"{e.type}-{e.WhichOneof('payload')}")
def test_prepared_protojson_is_json_formats(event: R.RunEvent) -> None:
    expected = json_format.MessageToDict(event)
    assert event_json.to_json(event) == old_dumps(expected)
    got = event_json.to_dict(event)
    assert old_dumps(got) == old_dumps(expected)  # order too
    assert codec.to_dict(event) == expected
    assert event_json.canonical_sse(event, str(event.seq)) == old_canonical(event)
    assert sse.event_bytes(transcode.CANONICAL_SSE, event) == old_canonical(event)


@HUGE_SETTINGS
@given(event=events())
def test_prepared_protojson_is_json_formats_for_any_event(event: R.RunEvent) -> None:
    assert event_json.to_json(event) == old_dumps(json_format.MessageToDict(event))
    assert old_dumps(event_json.to_dict(event)) == old_dumps(json_format.MessageToDict(event))
    assert sse.event_bytes(transcode.CANONICAL_SSE, event) == old_canonical(event)


def test_realistic_deltas_encode_alike() -> None:
    for event in deltas(3000):
        assert event_json.canonical_sse(event, str(event.seq)) == old_canonical(event)


@pytest.mark.parametrize(("seconds", "nanos"), [(TS_MAX + 1, 0), (TS_MIN - 1, 0), (0, -1), (0, 10**9)])
def test_a_timestamp_json_format_refuses_fails_the_same_way(seconds: int, nanos: int) -> None:
    event = stamped(
        R.RunEvent(run_id=RUN_ID, seq=3, type=R.EVENT_TYPE_CONTENT_DELTA, text="x"), seconds, nanos
    )
    with pytest.raises(json_format.SerializeToJsonError) as generic:
        json_format.MessageToDict(event)
    for prepared in (event_json.to_json, event_json.to_dict, codec.to_dict):
        with pytest.raises(json_format.SerializeToJsonError) as failed:
            prepared(event)
        assert str(failed.value) == str(generic.value)


def test_fields_left_to_json_format_are_printed_by_it() -> None:
    """A type with a double is json_format's whole; a field of it or of a well-known type is
    json_format's alone (Runs in depth: tests/test_run_json.py)."""
    run = R.Run(id=RUN_ID, number=7, state=R.RUN_STATE_COMPLETED, output="ok")
    run.input.options.temperature = 0.1
    run.metadata.update({"family": "a", "n": 1.5, "list": [None, True]})
    run.timeout.seconds = 90
    assert event_json.plan(R.RunOptions.DESCRIPTOR) is None
    assert event_json.plan(R.Run.DESCRIPTOR) is not None
    for message in (run, run.input.options):
        assert event_json.to_dict(message) == json_format.MessageToDict(message)
        assert event_json.to_json(message) == old_dumps(json_format.MessageToDict(message))


def test_other_planned_types_print_as_json_format_does() -> None:
    agent = R.Agent(id="a", is_team=True, member_ids=["x", "ü", ""], tools=[])
    page = pb.ListRunEventsResponse(events=corpus()[:40], next_page_token="n")
    for message in (agent, R.Agent(), page, pb.ListRunEventsResponse()):
        assert event_json.plan(message.DESCRIPTOR) is not None
        assert event_json.to_json(message) == old_dumps(json_format.MessageToDict(message))
        assert old_dumps(event_json.to_dict(message)) == old_dumps(json_format.MessageToDict(message))


# ---- SSE text -------------------------------------------------------------------------------

frames_strategy = st.lists(
    st.builds(sse.Frame, data=st.text(max_size=30), event=st.none() | st.text("abc\r\n", max_size=5)),
    max_size=4,
)


@HUGE_SETTINGS
@given(frames=frames_strategy, event_id=st.none() | st.text("0123:x", max_size=8))
def test_encode_splits_lines_as_before(frames: list[sse.Frame], event_id: str | None) -> None:
    try:
        expected = old_encode(frames, event_id)
    except ValueError:
        with pytest.raises(ValueError, match="line break"):
            sse.encode(frames, event_id)
        return
    assert sse.encode(frames, event_id) == expected
    assert sse.encode(iter(frames), event_id) == expected


@pytest.mark.parametrize("data", ODD_TEXT)
def test_encode_keeps_every_sse_line_break(data: str) -> None:
    frames = [sse.Frame(data, event="x"), sse.Frame(data)]
    assert sse.encode(frames, "9") == old_encode(frames, "9")


# ---- families -------------------------------------------------------------------------------


def test_family_a_frames_are_as_before() -> None:
    stream = [e for e in corpus() + deltas(500) if e.create_time.seconds or e.create_time.nanos]
    for followups in (False, True):
        prepared = a_stream.stream_format(a_shapes.StreamShaper(followups=followups))
        generic = a_shapes.StreamShaper(followups=followups)
        for event in stream:
            shaped = generic.event(event)
            frames = [sse.Frame(old_dumps(shaped))] if shaped is not None else []
            assert sse.event_bytes(prepared, event) == old_encode(frames, f"{event.run_id}:{event.seq}")


def test_family_a_stamps_an_untimed_delta_with_now() -> None:
    fmt = a_stream.stream_format(a_shapes.StreamShaper(followups=False))
    before = int(time.time() * 1000)
    sent = sse.event_bytes(fmt, R.RunEvent(run_id=RUN_ID, seq=2, type=R.EVENT_TYPE_CONTENT_DELTA, text="hi"))
    lines = sent.decode().split("\n")
    assert lines[0] == f"id: {RUN_ID}:2"
    body = json.loads(lines[1].removeprefix("data: "))
    assert body["event"] == "CONTENT_DELTA" and body["data"] == "hi"
    assert before <= body["timestamp"] <= int(time.time() * 1000)


def test_family_b_frames_are_as_before() -> None:
    run = R.Run(id=RUN_ID, state=R.RUN_STATE_RUNNING)
    run.start_time.seconds = 1
    new, old = (b_stream.JobStream(run, heartbeat_s=5.0, clock=lambda: 0.0) for _ in range(2))
    sent = 0
    # STATUS always names a state (B maps it to a job status); other odd events pass.
    for event in [e for e in deltas(50) + corpus() if e.type != R.EVENT_TYPE_STATUS or e.status.state]:
        named = old.frames(event)
        frames = [sse.Frame(old_dumps(b_stream.envelope(n, p)), event=n) for n, p in named]
        expected = old_encode(frames, str(event.seq))
        assert sse.encode(family_b._frames(new.frames(event)), str(event.seq)) == expected
        sent += len(frames)
    assert sent > 10
