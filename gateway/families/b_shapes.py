"""Family B (PraisonAI async jobs) without HTTP: the submit body mapped onto a RunRequest (with
pydantic-style field errors), a run rendered as the documented job bodies, and a run's events
followed as the job stream's named events. Frames and responses are built in gateway.families.b."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb
from google.protobuf import duration_pb2, struct_pb2

from common.shapes import JOB_STATUS, TERMINAL, iso, job_result, output_value

R = run_pb2
Json = dict[str, Any]
Named = tuple[str, Json]  # (SSE event name, payload)

STATUSES: Final = ("queued", "running", "succeeded", "failed", "cancelled")
STATUS_ALIASES: Final = {"pending": "queued"}  # jobs-api.mdx spells queued "pending"
STATES: Final[Mapping[str, tuple[R.RunState, ...]]] = {
    "queued": (R.RUN_STATE_QUEUED,),
    "running": (R.RUN_STATE_RUNNING, R.RUN_STATE_PAUSED),  # B has no paused state
    "succeeded": (R.RUN_STATE_COMPLETED,),
    "failed": (R.RUN_STATE_FAILED,),
    "cancelled": (R.RUN_STATE_CANCELLED,),
}
RETRY_AFTER: Final = {"queued": 2, "running": 5}
DEFAULT_TIMEOUT_S: Final = 3600
CANCEL_MESSAGE: Final = "Job was cancelled"
UNSUPPORTED_FRAMEWORKS: Final = ("crewai", "autogen")
_MAX_TIMEOUT_S: Final = 10**10  # well inside google.protobuf.Duration's range


# ---- submit ---------------------------------------------------------------------------------


class InvalidBody(Exception):
    """422: pydantic-style error items ({type, loc, msg, input, ctx?})."""

    def __init__(self, items: list[Json]) -> None:
        super().__init__(f"{len(items)} invalid field(s)")
        self.items = items


class Unsupported(Exception):
    """400: a valid request this gateway does not serve (inline agents, other frameworks)."""


def item(kind: str, loc: Iterable[str | int], msg: str, value: Any, ctx: Json | None = None) -> Json:
    result: Json = {"type": kind, "loc": list(loc), "msg": msg, "input": value}
    if ctx is not None:
        result["ctx"] = ctx
    return result


def value_error(loc: Iterable[str | int], problem: str, value: Any) -> Json:
    return item("value_error", loc, f"Value error, {problem}", value, {"error": problem})


_STRINGS = (
    *("prompt", "agent_file", "agent_yaml", "recipe_name", "framework", "webhook_url"),
    *("session_id", "idempotency_key", "idempotency_scope"),
)
_OBJECTS = ("recipe_config", "config")


def submit_request(body: Any, header_key: str, default_agent: str) -> pb.RunRequest:
    """The RunRequest of a JobSubmitRequest body: the same body always maps to the same request,
    so the server's idempotency (same key + same request) holds for replays."""
    if body is None:
        raise InvalidBody([item("missing", ["body"], "Field required", None)])
    if not isinstance(body, dict):
        msg = "Input should be a valid dictionary or object to extract fields from"
        raise InvalidBody([item("model_attributes_type", ["body"], msg, body)])
    errors = _field_errors(body)
    config = body.get("config")
    options, option_errors = _options(config if isinstance(config, dict) else {})
    timeout = _integer(body.get("timeout"), ["body", "timeout"], errors)
    if errors or option_errors:
        raise InvalidBody(errors + option_errors)
    for field in ("agent_file", "agent_yaml"):
        if body.get(field):
            raise Unsupported(f"{field} is not supported; use recipe_name to name an agent")
    framework = (body.get("framework") or "praisonai").lower()
    if framework != "praisonai":
        raise Unsupported(f"Framework '{framework}' is not supported; only 'praisonai' is")
    webhook = body.get("webhook_url") or ""
    return pb.RunRequest(
        agent_id=body.get("recipe_name") or default_agent,
        input=R.RunInput(message=body["prompt"], options=options),
        session_id=body.get("session_id") or "",
        wait=False,
        timeout=duration_pb2.Duration(seconds=timeout or DEFAULT_TIMEOUT_S),
        idempotency_key=header_key or body.get("idempotency_key") or "",
        webhook_url=webhook,
        webhook_format=R.WEBHOOK_FORMAT_JOB if webhook else R.WEBHOOK_FORMAT_UNSPECIFIED,
        metadata=_extras(body, framework),
    )


def _field_errors(body: Json) -> list[Json]:
    errors: list[Json] = []
    if "prompt" not in body:
        errors.append(item("missing", ["body", "prompt"], "Field required", body))
    for field in _STRINGS:
        value = body.get(field)
        optional = value is None and field != "prompt"  # every field but prompt is Optional[str]
        if field in body and not optional and not isinstance(value, str):
            errors.append(item("string_type", ["body", field], "Input should be a valid string", value))
    for field in _OBJECTS:
        value = body.get(field)
        if value is not None and not isinstance(value, dict):
            errors.append(item("dict_type", ["body", field], "Input should be a valid dictionary", value))
    return errors


def _integer(value: Any, loc: list[str | int], errors: list[Json]) -> int:
    """pydantic's lax int: integers, integral floats and numeric strings."""
    if value is None:
        return 0
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and math.isfinite(value):
        if not value.is_integer():
            msg = "Input should be a valid integer, got a number with a fractional part"
            errors.append(item("int_from_float", loc, msg, value))
            return 0
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            msg = "Input should be a valid integer, unable to parse string as an integer"
            errors.append(item("int_parsing", loc, msg, value))
            return 0
    if number is None:
        errors.append(item("int_type", loc, "Input should be a valid integer", value))
        return 0
    if number > _MAX_TIMEOUT_S:
        msg = f"Input should be less than or equal to {_MAX_TIMEOUT_S}"
        errors.append(item("less_than_equal", loc, msg, value, {"le": _MAX_TIMEOUT_S}))
        return 0
    return number


def _options(config: Json) -> tuple[R.RunOptions, list[Json]]:
    """Model overrides in `config` (the keys family A's `options` has); other keys are kept in the
    run's metadata only."""
    options = R.RunOptions()
    errors: list[Json] = []
    for key in ("model", "llm", "provider"):
        value = config.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            errors.append(
                item("string_type", ["body", "config", key], "Input should be a valid string", value)
            )
        elif key == "provider":
            options.provider = value
        elif not options.model:
            options.model = value
    temperature = config.get("temperature")
    if temperature is not None:
        if isinstance(temperature, int | float) and not isinstance(temperature, bool):
            options.temperature = float(temperature)
        else:
            loc = ["body", "config", "temperature"]
            errors.append(item("float_type", loc, "Input should be a valid number", temperature))
    if config.get("max_tokens") is not None:
        max_tokens = _integer(config["max_tokens"], ["body", "config", "max_tokens"], errors)
        if max_tokens:
            options.max_tokens = max(min(max_tokens, 2**31 - 1), -(2**31))
    return options, errors


def _extras(body: Json, framework: str) -> struct_pb2.Struct:
    # Fields with no RunRequest counterpart ride in the metadata, so they are part of the request
    # the server compares for idempotency: same key with another config is a conflict, not a replay.
    # Nested values go as JSON text: the server stores the metadata's top level only (a nested
    # Struct does not survive its JSON column), and sorted keys keep the text deterministic.
    extras = struct_pb2.Struct()
    extras.update({"family": "B", "framework": framework})
    for field in ("config", "recipe_config", "idempotency_scope"):
        if body.get(field):
            value = body[field]
            extras.update({field: value if isinstance(value, str) else json.dumps(value, sort_keys=True)})
    return extras


# ---- renderings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    percentage: float
    current_step: str | None
    steps_completed: int = 0


QUEUED = Progress(0.0, "Queued")
INITIALIZING = Progress(10.0, "Initializing agent")
WORKING = Progress(30.0, "Running agent workflow")
PAUSED_STEP = "Waiting for approval"


def progress(run: R.Run) -> Progress:
    """Derived from the run: queued 0, started 10, producing output 30, succeeded 100; a paused
    run waits for approval; failed and cancelled runs keep where they got to."""
    tools = sum(1 for call in run.tool_calls if call.result or call.is_error)
    if run.state == R.RUN_STATE_COMPLETED:
        return Progress(100.0, "Completed", tools)
    if run.state == R.RUN_STATE_QUEUED:
        return Progress(QUEUED.percentage, QUEUED.current_step, tools)
    # Events besides START (and the terminal one) mean the agent produced something.
    produced = run.last_seq - 1 - (1 if run.state in TERMINAL else 0) > 0
    reached = WORKING if produced else INITIALIZING if run.HasField("start_time") else QUEUED
    step = PAUSED_STEP if run.state == R.RUN_STATE_PAUSED else reached.current_step
    return Progress(reached.percentage, step, tools)


def job_error(run: R.Run) -> str | None:
    if run.state in (R.RUN_STATE_FAILED, R.RUN_STATE_CANCELLED):
        return run.error.message or None
    return None


def job_status(run: R.Run) -> Json:
    """JobStatusResponse: nested progress (router) and flat progress_* (jobs-api.mdx) both."""
    status = JOB_STATUS[run.state]
    now = progress(run)
    return {
        "job_id": run.id,
        "status": status,
        "progress": {
            "percentage": now.percentage,
            "current_step": now.current_step,
            "steps_completed": now.steps_completed,
            "steps_total": None,
        },
        "progress_percentage": now.percentage,
        "progress_step": now.current_step,
        "created_at": iso(run.create_time),
        "started_at": iso(run.start_time),
        "completed_at": iso(run.complete_time),
        "agent_id": run.agent_id or None,
        "run_id": run.id,
        "session_id": run.session_id or None,
        "error": job_error(run),
        "retry_after": RETRY_AFTER.get(status),
    }


def job_submitted(run: R.Run, poll_url: str) -> Json:
    return {
        "job_id": run.id,
        "status": JOB_STATUS[run.state],
        "created_at": iso(run.create_time),
        "poll_url": poll_url,
        "stream_url": f"{poll_url}/stream",
    }


def metrics(run: R.Run) -> Json:
    usage = run.usage
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "model_calls": usage.model_calls,
        "tool_calls": len(run.tool_calls),
        "tool_ms": usage.tool_ms,
        "duration_ms": usage.duration_ms,
    }


def job_result_response(run: R.Run) -> Json:
    """JobResultResponse of a finished run (the webhook body's fields plus timing and metrics)."""
    base = job_result(run)
    return {
        "job_id": run.id,
        "status": base["status"],
        "result": base["result"],
        "result_url": None,
        "metrics": metrics(run),
        "created_at": iso(run.create_time),
        "started_at": iso(run.start_time),
        "completed_at": base["completed_at"],
        "duration_seconds": base["duration_seconds"],
        "error": job_error(run),
    }


def job_list(runs: Iterable[R.Run], total: int, page: int, page_size: int) -> Json:
    return {"jobs": [job_status(r) for r in runs], "total": total, "page": page, "page_size": page_size}


def envelope(name: str, payload: Json) -> Json:
    """Stream data for both documented client styles: the router's flat fields and the docs'
    {"event", "data"} wrapper (whose progress spells the step `current_step`)."""
    if name == "progress":
        flat = {"percentage": payload["percentage"], "step": payload["current_step"]}
        return {"event": name, "data": payload, **flat}
    return {"event": name, "data": payload, **payload}


# ---- the stream -----------------------------------------------------------------------------


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


class JobStream:
    """Follows one run's events as the job stream's named events: `status` on each change,
    `progress` on each change of percentage or step, the terminal `result`/`error`/`cancelled`,
    and `heartbeat` when nothing was sent for `heartbeat_s` (also while events arrive that show
    the client nothing). Frames for events up to a resume point are computed and dropped."""

    def __init__(self, run: R.Run, heartbeat_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.job_id = run.id
        self._started = run.HasField("start_time")
        self._finished = run if run.state in TERMINAL else None
        self._heartbeat_s = heartbeat_s
        self._clock = clock
        self._last_sent = clock()
        self._status: str | None = None
        self._progress: Progress | None = None
        self._produced = False
        self._text: list[str] = []
        self.final_status: str | None = None

    def seed(self, events: Iterable[R.RunEvent]) -> None:
        for event in events:
            self._observe(event)

    def frames(self, event: R.RunEvent) -> list[Named]:
        out = self._observe(event)
        if out:
            self._last_sent = self._clock()
        elif self._clock() - self._last_sent >= self._heartbeat_s:
            out = [self.heartbeat()]
        return out

    def heartbeat(self) -> Named:
        self._last_sent = self._clock()
        return ("heartbeat", {"timestamp": _now_iso()})

    def end(self) -> list[Named]:
        """`complete` once the job is finished (also when a resumed stream had nothing left)."""
        if self.final_status is None:
            return []
        return [("complete", {"status": self.final_status, "job_id": self.job_id})]

    def _observe(self, event: R.RunEvent) -> list[Named]:
        kind = event.type
        if kind == R.EVENT_TYPE_START:
            return self._move("running", INITIALIZING) if self._started else self._move("queued", QUEUED)
        if kind == R.EVENT_TYPE_STATUS:
            status = JOB_STATUS[event.status.state]
            return self._move(status, self._running() if status == "running" else self._progress)
        if kind == R.EVENT_TYPE_PAUSED:
            now = self._progress or self._running()
            return self._move("running", Progress(now.percentage, PAUSED_STEP))
        if kind == R.EVENT_TYPE_STOP:
            return [
                *self._finish("succeeded", Progress(100.0, "Completed")),
                ("result", {"result": self._result()}),
            ]
        if kind == R.EVENT_TYPE_ERROR:
            if event.error.reason == "CANCELLED":
                return [
                    *self._finish("cancelled", self._progress),
                    ("cancelled", {"message": CANCEL_MESSAGE}),
                ]
            return [*self._finish("failed", self._progress), ("error", {"error": event.error.message})]
        if kind == R.EVENT_TYPE_CONTENT_DELTA:
            self._text.append(event.text)
        self._produced = True  # reasoning, content, tool calls
        return self._move("running", WORKING)

    def _running(self) -> Progress:
        return WORKING if self._produced else INITIALIZING

    def _finish(self, status: str, now: Progress | None) -> list[Named]:
        self.final_status = status
        return self._move(status, now)

    def _move(self, status: str, now: Progress | None) -> list[Named]:
        out: list[Named] = []
        if status != self._status:
            self._status = status
            out.append(("status", {"status": status, "job_id": self.job_id}))
        if now is not None and now != self._progress:
            self._progress = now
            out.append(("progress", {"percentage": now.percentage, "current_step": now.current_step}))
        return out

    def _result(self) -> Any:
        # A run that had finished before the client attached has its answer at hand; otherwise
        # the answer is the concatenated content deltas (the server's output is built the same way).
        if self._finished is not None and self._finished.state == R.RUN_STATE_COMPLETED:
            return output_value(self._finished)
        return "".join(self._text)
