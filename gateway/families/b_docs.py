"""OpenAPI documentation of family B's routes: its JSON bodies as schemas and one operation each."""

from __future__ import annotations

from typing import Any

from gateway import openapi
from gateway.families import b_requests

Json = dict[str, Any]

_STR: Json = {"type": "string"}
_OPT_STR: Json = {"type": ["string", "null"]}
_TIME: Json = {"type": ["string", "null"], "format": "date-time"}
_INT: Json = {"type": "integer"}


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
            prompt=_STR,
            agent_file=_OPT_STR,
            agent_yaml=_OPT_STR,
            recipe_name=_OPT_STR,
            recipe_config={"type": ["object", "null"]},
            framework=_OPT_STR,
            config={"type": ["object", "null"]},
            webhook_url=_OPT_STR,
            timeout={"type": ["integer", "null"], "default": b_requests.DEFAULT_TIMEOUT_S},
            session_id=_OPT_STR,
            idempotency_key=_OPT_STR,
            idempotency_scope=_OPT_STR,
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
    path_id = [openapi.parameter("job_id", "path", _STR)]
    query = [
        openapi.parameter("status", "query", {"enum": [*b_requests.STATUSES, "pending"]}),
        openapi.parameter("session_id", "query", _STR),
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
        ("POST", prefix): op("submit_job", "Submit a job", submitted, body=body, status=202),
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
            "stream_job", "Job progress as SSE", _STR, parameters=path_id, content_type="text/event-stream"
        ),
        ("GET", "/health"): op("health", "Liveness with job counts", health_doc),
        ("GET", "/stats"): op("stats", "Jobs per status", stats_doc),
    }
    ops[("DELETE", prefix + "/{job_id}")]["responses"]["204"] = {"description": "Deleted"}
    ops[("POST", prefix)]["responses"]["202"]["headers"] = {
        "Location": {"schema": _STR, "description": "poll_url"},
        "Retry-After": {"schema": _INT, "description": "seconds before the first poll"},
    }
    return ops
