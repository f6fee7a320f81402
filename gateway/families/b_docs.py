"""OpenAPI documentation of family B's routes: its JSON bodies as schemas and one operation each."""

from __future__ import annotations

from typing import Any

from gateway import openapi, rules
from gateway.families import b_requests, b_stream

Json = dict[str, Any]

_STR: Json = {"type": "string"}
_OPT_STR: Json = {"type": ["string", "null"]}
_TIME: Json = {"type": ["string", "null"], "format": "date-time"}
_INT: Json = {"type": "integer"}


def _opt(schema: Json, **keywords: Any) -> Json:
    """An optional body field: `schema` with `keywords`, or null."""
    return {"anyOf": [{**schema, **keywords}, {"type": "null"}]}


def _object(required: tuple[str, ...], **properties: Json) -> Json:
    return {"type": "object", "required": list(required), "properties": properties}


def operations(schemas: openapi.Schemas, prefix: str) -> dict[tuple[str, str], openapi.Operation]:
    error = schemas.add("b.Error", _object(("detail",), detail={"oneOf": [_STR, {"type": "array"}]}))
    progress = _object(
        (),
        percentage={"type": "number"},
        current_step=_OPT_STR,
        steps_completed=_INT,
        steps_total={"type": ["integer", "null"]},
    )
    times = {"created_at": _TIME, "started_at": _TIME, "completed_at": _TIME}
    state = {"enum": list(b_requests.STATUSES)}
    job = schemas.add(
        "b.JobStatusResponse",
        _object(
            ("job_id", "status", "progress"),
            job_id=_STR,
            status=state,
            progress=progress,
            progress_percentage={"type": "number"},
            progress_step=_OPT_STR,
            **times,
            agent_id=_OPT_STR,
            run_id=_OPT_STR,
            session_id=_OPT_STR,
            error=_OPT_STR,
            retry_after={"type": ["integer", "null"]},
        ),
    )
    body = schemas.add(
        "b.JobSubmitRequest",
        _object(
            ("prompt",),
            prompt={
                **rules.text(rules.MAX_MESSAGE_CHARS, rules.NOT_BLANK, min_chars=1),
                "description": "the task; not blank",
            },
            agent_file={
                **_opt(rules.text(rules.MAX_URL_CHARS)),
                "description": "an agents YAML under the server's agent root (--gateway-family-b-agent-root; "
                "outside it, or with none configured: 400); its first agent runs",
            },
            agent_yaml={
                **_opt({"type": "string", "pattern": rules.NO_NUL}),
                "description": "inline agents YAML, only where --gateway-family-b-inline-agents allows it "
                "(else 400); its first agent runs",
            },
            recipe_name={
                **_opt(rules.text(rules.MAX_AGENT_ID_CHARS)),
                "description": "an agent id (unknown: 400); empty or null: the configured default agent",
            },
            recipe_config={"type": ["object", "null"]},
            framework={
                "anyOf": [
                    {"type": "null"},
                    {"type": "string", "maxLength": 0},
                    {"type": "string", "pattern": "^[Pp][Rr][Aa][Ii][Ss][Oo][Nn][Aa][Ii]$"},
                ],
                "description": "praisonai (any case); crewai and autogen are not supported",
            },
            config={
                "type": ["object", "null"],
                "properties": {
                    "model": _opt(rules.model_name()),
                    "llm": _opt(rules.model_name()),
                    "provider": _opt(rules.text(rules.MAX_CHARS["provider"])),
                    "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
                    "max_tokens": {"type": ["integer", "null"], "minimum": 0},
                },
                "description": "model overrides (model or llm, provider, temperature, max_tokens); "
                "other keys are kept with the job",
            },
            webhook_url={
                "anyOf": [
                    {"type": "null"},
                    {"type": "string", "maxLength": 0},
                    {**rules.text(rules.MAX_URL_CHARS, rules.HTTP_URL), "format": "uri"},
                ],
                "description": "a public http(s) URL, sent the job result when the job ends",
            },
            timeout={
                "type": ["integer", "null"],
                "minimum": 0,
                "maximum": rules.MAX_TIMEOUT_S,
                "default": b_requests.DEFAULT_TIMEOUT_S,
                "description": "seconds, at most 7 days; 0 or null: the default",
            },
            session_id=_opt(rules.text(rules.MAX_ID_CHARS)),
            idempotency_key=_opt(rules.text(rules.MAX_IDEMPOTENCY_KEY_CHARS)),
            idempotency_scope=_opt({"type": "string", "pattern": rules.NO_NUL}),
        ),
    )
    submitted = schemas.add(
        "b.JobSubmitResponse",
        _object(
            ("job_id", "status", "poll_url", "stream_url"),
            job_id=_STR,
            status=state,
            created_at=_TIME,
            poll_url=_STR,
            stream_url=_STR,
        ),
    )
    done = schemas.add(
        "b.JobResultResponse",
        _object(
            ("job_id", "status"),
            job_id=_STR,
            status=state,
            result={},
            result_url=_OPT_STR,
            metrics={"type": ["object", "null"]},
            **times,
            duration_seconds={"type": ["number", "null"]},
            error=_OPT_STR,
        ),
    )
    listed = schemas.add(
        "b.JobListResponse",
        _object(
            ("jobs", "total", "page", "page_size"),
            jobs={"type": "array", "items": job},
            total=_INT,
            page=_INT,
            page_size=_INT,
        ),
    )
    counts = {"type": "object", "additionalProperties": _INT}
    health_doc = _object(
        ("status",), status={"const": "healthy"}, store=_STR, executor_stats={"type": "object"}
    )
    stats_doc = _object(
        ("total_jobs", "by_status"),
        total_jobs=_INT,
        by_status=counts,
        executor={"type": "object"},
        store={"type": "object"},
    )
    path_id = [
        openapi.parameter(
            "job_id", "path", rules.text(rules.MAX_RUN_REF_CHARS, r"^[^/{}\x00]+$", min_chars=1)
        )
    ]
    seq = {"type": "integer", "minimum": 0, "maximum": rules.MAX_SEQ}
    resume = "Re-attach: only what follows the event with this id (the header wins)."
    stream_params = [
        *path_id,
        openapi.parameter("Last-Event-ID", "header", seq, description=resume),
        openapi.parameter("lastEventId", "query", seq, description=resume),
    ]
    idempotency = openapi.parameter(
        "Idempotency-Key",
        "header",
        rules.text(rules.MAX_IDEMPOTENCY_KEY_CHARS),
        description="same key, same body: the same job (wins over the body's idempotency_key)",
    )
    frames = openapi.sse_event(
        [*b_stream.EVENT_NAMES, "message"],
        description="named events, each with a JSON body in both documented shapes; "
        "the last frame is the unnamed `data: [DONE]`",
    )
    query = [
        openapi.parameter("status", "query", {"enum": [*b_requests.STATUSES, "pending"]}),
        openapi.parameter("session_id", "query", rules.text(rules.MAX_ID_CHARS)),
        openapi.parameter("page", "query", {"type": "integer", "minimum": 1, "default": 1}),
        openapi.parameter(
            "page_size", "query", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}
        ),
    ]

    def op(name: str, summary: str, response: Json, **more: Any) -> openapi.Operation:
        return openapi.operation(
            f"b_{name}", summary, response=response, tags=["family B: jobs"], errors=error, **more
        )

    ops = {
        ("POST", prefix): op(
            "submit_job", "Submit a job", submitted, body=body, status=202, parameters=[idempotency]
        ),
        ("GET", prefix): op("list_jobs", "List jobs, newest first", listed, parameters=query),
        ("GET", prefix + "/{job_id}"): op("get_job", "Job status and progress", job, parameters=path_id),
        ("DELETE", prefix + "/{job_id}"): op(
            "delete_job", "Delete a finished job", {}, parameters=path_id, status=204
        ),
        ("GET", prefix + "/{job_id}/result"): op(
            "get_job_result", "Result of a finished job", done, parameters=path_id
        ),
        ("POST", prefix + "/{job_id}/cancel"): op(
            "cancel_job", "Cancel a queued or running job", job, parameters=path_id
        ),
        ("GET", prefix + "/{job_id}/stream"): op(
            "stream_job", "Job progress as SSE", frames, parameters=stream_params, content_type=openapi.SSE
        ),
        ("GET", "/health"): op("health", "Liveness with job counts", health_doc),
        ("GET", "/stats"): op("stats", "Jobs per status", stats_doc),
    }
    ops[("DELETE", prefix + "/{job_id}")]["responses"]["204"] = {"description": "Deleted"}
    ops[("POST", prefix)]["responses"]["202"]["headers"] = {
        "Location": {"schema": _STR, "description": "poll_url"},
        "Retry-After": {"schema": _INT, "description": "seconds before the first poll"},
    }
    conflict = _object(
        ("job_id", "status", "message"),
        job_id=_STR,
        status={"anyOf": [state, {"type": "null"}]},
        message={"const": "Job already exists with this idempotency key"},
    )
    ops[("POST", prefix)]["responses"]["409"] = {
        "description": "the idempotency key names a job submitted with another body",
        "content": openapi.json_content({"anyOf": [conflict, error]}),
    }
    return ops
