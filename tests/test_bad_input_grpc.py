"""Bad input over gRPC gets a clear answer: INVALID_ARGUMENT naming the field, or NOT_FOUND, never
INTERNAL or UNKNOWN, and it stores nothing. One regression test per case fuzzing found, then property
tests: every RunService request message generated from its descriptor (huge numbers, NaN, odd
Unicode, nested Structs, unknown enum numbers) and random bytes on the wire, against one real server,
after which everything stored still reads back."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import math
from collections import Counter
from collections.abc import AsyncIterable, Awaitable
from typing import Any

import grpc
import pytest
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb
from google.protobuf import duration_pb2, message_factory, struct_pb2, text_format, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Harness, Launcher
from tests.test_runs import details

Code = grpc.StatusCode
RUN_SERVICE = pb.DESCRIPTOR.services_by_name["RunService"]
NEVER = (Code.INTERNAL, Code.UNKNOWN)
MAX_TIMEOUT_S = 7 * 24 * 3600


async def stored(h: Harness) -> int:
    return int((await h.stub.ListRuns(pb.ListRunsRequest())).total_size)


async def refusal(call: Awaitable[Any] | AsyncIterable[Any]) -> tuple[Code, str, list[str], str]:
    """The error `call` (a unary call or a stream) ends with: code, reason, fields, message."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if isinstance(call, AsyncIterable):
            async for _ in call:
                pass
        else:
            await call
    info, fields = details(caught.value)
    return caught.value.code(), info.reason, fields, caught.value.details() or ""


def run_request(**fields: Any) -> pb.RunRequest:
    return pb.RunRequest(agent_id="echo", input=run_pb2.RunInput(message="hi"), **fields)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


# ---- regressions: one per reproduction ---------------------------------------------------------

NOT_RUN_NUMBERS = ["²", "١٢", "1²", str(2**31), str(2**40), str(2**63), str(2**64 + 5), "9" * 40]


def run_id_calls(h: Harness, ref: str) -> dict[str, Awaitable[Any] | AsyncIterable[Any]]:
    """A call of every RPC that takes a run id, with `ref` as the id, but BatchGetRuns."""
    return {
        "GetRun": h.stub.GetRun(pb.GetRunRequest(run_id=ref)),
        "StreamRun": h.stub.StreamRun(pb.StreamRunRequest(run_id=ref)),
        "Continue": h.stub.Continue(pb.ContinueRequest(run_id=ref, decision=run_pb2.DECISION_APPROVE)),
        "CancelRun": h.stub.CancelRun(pb.CancelRunRequest(run_id=ref)),
        "DeleteRun": h.stub.DeleteRun(pb.DeleteRunRequest(run_id=ref)),
        "ListRunEvents": h.stub.ListRunEvents(pb.ListRunEventsRequest(run_id=ref)),
        "ListWebhookDeliveries": h.stub.ListWebhookDeliveries(pb.ListWebhookDeliveriesRequest(run_id=ref)),
        "RetryWebhookDelivery": h.stub.RetryWebhookDelivery(
            pb.RetryWebhookDeliveryRequest(run_id=ref, delivery_id="d")
        ),
        "UpdateRun": h.stub.UpdateRun(
            pb.UpdateRunRequest(run=run_pb2.Run(id=ref), update_mask={"paths": ["metadata"]})
        ),
    }


async def test_run_refs_that_are_no_run_number_are_not_found(h: Harness) -> None:
    """Unicode digits and numbers past the run number column's range (INTEGER: 32 bits on PostgreSQL)
    are no run number: NOT_FOUND in every RPC taking a run id (they crashed the lookup with INTERNAL)."""
    for ref in NOT_RUN_NUMBERS:
        calls = run_id_calls(h, ref)
        got = {name: (await refusal(call))[:2] for name, call in calls.items()}
        assert got == {name: (Code.NOT_FOUND, "RUN_NOT_FOUND") for name in calls}, ref
        batch = await h.stub.BatchGetRuns(pb.BatchGetRunsRequest(run_ids=[ref, "1"]))
        assert list(batch.missing_run_ids) == [ref, "1"] and not batch.runs


async def test_run_numbers_still_find_runs(h: Harness) -> None:
    run = await h.run("echo", "hi", wait=True)
    assert (await h.get(str(run.number))).id == run.id
    assert (await h.get(f"00{run.number}")).id == run.id
    batch = await h.stub.BatchGetRuns(pb.BatchGetRunsRequest(run_ids=[f"0{run.number}", "²", run.id]))
    assert [r.id for r in batch.runs] == [run.id] and list(batch.missing_run_ids) == ["²"]


BAD_TIMEOUTS = [
    duration_pb2.Duration(seconds=300_000_000_000),
    duration_pb2.Duration(seconds=2**62),
    duration_pb2.Duration(seconds=MAX_TIMEOUT_S, nanos=1),
    duration_pb2.Duration(seconds=1, nanos=-1),
    duration_pb2.Duration(seconds=-1, nanos=1),
    duration_pb2.Duration(seconds=1, nanos=1_000_000_000),
    duration_pb2.Duration(seconds=0, nanos=-1_500_000_000),
]


async def test_huge_or_unnormalised_timeouts_are_refused(h: Harness) -> None:
    """A huge timeout was stored and broke every read of the run (deadline out of Timestamp range)."""
    for timeout in BAD_TIMEOUTS:
        code, _, fields, message = await refusal(h.stub.Run(run_request(timeout=timeout)))
        assert (code, fields) == (Code.INVALID_ARGUMENT, ["timeout"]), (timeout, message)
        stream = h.stub.StreamRun(pb.StreamRunRequest(run=run_request(timeout=timeout)))
        code, _, fields, _ = await refusal(stream)
        assert (code, fields) == (Code.INVALID_ARGUMENT, ["run.timeout"]), timeout
    assert await stored(h) == 0


async def test_the_longest_timeout_is_stored_and_reads_back(h: Harness) -> None:
    run = (await h.stub.Run(run_request(timeout=duration_pb2.Duration(seconds=MAX_TIMEOUT_S)))).run
    assert run.timeout.seconds == MAX_TIMEOUT_S
    again = await h.get(run.id)
    assert again.deadline.ToSeconds() == again.create_time.ToSeconds() + MAX_TIMEOUT_S


BAD_TIMES = [
    ("create_time_after", timestamp_pb2.Timestamp(seconds=2**62)),
    ("create_time_after", timestamp_pb2.Timestamp(nanos=-1)),
    ("create_time_before", timestamp_pb2.Timestamp(seconds=253402300800)),
    ("create_time_before", timestamp_pb2.Timestamp(seconds=-62135596801)),
    ("create_time_before", timestamp_pb2.Timestamp(seconds=1, nanos=1_000_000_000)),
]


async def test_list_runs_refuses_timestamps_out_of_range(h: Harness) -> None:
    """They reached the query as out-of-range numbers: INTERNAL."""
    for field, value in BAD_TIMES:
        request = pb.ListRunsRequest()
        getattr(request, field).CopyFrom(value)
        code, _, fields, message = await refusal(h.stub.ListRuns(request))
        assert (code, fields) == (Code.INVALID_ARGUMENT, [field]), message
    edge = pb.ListRunsRequest(
        create_time_after=timestamp_pb2.Timestamp(seconds=-62135596800),
        create_time_before=timestamp_pb2.Timestamp(seconds=253402300799, nanos=999_999_999),
    )
    assert (await h.stub.ListRuns(edge)).total_size == 0


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels):
        value = {"a": value}
    return value


BAD_STRUCTS: list[tuple[pb.RunRequest, str]] = [
    (run_request(metadata=struct({"x": math.nan})), "metadata"),
    (run_request(metadata=struct({"x": {"y": [1, math.inf]}})), "metadata"),
    (run_request(metadata=struct({"x": -math.inf})), "metadata"),
    (run_request(metadata=struct({"x": "a\x00b"})), "metadata"),
    (run_request(metadata=struct({"a\x00": 1})), "metadata"),
    (run_request(metadata=struct(_deep(25))), "metadata"),
    (run_request(metadata=struct({f"k{i}": "v" * 1000 for i in range(100)})), "metadata"),
    (
        pb.RunRequest(
            agent_id="echo",
            input=run_pb2.RunInput(
                message="hi",
                response_format=run_pb2.RESPONSE_FORMAT_JSON,
                json_schema=struct({"type": "object", "maxProperties": math.nan}),
            ),
        ),
        "input.json_schema",
    ),
]


async def test_structs_with_non_finite_numbers_or_out_of_bounds_are_refused(h: Harness) -> None:
    """NaN and Infinity cannot be stored as JSON (INTERNAL before); nor can NUL on PostgreSQL."""
    for request, field in BAD_STRUCTS:
        code, _, fields, message = await refusal(h.stub.Run(request))
        assert (code, fields) == (Code.INVALID_ARGUMENT, [field]), message
        code, _, fields, _ = await refusal(h.stub.StreamRun(pb.StreamRunRequest(run=request)))
        assert (code, fields) == (Code.INVALID_ARGUMENT, [f"run.{field}"])
    assert await stored(h) == 0


async def test_undecodable_requests_are_invalid_argument(h: Harness) -> None:
    """Bytes that are no request message: INVALID_ARGUMENT with a generic message (UNKNOWN with the
    decoder's text before)."""
    good = run_request(org_id="ab").SerializeToString()
    bad_utf8 = good.replace(b"ab", b"\xed\xa0")  # a lone surrogate, UTF-8 encoded: invalid in proto3
    cases = {
        "Run": [b"\xff\xff\xff", bad_utf8, good[:-1]],
        "GetRun": [b"\x0a\x05ab"],
        "ListRuns": [b"\x08"],
    }
    for name, payloads in cases.items():
        call = h.channel.unary_unary(f"/{RUN_SERVICE.full_name}/{name}", None, None)
        input_type = RUN_SERVICE.methods_by_name[name].input_type.full_name
        for payload in payloads:
            code, reason, _, message = await refusal(call(payload))
            assert (code, reason) == (Code.INVALID_ARGUMENT, "INVALID_ARGUMENT"), (name, payload)
            assert message == f"request is not a valid {input_type} message"
    stream = h.channel.unary_stream(f"/{RUN_SERVICE.full_name}/StreamRun", None, None)
    code, _, _, message = await refusal(stream(b"\x0a\xff"))
    assert code == Code.INVALID_ARGUMENT
    assert message == "request is not a valid agentrun.v1.StreamRunRequest message"
    assert await stored(h) == 0


LONG_OR_NUL: list[tuple[pb.RunRequest, str]] = [
    (run_request(org_id="o" * 10_000), "org_id"),
    (run_request(user_id="u" * 10_000), "user_id"),
    (run_request(org_id="o" * 129), "org_id"),
    (run_request(session_id="s" * 129), "session_id"),
    (run_request(idempotency_key="k" * 257), "idempotency_key"),
    (pb.RunRequest(agent_id="a" * 65, input=run_pb2.RunInput(message="hi")), "agent_id"),
    (run_request(webhook_url="https://example.com/" + "p" * 2048), "webhook_url"),
    (run_request(org_id="a\x00b"), "org_id"),
    (run_request(user_id="\x00"), "user_id"),
    (run_request(session_id="s\x00"), "session_id"),
    (run_request(idempotency_key="\x00"), "idempotency_key"),
    (pb.RunRequest(agent_id="echo", input=run_pb2.RunInput(message="a\x00b")), "input.message"),
    (
        pb.RunRequest(
            agent_id="echo",
            input=run_pb2.RunInput(message="hi", options=run_pb2.RunOptions(system_prompt="\x00")),
        ),
        "input.options.system_prompt",
    ),
    (
        pb.RunRequest(
            agent_id="echo",
            input=run_pb2.RunInput(message="hi", options=run_pb2.RunOptions(model="m" * 129)),
        ),
        "input.options.model",
    ),
    (
        pb.RunRequest(
            agent_id="echo",
            input=run_pb2.RunInput(message="hi", media=[run_pb2.Media(type="image/png\x00", data="AAAA")]),
        ),
        "input.media[0].type",
    ),
]


async def test_over_long_strings_and_nul_are_refused(h: Harness) -> None:
    """Strings past their column's length were stored on SQLite and failed on PostgreSQL, as did NUL."""
    for request, field in LONG_OR_NUL:
        code, _, fields, message = await refusal(h.stub.Run(request))
        assert (code, fields) == (Code.INVALID_ARGUMENT, [field]), message
    assert await stored(h) == 0


async def test_strings_of_the_other_requests_are_bounded(h: Harness) -> None:
    run = await h.run("approval", "x", wait=True)
    cases: list[tuple[Awaitable[Any], str]] = [
        (h.stub.GetRun(pb.GetRunRequest(run_id="r\x00")), "run_id"),
        (h.stub.BatchGetRuns(pb.BatchGetRunsRequest(run_ids=["ok", "r\x00"])), "run_ids[1]"),
        (h.stub.ListRuns(pb.ListRunsRequest(user_id="u" * 129)), "user_id"),
        (h.stub.ListRuns(pb.ListRunsRequest(agent_id="e\x00")), "agent_id"),
        (h.stub.GetAgent(pb.GetAgentRequest(agent_id="\x00")), "agent_id"),
        (
            h.stub.Continue(
                pb.ContinueRequest(run_id=run.id, decision=run_pb2.DECISION_APPROVE, tool_call_id="t" * 129)
            ),
            "tool_call_id",
        ),
        (
            h.stub.Continue(
                pb.ContinueRequest(run_id=run.id, decision=run_pb2.DECISION_REJECT, reason="no\x00")
            ),
            "reason",
        ),
        (h.stub.CancelRun(pb.CancelRunRequest(run_id=run.id, reason="r" * 2049)), "reason"),
        (
            h.stub.RetryWebhookDelivery(pb.RetryWebhookDeliveryRequest(run_id=run.id, delivery_id="d\x00")),
            "delivery_id",
        ),
    ]
    for call, field in cases:
        code, _, fields, message = await refusal(call)
        assert (code, fields) == (Code.INVALID_ARGUMENT, [field]), message
    again = await h.get(run.id)
    assert again.state == run_pb2.RUN_STATE_PAUSED and not again.decisions


def _token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


async def test_page_tokens_and_other_numbers_are_checked(h: Harness) -> None:
    """Tokens and cursors past the INTEGER columns crashed the query on PostgreSQL; unparsable URLs
    crashed the URL check."""
    run = await h.run("echo", "hi", wait=True)
    cases: list[tuple[Awaitable[Any], str]] = [
        (h.stub.ListRuns(pb.ListRunsRequest(page_token=_token(f"n:{2**63}"))), "page_token"),
        (h.stub.ListRuns(pb.ListRunsRequest(page_token=_token("n:²"))), "page_token"),
        (h.stub.ListRuns(pb.ListRunsRequest(page_token="é")), "page_token"),
        (h.stub.ListRuns(pb.ListRunsRequest(page_token="%%%")), "page_token"),
        (h.stub.ListRuns(pb.ListRunsRequest(page_token=_token("n:1") * 100)), "page_token"),
        (
            h.stub.ListRunEvents(pb.ListRunEventsRequest(run_id=run.id, page_token=_token("s:9" * 30))),
            "page_token",
        ),
        (h.stub.ListAgents(pb.ListAgentsRequest(page_token=_token(f"a:{2**70}"))), "page_token"),
        (h.stub.ListRuns(pb.ListRunsRequest(page_size=2**31 - 1)), "page_size"),
        (h.stub.ListRuns(pb.ListRunsRequest(states=[-5])), "states"),  # type: ignore[list-item]
        (h.stub.Continue(pb.ContinueRequest(run_id=run.id, decision=7)), "decision"),  # type: ignore[arg-type]
        (h.stub.Run(run_request(webhook_url="http://[::1")), "webhook_url"),
        (h.stub.Run(run_request(webhook_url="http://example.com:99999/")), "webhook_url"),
        (h.stub.Run(run_request(webhook_url="http://a..b/")), "webhook_url"),
        (h.stub.Run(run_request(webhook_url="https://example.com/", webhook_format=-1)), "webhook_format"),
        (
            h.stub.Run(
                pb.RunRequest(
                    agent_id="echo",
                    input=run_pb2.RunInput(
                        message="hi", media=[run_pb2.Media(type="image/png", data="https://[x/a.png")]
                    ),
                )
            ),
            "input.media[0].data",
        ),
        (
            h.stub.Run(
                pb.RunRequest(
                    agent_id="echo",
                    input=run_pb2.RunInput(
                        message="hi", media=[run_pb2.Media(type="image/png", data="http://h:0x/a.png")]
                    ),
                )
            ),
            "input.media[0].data",
        ),
    ]
    for call, field in cases:
        code, _, fields, message = await refusal(call)
        assert (code, fields) == (Code.INVALID_ARGUMENT, [field]), message
    for after in (2**31, 2**63 - 1):
        code, _, fields, _ = await refusal(
            h.stub.ListRunEvents(pb.ListRunEventsRequest(run_id=run.id, after_seq=after))
        )
        assert (code, fields) == (Code.INVALID_ARGUMENT, ["after_seq"])
        code, _, fields, _ = await refusal(
            h.stub.StreamRun(pb.StreamRunRequest(run_id=run.id, after_seq=after))
        )
        assert (code, fields) == (Code.INVALID_ARGUMENT, ["after_seq"])
    end = await h.stub.ListRunEvents(pb.ListRunEventsRequest(run_id=run.id, after_seq=2**31 - 1))
    assert not end.events
    assert await h.events(run_id=run.id, after_seq=2**31 - 1) == []
    assert await stored(h) == 1


BAD_SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "pattern": "("},
    {"type": "object", "$schema": "not a dialect"},
    {"type": "object", "$schema": 5},
    {"type": "object", "properties": {"a": {"type": "nonsense"}}},
    {"type": "object", "required": "a"},
    {"type": "object", "$schema": {"a": 1}},
    {"type": "object", "$schema": ""},
    {"type": "object", "dependencies": {"a": 5}},
]


async def test_output_schemas_that_are_no_json_schema_are_refused(h: Harness) -> None:
    for schema in BAD_SCHEMAS:
        request = pb.RunRequest(
            agent_id="echo",
            input=run_pb2.RunInput(
                message="hi", response_format=run_pb2.RESPONSE_FORMAT_JSON, json_schema=struct(schema)
            ),
        )
        code, _, fields, message = await refusal(h.stub.Run(request))
        assert (code, fields) == (Code.INVALID_ARGUMENT, ["input.json_schema"]), (schema, message)
    assert await stored(h) == 0


# ---- property tests --------------------------------------------------------------------------

EXAMPLES_PER_METHOD = 40
WIRE_EXAMPLES = 150
CALL_TIMEOUT_S = 10.0
# Agents that answer at once (`slow` would only cost time); random ids test the rest.
AGENTS = ["echo", "tools", "approval", "ai-echo", "ai-tools", "ai-approval"]
ODD_STRINGS = [
    "",
    " ",
    "0",
    "007",
    "-1",
    "²",
    "١٢",
    str(2**31),
    str(2**40),
    str(2**63),
    "9" * 40,
    "\x00",
    "a\x00b",
    "x" * 129,
    "é" * 65,
    "x" * 10_000,
    "\u202e\u200b",
    "\U0001f600" * 40,
    "http://[::1",
    "http://example.com:99999/",
    "https://user:pw@example.com/",
    "http://a..b/",
    "http://127.0.0.1/",
    "image/png",
    "AAAA",
    "not base64!",
    _token(f"n:{2**63}"),
    _token(f"s:{2**31}"),
    _token("n:3"),
    _token("s:2"),
    _token("a:1"),
]
INT_BOUNDS = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}


def _ints(low: int, high: int) -> st.SearchStrategy[int]:
    extremes = [v for v in (low, high, 0, 1, -1, 2**31 - 1, 2**53, 2**62) if low <= v <= high]
    return (
        st.sampled_from(extremes)
        | st.integers(-1000, 1000).filter(lambda v: low <= v <= high)
        | st.integers(low, high)
    )


def _strings(ref_pool: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(ODD_STRINGS) | st.text(max_size=20) | st.sampled_from(ref_pool)


_FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.5, 2.0, 1e300, -0.0])
_JSON_LEAVES = st.none() | st.booleans() | _FLOATS | st.sampled_from(ODD_STRINGS) | st.text(max_size=8)
JSON = st.recursive(
    _JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)
SCHEMAS = st.fixed_dictionaries(
    {"type": st.sampled_from(["object", "string", 5])},
    optional={
        "properties": st.dictionaries(
            st.text(max_size=5), st.fixed_dictionaries({"type": st.sampled_from(["string", "number", "x"])})
        ),
        "required": st.lists(st.text(max_size=5), max_size=2) | st.text(max_size=3),
        "$schema": st.sampled_from(["http://json-schema.org/draft-07/schema#", "nope", ""]) | JSON,
        "pattern": st.sampled_from(["(", "^a$", "[z-a]"]),
        "$ref": st.just("#/definitions/x"),
        "minLength": _FLOATS,
    },
)


def _struct_of(value: dict[str, Any]) -> struct_pb2.Struct:
    return struct(value)


STRUCTS = (
    st.dictionaries(st.text(max_size=8) | st.sampled_from(["\x00", "x" * 200]), JSON, max_size=4)
    | SCHEMAS
    | st.integers(18, 32).map(_deep)
).map(_struct_of)
VALUES = JSON.map(lambda v: struct({"v": v}).fields["v"])
TIMESTAMPS = st.builds(
    timestamp_pb2.Timestamp,
    seconds=_ints(*INT_BOUNDS[FieldDescriptor.CPPTYPE_INT64]) | st.integers(-62135596801, 253402300800),
    nanos=_ints(*INT_BOUNDS[FieldDescriptor.CPPTYPE_INT32]) | st.integers(-1, 1_000_000_000),
)
DURATIONS = st.builds(
    duration_pb2.Duration,
    seconds=_ints(*INT_BOUNDS[FieldDescriptor.CPPTYPE_INT64]) | st.integers(-5, 8 * 24 * 3600),
    nanos=_ints(*INT_BOUNDS[FieldDescriptor.CPPTYPE_INT32]) | st.integers(-1_000_000_000, 1_000_000_000),
)
WELL_KNOWN: dict[str, st.SearchStrategy[Any]] = {
    "google.protobuf.Struct": STRUCTS,
    "google.protobuf.Value": VALUES,
    "google.protobuf.Timestamp": TIMESTAMPS,
    "google.protobuf.Duration": DURATIONS,
}


def _field(field: FieldDescriptor, ref_pool: list[str]) -> st.SearchStrategy[Any]:
    cpp = field.cpp_type
    if cpp == FieldDescriptor.CPPTYPE_MESSAGE:
        assert field.message_type is not None
        return messages(field.message_type, ref_pool)
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        if field.type == FieldDescriptor.TYPE_BYTES:
            return st.binary(max_size=20)
        if field.name == "agent_id":
            return st.sampled_from(AGENTS) | _strings(ref_pool)
        return _strings(ref_pool)
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return st.booleans()
    if cpp in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        return _FLOATS
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        assert field.enum_type is not None
        known = [v.number for v in field.enum_type.values]
        return st.sampled_from(known) | _ints(*INT_BOUNDS[FieldDescriptor.CPPTYPE_INT32])
    return _ints(*INT_BOUNDS[cpp])


def _fill(cls: type[Message], values: dict[str, Any]) -> Message:
    message = cls()
    for name, value in values.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        if value is None:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            getattr(message, name).update({entry.key: entry.value for entry in value})
        elif field.is_repeated and field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            for item in value:
                getattr(message, name).add().CopyFrom(item)
        elif field.is_repeated:
            getattr(message, name).extend(value)
        elif field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            getattr(message, name).CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def _sometimes(value: st.SearchStrategy[Any], one_in: int) -> st.SearchStrategy[Any]:
    """`value` once in `one_in` draws, else None."""
    return st.integers(0, one_in - 1).flatmap(lambda n: value if n == 0 else st.none())


def messages(descriptor: Descriptor, ref_pool: list[str], one_in: int = 2) -> st.SearchStrategy[Message]:
    """Any message of `descriptor`'s type: each field, once in `one_in`, a random value of its type."""
    if descriptor.full_name in WELL_KNOWN:
        return WELL_KNOWN[descriptor.full_name]
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        value = _field(field, ref_pool)
        if field.is_repeated:
            long = field.name == "run_ids"
            value = st.lists(value, max_size=3) | (
                st.lists(value, min_size=99, max_size=102) if long else st.nothing()
            )
        fields[field.name] = _sometimes(value, one_in)
    cls = message_factory.GetMessageClass(descriptor)
    return st.fixed_dictionaries(fields).map(lambda values: _fill(cls, values))


def _valid(descriptor: Descriptor, ref_pool: list[str]) -> st.SearchStrategy[Message]:
    """Requests of `descriptor`'s type that are valid (runs that start, ids that exist)."""
    refs = st.sampled_from(ref_pool)
    runs = st.builds(
        lambda agent, text, wait: pb.RunRequest(
            agent_id=agent, input=run_pb2.RunInput(message=text), wait=wait
        ),
        st.sampled_from(AGENTS),
        st.sampled_from(["hello", "what is 6 * 7", "send the report"]) | st.text(min_size=1, max_size=30),
        st.booleans(),
    )
    valid: dict[str, st.SearchStrategy[Any]] = {
        "RunRequest": runs,
        "StreamRunRequest": runs.map(lambda run: pb.StreamRunRequest(run=run))
        | st.builds(lambda ref, seq: pb.StreamRunRequest(run_id=ref, after_seq=seq), refs, st.integers(0, 9)),
        "ContinueRequest": st.builds(
            lambda ref, decision, wait: pb.ContinueRequest(run_id=ref, decision=decision, wait=wait),
            refs,
            st.sampled_from([run_pb2.DECISION_APPROVE, run_pb2.DECISION_REJECT]),
            st.booleans(),
        ),
        "BatchGetRunsRequest": st.lists(refs, max_size=5).map(
            lambda ids: pb.BatchGetRunsRequest(run_ids=ids)
        ),
        "GetAgentRequest": st.sampled_from(AGENTS).map(lambda agent: pb.GetAgentRequest(agent_id=agent)),
        "UpdateRunRequest": st.builds(
            lambda ref, metadata: pb.UpdateRunRequest(
                run=run_pb2.Run(id=ref, metadata=metadata), update_mask={"paths": ["metadata"]}
            ),
            refs,
            STRUCTS,
        ),
    }
    if descriptor.name in valid:
        return valid[descriptor.name]
    cls = message_factory.GetMessageClass(descriptor)
    if "run_id" in descriptor.fields_by_name:
        return refs.map(lambda ref: cls(run_id=ref))
    return st.just(cls())


def _merged(pair: tuple[Message, Message]) -> Message:
    base, changes = pair
    merged = type(base)()
    merged.CopyFrom(base)
    merged.MergeFrom(changes)
    return merged


def requests(method: MethodDescriptor, ref_pool: list[str]) -> st.SearchStrategy[Message]:
    """Requests of `method`: random ones, and valid ones with a few random fields."""
    fuzzed = st.tuples(_valid(method.input_type, ref_pool), messages(method.input_type, ref_pool, one_in=10))
    arbitrary = messages(method.input_type, ref_pool)
    return st.integers(0, 2).flatmap(lambda n: arbitrary if n == 0 else fuzzed.map(_merged))


def _mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """`data` with a byte changed, cut short, or extended."""
    if not data:
        return st.binary(max_size=8)
    return st.one_of(
        st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)).map(
            lambda p: data[: p[0]] + bytes([p[1]]) + data[p[0] + 1 :]
        ),
        st.integers(0, len(data) - 1).map(lambda n: data[:n]),
        st.binary(min_size=1, max_size=8).map(lambda extra: data + extra),
    )


@dataclasses.dataclass
class Fuzz:
    """Calls one real server from Hypothesis' thread, on the test's event loop."""

    h: Harness
    loop: asyncio.AbstractEventLoop

    codes: Counter[tuple[str, str]] = dataclasses.field(default_factory=Counter)

    async def _call(self, method: MethodDescriptor, payload: bytes) -> Code:
        path = f"/{RUN_SERVICE.full_name}/{method.name}"
        try:
            if method.server_streaming:
                async for _ in self.h.channel.unary_stream(
                    path, request_serializer=None, response_deserializer=None
                )(payload, timeout=CALL_TIMEOUT_S):
                    pass
            else:
                await self.h.channel.unary_unary(path, request_serializer=None, response_deserializer=None)(
                    payload, timeout=CALL_TIMEOUT_S
                )
        except grpc.aio.AioRpcError as error:
            return error.code()
        return Code.OK

    async def latest_refs(self, seeds: list[str]) -> list[str]:
        latest = (await self.h.stub.ListRuns(pb.ListRunsRequest(page_size=8))).runs
        return [*seeds, *(r.id for r in latest), *(str(r.number) for r in latest)]

    def refs(self, seeds: list[str]) -> list[str]:
        """`seeds` and the ids and numbers of the latest runs."""
        return asyncio.run_coroutine_threadsafe(self.latest_refs(seeds), self.loop).result(60)

    def code(self, method: MethodDescriptor, payload: bytes) -> Code:
        code = asyncio.run_coroutine_threadsafe(self._call(method, payload), self.loop).result(60)
        self.codes[method.name, code.name] += 1
        return code


SETTINGS = settings(
    deadline=None,
    derandomize=True,  # the same examples every run: a failure reproduces
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _fuzz_method(fuzz: Fuzz, method: MethodDescriptor, ref_pool: list[str]) -> None:
    @settings(SETTINGS, max_examples=EXAMPLES_PER_METHOD)
    @given(request=requests(method, ref_pool))
    def one(request: Message) -> None:
        code = fuzz.code(method, request.SerializeToString())
        assert code not in NEVER, f"{method.name}: {code} for\n{text_format.MessageToString(request)}"

    one()


def _fuzz_methods(fuzz: Fuzz, seeds: list[str]) -> None:
    # The methods that end runs last, so that the others see runs in every state.
    last = ("CancelRun", "DeleteRun")
    for method in sorted(RUN_SERVICE.methods, key=lambda m: m.name in last):
        _fuzz_method(fuzz, method, fuzz.refs(seeds))


def _fuzz_wire(fuzz: Fuzz, ref_pool: list[str]) -> None:
    methods = list(RUN_SERVICE.methods)

    @settings(SETTINGS, max_examples=WIRE_EXAMPLES)
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        method = data.draw(st.sampled_from(methods))
        valid = data.draw(requests(method, ref_pool)).SerializeToString()
        payload = data.draw(st.binary(max_size=64) | _mutations(valid))
        code = fuzz.code(method, payload)
        assert code not in NEVER, f"{method.name}: {code} for {payload!r}"

    one()


def _check_readable(run: run_pb2.Run) -> None:
    for value, limit in (
        (run.org_id, 128),
        (run.user_id, 128),
        (run.session_id, 128),
        (run.agent_id, 64),
        (run.idempotency_key, 256),
        (run.webhook_url, 2048),
    ):
        assert len(value) <= limit and "\x00" not in value, (run.id, value[:50])
    assert 0 < run.timeout.ToTimedelta().total_seconds() <= MAX_TIMEOUT_S
    run.deadline.ToJsonString()  # raises when out of range
    run.create_time.ToJsonString()


@pytest.mark.parametrize("database_url", ["memory", "postgres"], indirect=True)
async def test_no_request_gets_internal_or_unknown(launch: Launcher) -> None:
    h = await launch()
    seeds = [await h.run(agent, "seed", wait=True) for agent in ("echo", "approval", "approval", "approval")]
    fuzz = Fuzz(h, asyncio.get_running_loop())
    await asyncio.to_thread(_fuzz_methods, fuzz, [r.id for r in seeds])
    await asyncio.to_thread(_fuzz_wire, fuzz, await fuzz.latest_refs([r.id for r in seeds]))

    print(f"\nanswers by method and code: {sorted(fuzz.codes.items())}")
    assert fuzz.codes["Run", "OK"] and fuzz.codes["GetRun", "OK"]  # valid requests were served too

    # Whatever the fuzzing stored reads back, by list and one by one, and is within bounds.
    runs, token = [], ""
    while True:
        page = await h.stub.ListRuns(pb.ListRunsRequest(page_size=1000, page_token=token))
        runs.extend(page.runs)
        if not (token := page.next_page_token):
            break
    assert len(runs) == page.total_size >= 1
    for run in runs:
        _check_readable(run)
        _check_readable(await h.get(run.id))
        await h.stub.ListRunEvents(pb.ListRunEventsRequest(run_id=run.id, page_size=1000))
