"""RunService: the one handler layer every transport reaches. Translates requests into engine
calls and records into messages; every failure leaves as google.rpc.Status.

Auth is not done here: AuthInterceptor (server/auth/interceptor.py), installed on the gRPC server,
authenticates every call and checks the caller's role before any handler runs. The `unary` and
`streaming` decorators hand each handler the identity the interceptor admitted (`current_identity()`,
which fails the call if it is missing), charge submissions to the submission rate, check the shape of
every field of the request (`validation.shape`) and turn every exception into a Status; handlers
check what the values mean and scope every read and write to the caller's org (None while auth is
off: the request's org, as before auth existed)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import grpc
from agentrun.v1 import run_service_pb2 as pb
from agentrun.v1 import run_service_pb2_grpc
from opentelemetry.trace import Span, SpanKind

from common.errors import AgentrunError, Internal, NotFound, Unavailable
from common.limits import MAX_SKIP
from common.tracing import TRACE_HEADERS, TRACER, current_traceparent, parent_from
from server import tracing, validation
from server.auth.identity import Identity
from server.auth.interceptor import current_identity
from server.auth.limits import LimitSettings, RateLimiter
from server.convert import agent_to_proto, delivery_to_proto, event_to_proto, fill_run, run_to_proto
from server.engine.engine import Engine, Submission
from server.store.records import RunFilter
from server.store.writer import disconnected
from server.webhooks.deliverer import Deliverer

log = logging.getLogger(__name__)
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Ctx = grpc.aio.ServicerContext[Any, Any]
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RunService"].full_name


async def _abort(context: Ctx, exc: Exception) -> None:
    if disconnected(exc):  # the database is restarting or unreachable: worth a retry
        log.warning("database unavailable: %s", type(exc).__name__)
        exc = Unavailable("the database is unavailable; retry shortly", reason="DATABASE_UNAVAILABLE")
    if not isinstance(exc, AgentrunError):
        log.error("unexpected %s", type(exc).__name__, exc_info=exc)
        exc = Internal("internal error")
    status = exc.to_status()
    await context.abort(status.code, status.details, status.trailing_metadata)


def _own(caller: Identity, sub: Submission) -> Submission:
    org_id, user_id = caller.owner_of(sub.org_id, sub.user_id)
    # The run's trace continues the call's (stored with the run: any replica may execute it).
    trace = "" if tracing.idle() else current_traceparent()
    if org_id == sub.org_id and user_id == sub.user_id and trace == sub.trace:
        return sub  # auth off and no trace: dataclasses.replace would copy it unchanged
    return dataclasses.replace(sub, org_id=org_id, user_id=user_id, trace=trace)


def _span(name: str, context: Ctx) -> AbstractContextManager[Span | None]:
    """The call's server span, continuing the trace its metadata names (a no-op without tracing;
    not even built when it would carry nothing either)."""
    pairs = context.invocation_metadata() or ()
    if tracing.off() and not any(k.lower() in TRACE_HEADERS for k, _ in pairs):
        return contextlib.nullcontext()
    metadata = {k: v for k, v in pairs if isinstance(v, str)}
    return TRACER.start_as_current_span(
        f"{SERVICE_NAME}/{name}", context=parent_from(metadata), kind=SpanKind.SERVER
    )


def _admitted(service: RunService, request: Any) -> Identity:
    """The caller, once the request is charged (if it submits a run) and its fields have the right
    shape."""
    caller = current_identity()
    service.charge(caller, request)
    validation.shape(request)
    return caller


def unary(
    fn: Callable[[Any, Req, Ctx, Identity], Awaitable[Resp]],
) -> Callable[[Any, Req, Ctx], Awaitable[Resp]]:
    @functools.wraps(fn)
    async def handler(self: Any, request: Req, context: Ctx) -> Resp:
        try:
            with _span(fn.__name__, context):
                return await fn(self, request, context, _admitted(self, request))
        except Exception as exc:
            await _abort(context, exc)
            raise  # unreachable: abort raises

    return handler


def streaming(
    fn: Callable[[Any, Req, Ctx, Identity], AsyncGenerator[Resp, None]],
) -> Callable[[Any, Req, Ctx], AsyncGenerator[Resp, None]]:
    @functools.wraps(fn)
    async def handler(self: Any, request: Req, context: Ctx) -> AsyncGenerator[Resp, None]:
        try:
            caller = _admitted(self, request)
            with _span(fn.__name__, context):
                async with contextlib.aclosing(fn(self, request, context, caller)) as responses:
                    async for response in responses:
                        yield response
        except Exception as exc:
            await _abort(context, exc)

    return handler


class RunService(run_service_pb2_grpc.RunServiceServicer):
    def __init__(
        self,
        engine: Engine,
        webhooks: Deliverer,
        limits: LimitSettings | None = None,
    ) -> None:
        self.engine = engine
        self.webhooks = webhooks
        self.rate = RateLimiter(limits or LimitSettings())

    def charge(self, caller: Identity, request: Any) -> None:
        """Take a submission (Run, StreamRun starting a run) from its org's rate. Charged before
        validation: a flood of bad requests costs its sender, not the server."""
        if isinstance(request, pb.StreamRunRequest) and not request.run_id:
            request = request.run
        if isinstance(request, pb.RunRequest):
            self.rate.admit(caller.org_id if caller.org_id is not None else request.org_id)

    @unary
    async def Run(self, request: pb.RunRequest, context: Ctx, caller: Identity) -> pb.RunResponse:
        submission = _own(caller, await validation.submission(request, webhooks=self.webhooks.policy))
        if request.wait:
            run = await self.engine.submit_and_wait(submission)
        else:
            run, _ = await self.engine.submit(submission)
        response = pb.RunResponse()
        fill_run(response.run, run)  # in place: RunResponse(run=...) would copy the message
        return response

    @streaming
    async def StreamRun(
        self, request: pb.StreamRunRequest, context: Ctx, caller: Identity
    ) -> AsyncGenerator[pb.StreamRunResponse, None]:
        if request.run_id:
            run = await self.engine.get(validation.run_ref(request.run_id), caller.org_id)
            events = self.engine.events(run, validation.after_seq(request.after_seq))
        else:
            submission = await validation.submission(request.run, "run.", self.webhooks.policy)
            events = self.engine.submit_and_follow(_own(caller, submission))
        async with contextlib.aclosing(events):
            async for event in events:
                yield pb.StreamRunResponse(event=event_to_proto(event))

    @unary
    async def GetRun(self, request: pb.GetRunRequest, context: Ctx, caller: Identity) -> pb.GetRunResponse:
        run = await self.engine.get(validation.run_ref(request.run_id), caller.org_id)
        return pb.GetRunResponse(run=run_to_proto(run))

    @unary
    async def BatchGetRuns(
        self, request: pb.BatchGetRunsRequest, context: Ctx, caller: Identity
    ) -> pb.BatchGetRunsResponse:
        ids = validation.batch_ids(request.run_ids)
        found = await self.engine.store.get_runs(ids, caller.org_id)
        response = pb.BatchGetRunsResponse()
        seen: set[str] = set()
        for ref in ids:
            run = found.get(ref)
            if run is None:
                response.missing_run_ids.append(ref)
            elif run.id not in seen:
                seen.add(run.id)
                response.runs.append(run_to_proto(run))
        return response

    @unary
    async def ListRuns(
        self, request: pb.ListRunsRequest, context: Ctx, caller: Identity
    ) -> pb.ListRunsResponse:
        size = validation.page_size(request.page_size, 50)
        before = validation.decode_token(request.page_token, "n")
        flt = RunFilter(
            org_id=caller.org_id,
            agent_id=request.agent_id,
            session_id=request.session_id,
            user_id=request.user_id,
            states=validation.states(request.states),
            created_after=request.create_time_after.ToNanoseconds() / 1e9
            if request.HasField("create_time_after")
            else None,
            created_before=request.create_time_before.ToNanoseconds() / 1e9
            if request.HasField("create_time_before")
            else None,
            metadata=validation.metadata_filter(request.metadata),
            latest_per_session=request.latest_per_session,
        )
        skip = validation.bounded(request.skip, 0, MAX_SKIP, "skip")
        runs, total = await self.engine.store.list_runs(flt, before_number=before, limit=size, offset=skip)
        token = validation.encode_token("n", runs[-1].number) if len(runs) == size else ""
        return pb.ListRunsResponse(
            runs=[run_to_proto(r) for r in runs], next_page_token=token, total_size=total
        )

    @unary
    async def Continue(
        self, request: pb.ContinueRequest, context: Ctx, caller: Identity
    ) -> pb.ContinueResponse:
        ref = validation.run_ref(request.run_id)
        approve = validation.decision(request.decision)
        run = await self.engine.decide(
            ref, request.tool_call_id, approve, request.reason, caller.user_id, caller.org_id
        )
        if request.wait:
            run = await self.engine.wait(run)
        return pb.ContinueResponse(run=run_to_proto(run))

    @unary
    async def CancelRun(
        self, request: pb.CancelRunRequest, context: Ctx, caller: Identity
    ) -> pb.CancelRunResponse:
        run = await self.engine.cancel(validation.run_ref(request.run_id), request.reason, caller.org_id)
        return pb.CancelRunResponse(run=run_to_proto(run))

    @unary
    async def UpdateRun(
        self, request: pb.UpdateRunRequest, context: Ctx, caller: Identity
    ) -> pb.UpdateRunResponse:
        ref, metadata = validation.run_update(request)
        if metadata is None:  # an empty mask changes nothing
            run = await self.engine.get(ref, caller.org_id)
        else:
            run = await self.engine.update_metadata(ref, metadata, caller.org_id)
        return pb.UpdateRunResponse(run=run_to_proto(run))

    @unary
    async def DeleteRun(
        self, request: pb.DeleteRunRequest, context: Ctx, caller: Identity
    ) -> pb.DeleteRunResponse:
        await self.engine.delete(validation.run_ref(request.run_id), caller.org_id)
        return pb.DeleteRunResponse()

    @unary
    async def ListRunEvents(
        self, request: pb.ListRunEventsRequest, context: Ctx, caller: Identity
    ) -> pb.ListRunEventsResponse:
        run = await self.engine.get(validation.run_ref(request.run_id), caller.org_id)
        size = validation.page_size(request.page_size, 100)
        after = max(
            validation.after_seq(request.after_seq), validation.decode_token(request.page_token, "s") or 0
        )
        events = await self.engine.store.list_events(run.id, after, size)
        token = validation.encode_token("s", events[-1].seq) if len(events) == size else ""
        return pb.ListRunEventsResponse(events=[event_to_proto(e) for e in events], next_page_token=token)

    @unary
    async def ListAgents(
        self, request: pb.ListAgentsRequest, context: Ctx, caller: Identity
    ) -> pb.ListAgentsResponse:
        agents = list(self.engine.agents)
        start = validation.decode_token(request.page_token, "a") or 0
        size = validation.page_size(request.page_size, len(agents) or 1)
        page = agents[start : start + size]
        token = validation.encode_token("a", start + size) if start + size < len(agents) else ""
        return pb.ListAgentsResponse(agents=[agent_to_proto(a.info) for a in page], next_page_token=token)

    @unary
    async def GetAgent(
        self, request: pb.GetAgentRequest, context: Ctx, caller: Identity
    ) -> pb.GetAgentResponse:
        agent = self.engine.agent(request.agent_id)
        return pb.GetAgentResponse(agent=agent_to_proto(agent.info))

    @unary
    async def ListWebhookDeliveries(
        self, request: pb.ListWebhookDeliveriesRequest, context: Ctx, caller: Identity
    ) -> pb.ListWebhookDeliveriesResponse:
        run = await self.engine.get(validation.run_ref(request.run_id), caller.org_id)
        deliveries = await self.engine.store.deliveries.for_run(run.id)
        return pb.ListWebhookDeliveriesResponse(deliveries=[delivery_to_proto(d) for d in deliveries])

    @unary
    async def RetryWebhookDelivery(
        self, request: pb.RetryWebhookDeliveryRequest, context: Ctx, caller: Identity
    ) -> pb.RetryWebhookDeliveryResponse:
        run = await self.engine.get(validation.run_ref(request.run_id), caller.org_id)
        validation.require(bool(request.delivery_id), "delivery_id", "required")
        delivery = await self.engine.store.deliveries.retry(
            run.id, request.delivery_id, self.webhooks.settings.max_age_s
        )
        if delivery is None:
            raise NotFound(
                f"webhook delivery {request.delivery_id!r} of run {run.id} not found",
                reason="DELIVERY_NOT_FOUND",
                metadata={"run_id": run.id, "delivery_id": request.delivery_id},
            )
        self.webhooks.wake()
        return pb.RetryWebhookDeliveryResponse(delivery=delivery_to_proto(delivery))
