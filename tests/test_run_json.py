"""Run responses as prepared ProtoJSON (gateway.event_json, codec.to_dict, codec.json_response) give
json_format's bytes: a Run is planned, and its fields of well-known types (output_json Value,
metadata and json_schema Struct, timeout Duration) and of unplanned types (RunOptions: a double)
are printed by json_format one field at a time. Hypothesis-made Runs in the four Run-holding
responses, the values whose JSON is easy to get wrong (1.0, -0.0, 1.5s, empty Values), and what
json_format refuses (NaN in a Value, out-of-range Durations and Timestamps) failing the same way."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from agentrun.v1 import run_pb2 as R
from agentrun.v1 import run_service_pb2 as pb
from google.protobuf import duration_pb2, json_format, struct_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import codec, event_json
from tests.sse_oracle import old_dumps

INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)
TS_MIN, TS_MAX = -62_135_596_800, 253_402_300_799
DURATION_MAX = 315_576_000_000
RUN_ID = "6f1c2a7e-5d4b-4c8a-9e3f-0a1b2c3d4e5f"
Outcome = tuple[str, str]  # ("ok", JSON text) or (exception type, message)


def outcome(encode: Callable[[Message], Any], message: Message) -> Outcome:
    try:
        found = encode(message)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    # As text: tells 1 from 1.0 and true, keeps key order, and NaN (a double) equals itself.
    return "ok", found if isinstance(found, str) else old_dumps(found)


def assert_json_formats(message: Message) -> None:
    """Prepared output (dict and text, through every entry point) is json_format's, or fails as it."""
    as_dict = outcome(json_format.MessageToDict, message)
    as_text = outcome(lambda m: codec.dumps(json_format.MessageToDict(m)), message)
    assert outcome(event_json.to_dict, message) == as_dict
    assert outcome(codec.to_dict, message) == as_dict
    assert outcome(event_json.to_json, message) == as_text
    assert outcome(lambda m: codec.json_response(m).text, message) == as_text


def responses(run: R.Run) -> list[Message]:
    """The four Run-holding responses, each holding `run`."""
    other = R.Run(id="x", state=R.RUN_STATE_QUEUED)
    return [
        pb.RunResponse(run=run),
        pb.GetRunResponse(run=run),
        pb.BatchGetRunsResponse(runs=[run, other, run], missing_run_ids=["gone", ""]),
        pb.ListRunsResponse(runs=[other, run], next_page_token="n", total_size=INT64[1]),
    ]


# ---- hypothesis-made runs -------------------------------------------------------------------


def texts() -> st.SearchStrategy[str]:
    return st.text(st.characters(exclude_categories=["Cs"]), max_size=20)  # protobuf holds no surrogates


def numbers() -> st.SearchStrategy[float]:
    """Finite doubles, whole ones (1.0: printed so, not 1) and -0.0 often."""
    return st.one_of(
        st.integers(-(2**60), 2**60).map(float),
        st.floats(allow_nan=False, allow_infinity=False),
        st.just(-0.0),
    )


json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | numbers() | texts(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts(), inner, max_size=4),
    max_leaves=12,
)


def value_of(data: Any) -> struct_pb2.Value:
    """A Value holding `data` (a list or dict through ListValue.extend and Struct.update)."""
    holder = struct_pb2.ListValue()
    holder.extend([data])
    return holder.values[0]


@st.composite
def durations(draw: st.DrawFn) -> tuple[int, int]:
    """Valid (same signs, in range) nine times in ten; else anything, which may be refused."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.integers(-(2**40), 2**40)), draw(st.integers(*INT32))
    seconds, nanos = draw(st.integers(0, DURATION_MAX)), draw(st.integers(0, 999_999_999))
    sign = draw(st.sampled_from([1, -1]))
    return sign * seconds, sign * nanos


@st.composite
def stamps(draw: st.DrawFn) -> tuple[int, int]:
    if draw(st.integers(0, 19)) == 0:
        return draw(st.integers(TS_MIN - 10, TS_MAX + 10)), draw(st.integers(-1, 10**9))
    return draw(st.integers(TS_MIN, TS_MAX)), draw(st.integers(0, 999_999_999))


def set_time(target: Any, at: tuple[int, int]) -> None:
    target.seconds, target.nanos = at


def enum_numbers(enum: Any) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(list(enum.values())), st.integers(*INT32))  # unknown numbers too


@st.composite
def run_inputs(draw: st.DrawFn) -> R.RunInput:
    given_input = R.RunInput(message=draw(texts()), generate_followups=draw(st.booleans()))
    given_input.response_format = draw(enum_numbers(R.ResponseFormat))
    given_input.media.extend(
        R.Media(type=draw(texts()), data=draw(texts())) for _ in range(draw(st.integers(0, 2)))
    )
    if draw(st.booleans()):  # RunOptions: a double, so json_format's for this field
        options = given_input.options
        options.model, options.system_prompt = draw(texts()), draw(texts())
        if draw(st.booleans()):
            options.temperature = draw(st.floats(width=64))  # NaN and infinities print as strings
        if draw(st.booleans()):
            options.max_tokens = draw(st.integers(*INT32))
    if draw(st.booleans()):
        given_input.json_schema.update(draw(st.dictionaries(texts(), json_values, max_size=4)))
    return given_input


@st.composite
def runs(draw: st.DrawFn) -> R.Run:
    run = R.Run(
        id=draw(texts()),
        number=draw(st.integers(*INT64)),
        agent_id=draw(texts()),
        session_id=draw(texts()),
        state=draw(enum_numbers(R.RunState)),
        output=draw(texts()),
        reasoning_steps=draw(st.lists(texts(), max_size=3)),
        followups=draw(st.lists(texts(), max_size=3)),
        attempt=draw(st.integers(*INT32)),
        last_seq=draw(st.integers(*INT64)),
        webhook_format=draw(enum_numbers(R.WebhookFormat)),
    )
    if draw(st.booleans()):
        run.input.CopyFrom(draw(run_inputs()))
    if draw(st.booleans()):
        run.output_json.CopyFrom(value_of(draw(json_values)))
    if draw(st.booleans()):
        run.metadata.update(draw(st.dictionaries(texts(), json_values, max_size=5)))
    if draw(st.booleans()):
        set_time(run.timeout, draw(durations()))
    for field in ("deadline", "create_time", "start_time", "update_time", "complete_time"):
        if draw(st.booleans()):
            set_time(getattr(run, field), draw(stamps()))
    if draw(st.booleans()):
        run.error.CopyFrom(R.RunError(reason=draw(texts()), message=draw(texts())))
    for _ in range(draw(st.integers(0, 2))):
        run.tool_calls.add(id=draw(texts()), name=draw(texts()), duration_ms=draw(st.integers(*INT64)))
    if draw(st.booleans()):
        fields = st.integers(*INT64)
        run.usage.CopyFrom(
            R.Usage(input_tokens=draw(fields), output_tokens=draw(fields), tool_ms=draw(fields))
        )
    if draw(st.booleans()):
        run.pending_action.CopyFrom(R.PendingAction(tool_call_id=draw(texts()), tool_name=draw(texts())))
    for _ in range(draw(st.integers(0, 2))):
        record = run.decisions.add(tool_call_id=draw(texts()), decision=draw(enum_numbers(R.Decision)))
        if draw(st.booleans()):
            set_time(record.decide_time, draw(stamps()))
    if draw(st.booleans()):
        delivery = run.webhook_delivery
        delivery.id, delivery.state = draw(texts()), draw(enum_numbers(R.WebhookDeliveryState))
        delivery.attempts.add(status_code=draw(st.integers(*INT32)), error=draw(texts()))
    return run


@settings(max_examples=300, deadline=None)
@given(run=runs())
def test_any_run_response_is_json_formats(run: R.Run) -> None:
    assert_json_formats(run)
    for response in responses(run):
        assert_json_formats(response)


# ---- the cases to get right -----------------------------------------------------------------


def test_run_and_its_responses_are_planned() -> None:
    """Not left to json_format whole: the per-field fallback is what the tests here exercise."""
    for message in (R.Run(), R.RunInput(), *responses(R.Run())):
        assert event_json.plan(message.DESCRIPTOR) is not None
    assert event_json.plan(R.RunOptions.DESCRIPTOR) is None  # a double: json_format's


def run_with(**values: Any) -> R.Run:
    run = R.Run(id=RUN_ID)
    for name, value in values.items():
        getattr(run, name).CopyFrom(value)
    return run


def duration(seconds: int, nanos: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


EXACT = [
    (run_with(output_json=value_of(1.0)), '"outputJson":1.0'),
    (run_with(output_json=value_of(-0.0)), '"outputJson":-0.0'),
    (run_with(output_json=value_of(1e300)), '"outputJson":1e+300'),
    (run_with(output_json=struct_pb2.Value()), '"outputJson":null'),  # set, holding nothing
    (
        run_with(output_json=value_of([1.0, True, None, "ü\n", {"a": []}])),
        '"outputJson":[1.0,true,null,"ü\\n",{"a":[]}]',
    ),
    (run_with(timeout=duration(1, 500_000_000)), '"timeout":"1.500s"'),
    (run_with(timeout=duration(-1, -500_000_000)), '"timeout":"-1.500s"'),
    (run_with(timeout=duration(0, 1)), '"timeout":"0.000000001s"'),
    (run_with(timeout=duration(3600, 0)), '"timeout":"3600s"'),
    (run_with(timeout=duration(0, 0)), '"timeout":"0s"'),
    (
        run_with(input=R.RunInput(options=R.RunOptions(temperature=0.1))),
        '"input":{"options":{"temperature":0.1}}',
    ),
    (
        run_with(input=R.RunInput(options=R.RunOptions(temperature=math.inf))),
        '"options":{"temperature":"Infinity"}',
    ),
]


@pytest.mark.parametrize(("run", "expected"), EXACT, ids=[e for _, e in EXACT])
def test_subtle_fields_print_exactly(run: R.Run, expected: str) -> None:
    assert expected in event_json.to_json(run)
    assert expected in event_json.to_json(pb.RunResponse(run=run))
    assert_json_formats(run)
    assert_json_formats(pb.ListRunsResponse(runs=[run, run]))


def nan_in_metadata() -> R.Run:
    run = R.Run(id=RUN_ID)
    run.metadata.update({"a": {"b": [1.0, math.nan]}})
    return run


def late_decision() -> R.Run:
    run = R.Run(id=RUN_ID)
    run.decisions.add(tool_call_id="c").decide_time.seconds = TS_MAX + 1
    return run


REFUSED = [
    run_with(output_json=value_of(math.nan)),
    run_with(output_json=value_of([math.inf])),
    nan_in_metadata(),
    run_with(timeout=duration(DURATION_MAX + 1, 0)),
    run_with(timeout=duration(1, -1)),  # sign mismatch
    run_with(timeout=duration(0, 10**9)),
    late_decision(),  # a Timestamp out of range, in a planned type
]


@pytest.mark.parametrize("run", REFUSED)
def test_what_json_format_refuses_fails_the_same_way(run: R.Run) -> None:
    with pytest.raises(json_format.SerializeToJsonError):
        json_format.MessageToDict(run)
    assert_json_formats(run)
    for response in responses(run):
        assert_json_formats(response)


def test_any_fields_print_as_json_format_does() -> None:
    """An Any holds its own '@type' first; repeated Any fields go item by item (google.rpc.Status)."""
    status = status_pb2.Status(code=3, message="bad")
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason="X", metadata={"k": "ü"}))
    status.details.add().Pack(duration(1, 500_000_000))
    status.details.add()  # empty: {}
    assert event_json.plan(status.DESCRIPTOR) is not None
    assert_json_formats(status)
    unknown_type = status_pb2.Status()
    unknown_type.details.add(type_url="type.googleapis.com/no.Such")
    assert outcome(event_json.to_json, unknown_type)[0] == "TypeError"
    assert_json_formats(unknown_type)
