"""Stored records <-> protobuf messages. Hand-written field by field: this runs for every event
of every stream, where generic JSON round trips would cost more than the rest of the path."""

from __future__ import annotations

from typing import Any

from agentrun.v1 import run_pb2
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from server.agents.base import AgentInfo, Media, Options, RunInput
from server.store.records import DeliveryRecord, EventRecord, RunRecord

STATE: dict[str, Any] = {name[10:]: value for name, value in run_pb2.RunState.items() if value}
STATE_NAME: dict[int, str] = {value: name for name, value in STATE.items()}
EVENT_TYPE: dict[str, Any] = {name[11:]: value for name, value in run_pb2.EventType.items() if value}
DECISION = {run_pb2.DECISION_APPROVE: "APPROVE", run_pb2.DECISION_REJECT: "REJECT"}
DECISION_VALUE = {name: value for value, name in DECISION.items()}
FORMAT_NAME = {run_pb2.RESPONSE_FORMAT_JSON: "json"}
FORMAT_VALUE = {"text": run_pb2.RESPONSE_FORMAT_TEXT, "json": run_pb2.RESPONSE_FORMAT_JSON}
WEBHOOK_FORMAT: dict[str, Any] = {name[15:]: v for name, v in run_pb2.WebhookFormat.items() if v}
WEBHOOK_FORMAT_NAME: dict[int, str] = {v: name for name, v in WEBHOOK_FORMAT.items()}
DELIVERY_STATE: dict[str, Any] = {name[23:]: v for name, v in run_pb2.WebhookDeliveryState.items() if v}


# google.protobuf.Timestamp's range (0001-01-01 to 9999-12-31). Requests cannot put a time outside it
# into the store; a row written before they were bounded (a deadline years away) reads clamped.
MIN_TIMESTAMP_S = -62_135_596_800
MAX_TIMESTAMP_S = 253_402_300_799


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    set_time(message, seconds)
    return message


def set_time(field: timestamp_pb2.Timestamp, seconds: float) -> None:
    """Fill a Timestamp field in place: half the cost of building one and copying it in, which
    counts when a BatchGetRuns answer holds 500 of them."""
    if not MIN_TIMESTAMP_S <= seconds <= MAX_TIMESTAMP_S:
        seconds = min(max(seconds, MIN_TIMESTAMP_S), MAX_TIMESTAMP_S)
    whole = int(seconds)
    field.seconds = whole
    field.nanos = int((seconds - whole) * 1e9)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def json_value(value: Any) -> struct_pb2.Value:
    return json_format.ParseDict(value, struct_pb2.Value())


# ---- requests -> typed input ------------------------------------------------------------------


def input_from_proto(message: run_pb2.RunInput) -> RunInput:
    o = message.options
    return RunInput(
        message=message.message,
        media=tuple(Media(m.type, m.data) for m in message.media),
        options=Options(
            model=o.model,
            provider=o.provider,
            temperature=o.temperature if o.HasField("temperature") else None,
            max_tokens=o.max_tokens if o.HasField("max_tokens") else None,
            system_prompt=o.system_prompt,
        ),
        generate_followups=message.generate_followups,
        response_format=FORMAT_NAME.get(message.response_format, "text"),
        json_schema=json_format.MessageToDict(message.json_schema)
        if message.HasField("json_schema")
        else None,
    )


def input_to_proto(data: dict[str, Any]) -> run_pb2.RunInput:
    """From the stored form (server/engine/inputs.py), where absent keys mean defaults."""
    message = run_pb2.RunInput()
    _fill_input(message, data)
    return message


def _fill_input(message: run_pb2.RunInput, data: dict[str, Any]) -> None:
    message.message = data["message"]
    for media in data.get("media", ()):
        message.media.add(type=media["type"], data=media["data"])
    options = data.get("options")
    if options:
        message.options.CopyFrom(run_pb2.RunOptions(**options))
    else:
        message.options.SetInParent()  # always present, even when empty
    if data.get("generate_followups"):
        message.generate_followups = True
    message.response_format = FORMAT_VALUE[data.get("response_format", "text")]
    if "json_schema" in data:
        message.json_schema.update(data["json_schema"])


# ---- records -> messages -----------------------------------------------------------------------


def _tool_call(call: dict[str, Any]) -> run_pb2.ToolCall:
    return run_pb2.ToolCall(
        id=call.get("id", ""),
        name=call.get("name", ""),
        arguments_json=call.get("arguments_json", ""),
        result=call.get("result", ""),
        duration_ms=call.get("duration_ms", 0),
        is_error=call.get("is_error", False),
    )


def _pending(action: dict[str, Any]) -> run_pb2.PendingAction:
    return run_pb2.PendingAction(
        tool_call_id=action["tool_call_id"],
        tool_name=action["tool_name"],
        arguments_json=action["arguments_json"],
    )


def run_to_proto(run: RunRecord) -> run_pb2.Run:
    message = run_pb2.Run()
    fill_run(message, run)
    return message


def fill_run(message: run_pb2.Run, run: RunRecord) -> None:
    """Fill an empty Run message in place: a response's `run` field, say, which a message built
    apart would be copied into. Sub-messages are filled in place too: BatchGetRuns converts 100 runs
    per call, and building and copying them in was a third of its time."""
    message.id = run.id
    message.number = run.number
    message.agent_id = run.agent_id
    message.session_id = run.session_id
    message.user_id = run.user_id
    message.org_id = run.org_id
    message.state = STATE[run.state]
    message.attempt = run.attempt
    message.idempotency_key = run.idempotency_key or ""
    message.webhook_url = run.webhook_url or ""
    message.last_seq = run.last_seq
    _fill_input(message.input, run.input)
    timeout = message.timeout
    timeout.seconds = int(run.timeout_s)
    timeout.nanos = int((run.timeout_s % 1) * 1e9)
    set_time(message.deadline, run.deadline)
    set_time(message.create_time, run.created_at)
    set_time(message.update_time, run.updated_at)
    if run.started_at is not None:
        set_time(message.start_time, run.started_at)
    if run.completed_at is not None:
        set_time(message.complete_time, run.completed_at)
    if run.error_reason:
        message.error.CopyFrom(run_pb2.RunError(reason=run.error_reason, message=run.error_message or ""))
    if run.pending_action:
        message.pending_action.CopyFrom(_pending(run.pending_action))
    if run.extras:
        message.metadata.update(run.extras)
    for decision in run.decisions or ():
        record = message.decisions.add(
            tool_call_id=decision["tool_call_id"],
            decision=DECISION_VALUE[decision["decision"]],
            decided_by=decision.get("decided_by", ""),
        )
        set_time(record.decide_time, decision["decided_at"])
    if run.result:
        _fill_result(message, run.result)
    if run.webhook_format:
        message.webhook_format = WEBHOOK_FORMAT[run.webhook_format]
    if run.webhook_result:
        message.webhook_delivery.CopyFrom(
            _delivery_summary(run.id, run.webhook_url or "", run.webhook_result)
        )


def _delivery_summary(run_id: str, url: str, result: dict[str, Any]) -> run_pb2.WebhookDelivery:
    # The summary's message reads "delivered" on success; an attempt's error is empty then.
    delivered = result["state"] == "DELIVERED"
    attempt = run_pb2.WebhookAttempt(
        status_code=result.get("status_code", 0), error="" if delivered else result.get("message", "")
    )
    return run_pb2.WebhookDelivery(
        id=result["delivery_id"],
        run_id=run_id,
        url=url,
        state=DELIVERY_STATE[result["state"]],
        attempts=[attempt],
    )


def delivery_to_proto(d: DeliveryRecord) -> run_pb2.WebhookDelivery:
    message = run_pb2.WebhookDelivery(
        id=d.id,
        run_id=d.run_id,
        url=d.url,
        state=DELIVERY_STATE[d.state],
        attempts=[
            run_pb2.WebhookAttempt(
                attempt_time=timestamp(a["at"]),
                status_code=a["status_code"],
                error=a.get("error", ""),
                duration_ms=a.get("duration_ms", 0),
            )
            for a in d.attempts or ()
        ],
        create_time=timestamp(d.created_at),
    )
    if d.state == "PENDING":
        message.next_attempt_time.CopyFrom(timestamp(d.next_attempt_at))
    if d.delivered_at is not None:
        message.deliver_time.CopyFrom(timestamp(d.delivered_at))
    return message


def _fill_result(message: run_pb2.Run, result: dict[str, Any]) -> None:
    message.output = result.get("output", "")
    if result.get("output_json") is not None:
        message.output_json.CopyFrom(json_value(result["output_json"]))
    tool_calls = result.get("tool_calls")
    if tool_calls:
        message.tool_calls.extend(map(_tool_call, tool_calls))
    reasoning = result.get("reasoning_steps")
    if reasoning:
        message.reasoning_steps.extend(reasoning)
    followups = result.get("followups")
    if followups:
        message.followups.extend(followups)
    usage = result.get("usage")
    if usage:
        message.usage.CopyFrom(run_pb2.Usage(**usage))


def event_to_proto(event: EventRecord) -> run_pb2.RunEvent:
    message = run_pb2.RunEvent(
        run_id=event.run_id,
        seq=event.seq,
        type=EVENT_TYPE[event.type],
        create_time=timestamp(event.created_at),
    )
    data = event.data
    match event.type:
        case "CONTENT_DELTA" | "REASONING_DELTA":
            message.text = data["text"]
        case "TOOL_START" | "TOOL_END":
            message.tool_call.CopyFrom(_tool_call(data))
        case "START":
            message.start.CopyFrom(run_pb2.StartEvent(session_id=data["session_id"], attempt=data["attempt"]))
        case "PAUSED":
            message.pending_action.CopyFrom(_pending(data))
        case "STOP":
            message.stop.CopyFrom(
                run_pb2.StopEvent(state=STATE[data["state"]], followups=data.get("followups", ()))
            )
        case "ERROR":
            message.error.CopyFrom(run_pb2.RunError(reason=data["reason"], message=data["message"]))
        case "STATUS":
            message.status.CopyFrom(run_pb2.StatusEvent(state=STATE[data["state"]], reason=data["reason"]))
    return message


def agent_to_proto(info: AgentInfo) -> run_pb2.Agent:
    return run_pb2.Agent(
        id=info.id,
        name=info.name,
        description=info.description,
        is_team=info.is_team,
        member_ids=info.member_ids,
        model=info.model,
        tools=info.tools,
        approval_tools=info.approval_tools,
    )
